"""The Table 3 baselines on CLIP-T5: the visual embeddings enter the BACKBONE encoder (VL-Adapter's CLIP-T5).

Full fine-tuning, LoRA, Adapters, BitFit and prompt tuning (:func:`laddertune.baselines.prepare_baseline`, the
same code as the text baselines) on a T5 whose encoder input is ``cat[token embeddings, visual embeddings]``; the
:class:`VisualEmbedding` trains with every method, as in VL-Adapter. Same call signature as
:class:`~laddertune.vision.VisionLadderModel`, so the training loop and evaluation are shared.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from torch import nn

from ..baselines import prepare_baseline
from ..errors import ConfigError
from .visual_embedding import VisualConfig, VisualEmbedding


class VisualBackboneModel(nn.Module):
    """A T5 trained by ``method`` whose encoder reads text and image (VL-Adapter's CLIP-T5 input).

    Args:
        backbone: a ``T5ForConditionalGeneration`` (modified in place by the method).
        visual: shape of the image features.
        method: ``full``, ``lora``, ``adapter``, ``bitfit`` or ``prompt``.
        options: the method's options (:mod:`laddertune.baselines.options`; default: the authors').
    """

    def __init__(self, backbone: nn.Module, visual: VisualConfig, method: str, options=None) -> None:
        super().__init__()
        if not getattr(backbone.config, "is_encoder_decoder", False):
            raise ConfigError(
                "CLIP-T5 baselines need an encoder-decoder backbone (T5ForConditionalGeneration)"
            )
        self.embed_tokens = backbone.get_input_embeddings()  # read before a PEFT wrapper hides it
        self.model = prepare_baseline(backbone, method, options)
        self.visual = VisualEmbedding(visual, backbone.config.d_model)  # trainable under every method
        self.method, self.visual_config = method, visual

    @property
    def device(self) -> torch.device:
        """Where the visual embedding is (where batches go)."""
        return next(self.visual.parameters()).device

    def _inputs(self, input_ids, attention_mask, vis_feats, vis_boxes, vis_mask) -> dict:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.embed_tokens(input_ids)  # (B, T, d); trains under full fine-tuning only
        visual = self.visual(vis_feats, vis_boxes).to(text.dtype)  # (B, M, d)
        if vis_mask is None:
            vis_mask = torch.ones(visual.shape[:2], dtype=attention_mask.dtype, device=visual.device)
        return {
            "inputs_embeds": torch.cat([text, visual], dim=1),  # (B, T + M, d)
            "attention_mask": torch.cat([attention_mask, vis_mask.to(attention_mask.dtype)], dim=1),
        }

    def forward(
        self, input_ids, attention_mask=None, vis_feats=None, vis_boxes=None, vis_mask=None, labels=None
    ):
        return self.model(
            **self._inputs(input_ids, attention_mask, vis_feats, vis_boxes, vis_mask), labels=labels
        )

    @torch.no_grad()
    def generate(
        self, input_ids, attention_mask=None, vis_feats=None, vis_boxes=None, vis_mask=None, **kwargs
    ) -> torch.Tensor:
        """transformers' generation from the joint embeddings (``num_beams``, ``max_new_tokens``...).

        PEFT's generate wants token ids, so the encoder runs here (after the soft prompt, for prompt tuning) and
        the underlying T5 (with its LoRA / adapters / biases in place) decodes from ``encoder_outputs``.
        """
        inputs = self._inputs(input_ids, attention_mask, vis_feats, vis_boxes, vis_mask)
        model = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        if (
            isinstance(self.model, PeftModel)
            and self.model.peft_config[self.model.active_adapter].is_prompt_learning
        ):
            prompts = self.model.get_prompt(batch_size=input_ids.shape[0]).to(inputs["inputs_embeds"].dtype)
            inputs["inputs_embeds"] = torch.cat([prompts, inputs["inputs_embeds"]], dim=1)
            ones = inputs["attention_mask"].new_ones(prompts.shape[:2])
            inputs["attention_mask"] = torch.cat([ones, inputs["attention_mask"]], dim=1)
        encoder_outputs = model.get_encoder()(**inputs)
        kwargs.setdefault("do_sample", False)
        return model.generate(
            encoder_outputs=encoder_outputs, attention_mask=inputs["attention_mask"], **kwargs
        )
