"""laddertune: Ladder Side-Tuning (Sung, Cho and Bansal, NeurIPS 2022) over any Hugging Face backbone."""

__version__ = "0.1.0"
