"""laddertune: Ladder Side-Tuning (Sung, Cho and Bansal, NeurIPS 2022) over any Hugging Face backbone.

>>> from laddertune import LadderConfig, get_ladder_model, load_backbone, load_tokenizer
>>> backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
>>> model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))
>>> model.print_trainable_parameters()
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "FAMILIES": ".core",
    "LadderCache": ".core",
    "LadderConfig": ".core",
    "LadderModel": ".core",
    "LadderModelForCausalLM": ".core",
    "LadderModelForSeq2SeqLM": ".core",
    "MultiSideModel": ".core",
    "get_ladder_model": ".core",
    "load_backbone": ".core.backbones",
    "load_tokenizer": ".core.backbones",
    "CheckpointError": ".errors",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "LadderTuneError": ".errors",
    "OutputError": ".errors",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
