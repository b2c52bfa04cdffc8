"""CLIP-T5 with LST (the paper's Table 3): a T5 backbone that reads the text only, image features in the side.

Built by composition over :class:`laddertune.core.LadderModel`, whose pieces run unchanged:

* the frozen T5 encoder runs on the text ids alone, under ``torch.no_grad()``, with the core's tap hooks;
* the side encoder input is ``embed_down(cat[text embeddings, visual embeddings])`` (docs/concepts.md#fact-clip-t5): the
  backbone's taps are zero-padded over the visual positions, so the ladders add the backbone to the TEXT
  positions only (at visual positions the ladder input is zero) and the core :class:`SideStack` runs as is;
* the side decoder cross-attends to the whole side encoder output (text + visual, mask of both); the backbone
  decoder to the backbone's text-only encoder output with the text mask.

The :class:`VisualEmbedding` is registered inside ``ladder.side`` (as ``side.visual``), so it trains, saves and
counts with the side network and no gradient can reach it through the backbone, which never sees it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core import LadderCache, LadderConfig, get_ladder_model
from ..core.cache_names import pop_cache
from ..core.generation import LadderEncoderOutput
from ..core.side_checkpoint import load_side_weights, read_side_config
from ..core.side_network import EMBED
from ..errors import CheckpointError, ConfigError
from ..io import load_json, save_json
from .visual_embedding import VisualConfig, VisualEmbedding

VISION_CONFIG_NAME = "vision_config.json"
# The paper's Table 3 setting (docs/concepts.md#fact-clip-t5): r = 4, every layer kept.
PAPER_LADDER = LadderConfig(reduction_factor=4)


class VisionLadderModel(nn.Module):
    """A frozen T5 (text only) and its ladder side network, which also reads image features.

    Args:
        backbone: a ``T5ForConditionalGeneration``; frozen, not copied.
        visual: shape of the image features.
        config: the ladder config (default: the paper's r = 4, all layers).
    """

    def __init__(self, backbone: nn.Module, visual: VisualConfig, config: LadderConfig | None = None) -> None:
        super().__init__()
        ladder = get_ladder_model(backbone, config or PAPER_LADDER)
        if ladder.head != "seq2seq_lm":
            raise ConfigError("CLIP-T5 needs an encoder-decoder backbone (T5ForConditionalGeneration)")
        ladder.side.add_module("visual", VisualEmbedding(visual, backbone.config.d_model))
        self.ladder = ladder
        self.visual_config = visual

    # -- bookkeeping, delegated ------------------------------------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        return self.ladder.backbone

    @property
    def side(self) -> nn.Module:
        return self.ladder.side

    @property
    def head(self) -> str:
        return self.ladder.head

    @property
    def ladder_config(self) -> LadderConfig:
        return self.ladder.ladder_config

    def train(self, mode: bool = True) -> VisionLadderModel:
        super().train(mode)
        self.ladder.train(mode)  # keeps the backbone in eval unless backbone_dropout
        return self

    def trainable_parameters(self) -> tuple[int, int]:
        return self.ladder.trainable_parameters()

    @property
    def device(self) -> torch.device:
        """Where the side network is (where batches go)."""
        return next(self.side.parameters()).device

    # -- encoder ---------------------------------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask, vis_feats, vis_boxes=None, vis_mask=None):
        """Run the backbone encoder on the text and the side encoder on text + image.

        Args:
            input_ids: (B, T) text ids; the ONLY input of the backbone.
            attention_mask: (B, T) text mask.
            vis_feats: (B, N, F) or (B, V, N, F) image features (V images per example).
            vis_boxes: (B, [V,] N, 4) normalised boxes; a square grid's when None.
            vis_mask: (B, V * N) 1 for real regions; all ones when None.

        Returns:
            (backbone states (B, T, d), side states (B, T + V * N, d/r), side mask (B, T + V * N)).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ladder = self.ladder
        kept = ladder.side.stacks["encoder"].kept
        backbone_out, taps = ladder.run_backbone("encoder", input_ids, attention_mask=attention_mask)
        visual = ladder.side.visual(vis_feats, vis_boxes)  # (B, M, d), M = V * N
        if vis_mask is None:
            vis_mask = torch.ones(visual.shape[:2], dtype=attention_mask.dtype, device=visual.device)
        # the taps are projected: the image embeddings too
        projection = ladder.side.stacks["encoder"].projection
        visual_tap = visual if projection is None else projection(visual, EMBED)  # (B, M, k)
        side_taps = {EMBED: torch.cat([taps[EMBED].to(visual.dtype), visual_tap], dim=1)}  # (B, T + M, k)
        for i in kept:  # zero ladder input at the visual positions
            pad = taps[i].new_zeros(taps[i].shape[0], visual.shape[1], taps[i].shape[2])
            side_taps[i] = torch.cat([taps[i], pad], dim=1)
        side_mask = torch.cat([attention_mask, vis_mask.to(attention_mask.dtype)], dim=1)
        side_out = ladder.run_side("encoder", side_taps, attention_mask=side_mask)
        return backbone_out.last_hidden_state, side_out.last_hidden_state, side_mask

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        vis_feats=None,
        vis_boxes=None,
        vis_mask=None,
        labels=None,
        *,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        cache: LadderCache | None = None,
        past_key_values: LadderCache | None = None,
        use_cache: bool = False,
    ):
        """Logits (and the loss with ``labels``, -100 ignored), as ``T5ForConditionalGeneration`` returns them.

        ``encoder_outputs`` is :meth:`encode`'s triple (generation passes it back in); ``past_key_values`` is
        ``cache`` under the name transformers used up to 5.23.
        """
        given = pop_cache({"cache": cache, "past_key_values": past_key_values})
        if encoder_outputs is None:
            if vis_feats is None:
                raise ValueError("a VisionLadderModel needs vis_feats (zeros for a text-only control)")
            encoder_outputs = self.encode(input_ids, attention_mask, vis_feats, vis_boxes, vis_mask)
        backbone_enc, side_enc, side_mask = encoder_outputs
        # The core's decoders, up-projection and frozen tied LM head, shared with text-only LST; the backbone
        # decoder cross-attends to the text alone, the side decoder to text + visual.
        return self.ladder.decode(
            (backbone_enc, side_enc),
            attention_mask,
            labels,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            cache=given if given is not None else LadderCache() if use_cache else None,
            side_encoder_attention_mask=side_mask,
        )

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(
        self, input_ids, attention_mask=None, vis_feats=None, vis_boxes=None, vis_mask=None, **kwargs
    ) -> torch.Tensor:
        """transformers' ``generate()`` (greedy, beam search as the paper evaluates with 5 beams, any other option).

        Both encoders run here, on the text and the images; the core LadderModel's ``generate()`` then decodes from
        their :class:`~laddertune.core.generation.LadderEncoderOutput`, which carries the side decoder's
        cross-attention mask (text + visual): transformers expands all three for beams and returned sequences.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                backbone, side, side_mask = self.encode(
                    input_ids, attention_mask, vis_feats, vis_boxes, vis_mask
                )
            encoded = LadderEncoderOutput(
                last_hidden_state=backbone, side_last_hidden_state=side, side_attention_mask=side_mask
            )
            return self.ladder.generate(
                input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoded, **kwargs
            )
        finally:
            self.train(was_training)

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        """The side network (visual embedding included), its ladder config and ``vision_config.json``."""
        self.ladder.save_pretrained(directory)
        save_json(Path(directory) / VISION_CONFIG_NAME, self.visual_config.to_dict())

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, directory) -> VisionLadderModel:
        """Rebuild a saved VL side network next to ``backbone`` (the same one it was trained on)."""
        directory = Path(directory)
        visual = read_visual_config(directory)
        config = read_side_config(directory)
        config.init = "random"  # the weights come from the file: no pruning pass
        model = cls(backbone, visual, config)
        load_side_weights(model.ladder, directory, config)
        return model


def read_visual_config(directory) -> VisualConfig:
    """The :class:`VisualConfig` a checkpoint folder's ``vision_config.json`` holds (a CheckpointError when it is
    missing or malformed)."""
    path = Path(directory) / VISION_CONFIG_NAME
    try:
        data = load_json(path)
        if not isinstance(data, dict):
            raise TypeError("not a mapping")
        return VisualConfig(**data)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path} is missing or invalid: {e}") from None
