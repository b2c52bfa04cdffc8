"""CLIP-T5 with LST: the backbone reads text ids only, image features live in the side network (paper Table 3)."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, tiny_backbone
from transformers import T5ForConditionalGeneration

from laddertune.baselines import PromptOptions
from laddertune.vision import VisionLadderModel, VisualConfig, grid_boxes
from laddertune.vision.baselines import VisualBackboneModel

F = 12  # feature size of the tiny visual input


def _model(seed: int = 0, max_images: int = 2) -> VisionLadderModel:
    model = VisionLadderModel(tiny_backbone("t5", "seq2seq_lm", seed=seed), VisualConfig(F, max_images))
    # With the final shortcut the up-projection starts at zero (step-0 logits are the backbone's), so nothing of the
    # side network, the image included, reaches the logits or gets a gradient yet; a trained one is not zero.
    with torch.no_grad():
        torch.nn.init.normal_(model.side.up.weight, std=0.1, generator=torch.Generator().manual_seed(seed))
    return model


def _batch(images: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 5), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    shape = (2, 4, F) if images == 1 else (2, images, 4, F)
    return {
        "input_ids": ids.masked_fill(mask == 0, 0),
        "attention_mask": mask,
        "vis_feats": torch.randn(shape, generator=g),
        "labels": torch.randint(2, VOCAB, (2, 3), generator=g),
    }


def test_backbone_sees_the_text_ids_alone():
    model, batch = _model(), _batch(images=2)
    seen = []
    encoder, decoder = model.backbone.get_encoder(), model.backbone.get_decoder()
    encoder.register_forward_pre_hook(lambda m, a, kw: seen.append(("enc", kw)), with_kwargs=True)
    decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(("dec", kw)), with_kwargs=True)
    model(**batch)
    enc = dict(seen)["enc"]
    assert torch.equal(enc["input_ids"], batch["input_ids"])  # the text ids, nothing visual
    assert enc.get("inputs_embeds") is None
    dec = dict(seen)["dec"]
    assert dec["encoder_hidden_states"].shape[1] == batch["input_ids"].shape[1]  # text positions only
    assert torch.equal(dec["encoder_attention_mask"], batch["attention_mask"])
    # The backbone's states do not depend on the image at all.
    with torch.no_grad():
        a = model.encode(batch["input_ids"], batch["attention_mask"], batch["vis_feats"])
        b = model.encode(batch["input_ids"], batch["attention_mask"], torch.randn_like(batch["vis_feats"]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    assert a[1].shape[1] == 5 + 2 * 4 and a[2].shape == (2, 5 + 2 * 4)


def test_visual_parameters_train_backbone_gets_no_gradient():
    model = _model()
    torch.nn.init.normal_(
        model.side.up.weight, std=0.1
    )  # trained: a fresh up-projection is zero (final shortcut)
    model(**_batch()).loss.backward()
    visual = dict(model.side.visual.named_parameters())
    for name in ("feat.weight", "box.weight", "feat_norm.weight", "box_norm.weight"):
        assert visual[name].grad is not None and visual[name].grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.side.parameters())


def test_ladder_reaches_text_positions_only():
    """At visual positions the ladder input is zero: the backbone's taps are padded, never invented there."""
    model, batch = _model(), _batch()
    stack = model.side.stacks["encoder"]
    got = []
    stack.register_forward_pre_hook(lambda m, a, kw: got.append(a[0] if a else kw["taps"]), with_kwargs=True)
    model(**batch)
    taps = got[0]
    for i in stack.kept:
        assert taps[i].shape[1] == 5 + 4
        assert torch.all(taps[i][:, 5:] == 0) and taps[i][:, :5].abs().sum() > 0


def test_two_images_use_their_order_and_masked_regions_are_ignored():
    model, batch = _model(), _batch(images=2)
    model.eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.side.up.weight, std=0.1)  # trained: the side output reaches the logits
        torch.nn.init.normal_(model.side.visual.order.weight)
        base = model(**batch).logits
        swapped = model(**{**batch, "vis_feats": batch["vis_feats"].flip(1)}).logits
        assert not torch.allclose(base, swapped, atol=1e-6)  # image order matters (NLVR2: left/right)
        vis_mask = torch.ones(2, 8, dtype=torch.long)
        vis_mask[:, -1] = 0
        changed = batch["vis_feats"].clone()
        changed[:, 1, -1] = 100.0
        a = model(**batch, vis_mask=vis_mask).logits
        b = model(**{**batch, "vis_feats": changed}, vis_mask=vis_mask).logits
    torch.testing.assert_close(a, b)  # a masked region changes nothing


