"""The tap cache: the frozen backbone's ladder taps, written once and read in every later epoch and run.

With backbone dropout off, the taps the side network reads (the embedding output and the outputs of the kept
backbone layers) are a deterministic function of an example's tokens. :func:`open_tap_cache` looks for an entry whose
key (backbone fingerprint, tokenizer, data content, max length, format, dtype) matches and whose cached layers
include the run's, else builds one: every example's taps, unpadded, in memory-mapped safetensors shards with a
``SHA256SUMS`` list, swapped in as a whole. :meth:`TapCache.collate` wraps a batch function so that each batch
carries its taps and ``LadderModel.forward(taps=...)`` skips the backbone. It sits above ``core`` and ``data`` and
below ``training``.

T5: both stacks' taps are cached (the decoder's input in training is the shifted target, so its taps are as fixed as
the encoder's), so no backbone stack runs in a cached training step. What of the backbone still runs is its LM head
(the tied embedding matrix that turns the side network's up-projected states into vocabulary logits), which is part
of the side network's output path, not of the backbone's forward. Classification runs cache their evaluation splits
too (:mod:`laddertune.training.tap_run`); generation (T5's and causal evaluation) runs the backbone as usual: its
decoder inputs are the model's own outputs, unknown before decoding.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "TAP_DTYPES": ".key",
    "cache_key": ".key",
    "example_key": ".key",
    "TapCache": ".store",
    "estimate_bytes": ".store",
    "open_tap_cache": ".store",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
