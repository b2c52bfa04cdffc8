"""The tap cache: the frozen backbone's ladder taps, written once and read in every later epoch and run.

With backbone dropout off, the taps the side network reads (the embedding output and the outputs of the kept
backbone layers) are a deterministic function of an example's tokens. :func:`open_tap_cache` looks for an entry whose
key (backbone fingerprint, tokenizer, data content, max length, format, dtype) matches and whose cached layers
include the run's, else builds one: every example's taps, unpadded, in memory-mapped safetensors shards with a
``SHA256SUMS`` list, swapped in as a whole. :meth:`TapCache.collate` wraps a batch function so that each batch
carries its taps and ``LadderModel.forward(taps=...)`` skips the backbone. It sits above ``core`` and ``data`` and
below ``training``.
"""

from .key import TAP_DTYPES, cache_key, example_key
from .store import TapCache, estimate_bytes, open_tap_cache

__all__ = ["TAP_DTYPES", "TapCache", "cache_key", "estimate_bytes", "example_key", "open_tap_cache"]
