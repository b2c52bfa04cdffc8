"""The generation cache of a LadderModel: the backbone's key/value cache and the side network's, side by side.

transformers' ``generate()`` drives one model and one ``Cache``: it asks the cache for its length, reorders it for
beam search, crops it for assisted decoding and repeats or selects batch rows. A LadderModel runs two networks, each
with its own cache (``DynamicCache`` for a decoder-only stack, ``EncoderDecoderCache`` for an encoder-decoder's
decoder), so :class:`LadderCache` is a ``Cache`` that holds both and applies every such operation to both: a beam
that moves in one network's cache and not in the other's would let the side network read another beam's states
(the authors' beam search had that bug). It is built like transformers' own ``EncoderDecoderCache``, which holds a
self-attention and a cross-attention cache the same way.

Each network fills its half on its first forward (the backbone and the side trunk create their own cache of the
kind their architecture needs, with its sliding windows); until then a half is None and counts as empty. A model
with re-entry (:mod:`.reentry`) runs the backbone's top layers a second time on other inputs: their keys and values
go to a third cache, ``reentry``, made like the backbone's from its config.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache


class LadderCache(Cache):
    """Key/value caches for generation: the backbone's (``backbone``) and the side network's (``side``).

    Args:
        backbone: the backbone's ``Cache``, or None until its first forward.
        side: the side trunk's ``Cache``, or None until its first forward.
        reentry: the re-run top layers' ``Cache`` (re-entry only), or None until their first forward.
    """

    is_compileable = False  # dynamic caches: generate() does not compile the forward around them

    def __init__(
        self, backbone: Cache | None = None, side: Cache | None = None, reentry: Cache | None = None
    ) -> None:
        # Not Cache.__init__: a LadderCache has no layers of its own, only the caches it holds.
        self.backbone, self.side, self.reentry = backbone, side, reentry
        self.recording = False  # assisted decoding asked both halves to keep what a crop may need

    def _caches(self) -> list[Cache]:
        return [c for c in (self.backbone, self.side, self.reentry) if c is not None]

    def __repr__(self) -> str:
        return f"LadderCache(backbone={self.backbone!r}, side={self.side!r}, reentry={self.reentry!r})"

    def reentry_for(self, backbone) -> Cache:
        """The re-entry cache, made on first use as the backbone's own would be (its layer kinds, sliding windows)."""
        if self.reentry is None:
            self.reentry = DynamicCache(config=backbone.config)
            if self.recording:
                self.reentry.activate_past_recording()
        return self.reentry

    def __len__(self) -> int:
        """The number of backbone layers cached (0 before the first forward)."""
        return 0 if self.backbone is None else len(self.backbone)

    @property
    def layers(self) -> list:
        """Both caches' layers, the backbone's first (what ``generate()`` walks to switch off past recording)."""
        return [layer for cache in self._caches() for layer in _self_attention(cache).layers]

    def fill(self, backbone: Cache | None, side: Cache | None) -> None:
        """Take the caches the two networks returned from a forward (the same objects once they exist)."""
        self.backbone, self.side = backbone, side
        if self.recording:  # a half created during this forward starts recording too
            self.activate_past_recording()

    def update(self, *args, **kwargs):
        raise TypeError(
            "a LadderCache is not one network's cache: the backbone updates cache.backbone, the side cache.side"
        )

    # -- what generation reads ------------------------------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens cached so far (the backbone's count; the side network always caches the same tokens)."""
        return 0 if self.backbone is None else self.backbone.get_seq_length(layer_idx)

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1 if self.backbone is None else self.backbone.get_max_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        if self.backbone is None:
            return query_length, 0
        return self.backbone.get_mask_sizes(query_length, layer_idx)

    @property
    def is_croppable(self) -> bool:
        return all(c.is_croppable for c in self._caches())

    @property
    def is_sliding(self) -> list[bool]:
        return [] if self.backbone is None else self.backbone.is_sliding

    # -- what generation does to it: always to every cache held ---------------------------------------------------
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows for beam search; the caches move together, or the side reads the wrong beam."""
        for cache in self._caches():
            cache.reorder_cache(beam_idx)

    def reorder(self, index: torch.Tensor) -> None:
        """The older name of :meth:`reorder_cache`."""
        self.reorder_cache(index)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens from every cache (assisted decoding's rejected candidates)."""
        for cache in self._caches():
            cache.crop(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for cache in self._caches():
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for cache in self._caches():
            cache.batch_select_indices(indices)

    def reset(self) -> None:
        for cache in self._caches():
            cache.reset()

    def activate_past_recording(self, **kwargs) -> None:
        """Both caches keep their past (assisted decoding crops them back); ``kwargs`` as transformers passes them
        (5.24 on: ``recurrent_states_to_keep``)."""
        self.recording = True
        for cache in self._caches():
            cache.activate_past_recording(**kwargs)


def _self_attention(cache: Cache) -> Cache:
    """An ``EncoderDecoderCache``'s self-attention half (the one that grows and crops), else the cache itself."""
    return getattr(cache, "self_attention_cache", cache)