def test_grid_boxes_cover_the_image():
    boxes = grid_boxes(2, 2)
    torch.testing.assert_close(boxes[3], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert boxes.shape == (4, 4)


def test_generation_with_images_greedy_and_beam():
    model, batch = _model(), _batch()
    model.eval()
    ids, mask, feats = batch["input_ids"], batch["attention_mask"], batch["vis_feats"]
    greedy = model.generate(ids, mask, feats, max_new_tokens=3)
    with torch.no_grad():
        start = torch.zeros(2, 1, dtype=torch.long)
        first = model(ids, mask, feats, decoder_input_ids=start).logits[:, -1].argmax(-1)
    assert torch.equal(greedy[:, 1], first)
    beams = model.generate(ids, mask, feats, max_new_tokens=3, num_beams=3)
    assert beams.shape[0] == 2 and torch.all(beams[:, 0] == 0)


def test_save_load_gives_identical_outputs(tmp_path):
    model, batch = _model(), _batch(images=2)
    model.eval()
    with torch.no_grad():
        for p in model.side.parameters():
            p.add_(0.01 * torch.randn_like(p))
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    loaded = VisionLadderModel.from_pretrained(tiny_backbone("t5", "seq2seq_lm", seed=0), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, before, rtol=0, atol=0)
    assert loaded.visual_config == model.visual_config


@pytest.mark.parametrize("method", ["full", "lora", "adapter", "bitfit", "prompt"])
def test_baselines_feed_the_image_to_the_backbone_encoder(method):
    """VL-Adapter's CLIP-T5: cat[text, visual] enters the T5 encoder; the visual embedding trains with the method."""
    torch.manual_seed(0)
    model = VisualBackboneModel(
        tiny_backbone("t5", "seq2seq_lm"),
        VisualConfig(F, 2),
        method,
        PromptOptions(prompt_length=4) if method == "prompt" else None,
    )
    batch = _batch(images=2)
    lengths = []
    t5 = next(m for m in model.modules() if isinstance(m, T5ForConditionalGeneration))
    t5.get_encoder().register_forward_pre_hook(
        lambda m, a, kw: lengths.append(kw["inputs_embeds"].shape[1]), with_kwargs=True
    )
    model(**batch).loss.backward()
    assert lengths == [(4 if method == "prompt" else 0) + 5 + 2 * 4]
    assert model.visual.feat.weight.grad.abs().sum() > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("visual.")} == {
        n for n, _ in model.visual.named_parameters(prefix="visual")
    }
    model.eval()
    with torch.no_grad():
        first = model(**{**batch, "labels": torch.zeros(2, 1, dtype=torch.long)}).logits[:, 0].argmax(-1)
    out = model.generate(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], max_new_tokens=2)
    assert torch.equal(out[:, 1], first)


def test_beam_search_with_images_scores_match_an_uncached_rescoring():
    """transformers' beam search expands both encoders' states and the side mask (text + visual) together."""
    model, batch = _model(), _batch(images=2)
    torch.nn.init.normal_(model.side.up.weight, std=1.0)  # a side network that changes the logits
    model.eval()
    ids, mask, feats = batch["input_ids"], batch["attention_mask"], batch["vis_feats"]
    vis_mask = torch.ones(2, 2 * 4, dtype=torch.long)
    vis_mask[1, 4:] = 0  # the second example's second image is absent
    out = model.generate(
        ids, mask, feats, vis_mask=vis_mask, num_beams=3, num_return_sequences=2, max_new_tokens=4,
        min_new_tokens=4, length_penalty=0.0, return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    new = out.sequences[:, 1:]  # (4, 4) after the decoder start token
    twice = [t.repeat_interleave(2, 0) for t in (ids, mask, feats, vis_mask)]
    dec = torch.cat([torch.zeros(4, 1, dtype=torch.long), new], 1)
    with torch.no_grad():
        logits = model(*twice[:3], vis_mask=twice[3], decoder_input_ids=dec).logits
    total = torch.log_softmax(logits, -1)[:, :-1].gather(-1, new[..., None]).sum((1, 2))
    torch.testing.assert_close(out.sequences_scores, total, rtol=1e-4, atol=1e-4)
    greedy = model.generate(ids, mask, feats, vis_mask=vis_mask, max_new_tokens=4)
    backbone = model.backbone.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4)
    assert not torch.equal(greedy, backbone), "degenerate test: the images and side network change nothing"
