"""A LadderModel where the Hugging Face ecosystem expects its own models: pipelines, accelerate, torch.compile and
TRL's SFTTrainer, on tiny models built from configs."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import tiny_backbone, tiny_batch
from test_families import tiny
from test_hf_generation import numbered_tokenizer, pair

from laddertune import LadderConfig, LadderModel, get_ladder_model
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.io import load_tensors

PROMPTS = ["t5 t9 t13 t22", "t31 t40 t11"]


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_text_generation_pipeline_returns_what_generate_returns(name):
    _, model = pair(name, side_matters=True)
    tok = numbered_tokenizer()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    got = pipe(PROMPTS, max_new_tokens=5, do_sample=False, return_full_text=False)
    for prompt, [out] in zip(PROMPTS, got, strict=True):
        enc = tok(prompt, return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=5, do_sample=False)
        assert out["generated_text"] == tok.decode(ids[0, enc["input_ids"].shape[1] :])
        assert len(out["generated_text"].split()) >= 1


def test_text2text_generation_pipeline():
    if "text2text-generation" in transformers.pipelines.REMOVED_TASKS:
        pytest.skip(f"transformers {transformers.__version__} removed the text2text-generation pipeline")
    _, model = pair("t5", side_matters=True)  # pragma: no cover (transformers < 5)
    pipe = transformers.pipeline("text2text-generation", model=model, tokenizer=numbered_tokenizer())
    assert pipe(PROMPTS[0], max_new_tokens=3)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_text_classification_pipeline_scores_are_the_model_probabilities(family):
    model = get_ladder_model(
        tiny_backbone(family, "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    model.eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.side.head[-1].weight)  # a head that is not ~uniform
    tok = numbered_tokenizer()
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tok)
    got = pipe(PROMPTS, top_k=None)
    for prompt, scores in zip(PROMPTS, got, strict=True):
        with torch.no_grad():
            probs = model(**tok(prompt, return_tensors="pt")).logits.softmax(-1)[0]
        by_label = {s["label"]: s["score"] for s in scores}
        assert by_label == pytest.approx({f"LABEL_{i}": p for i, p in enumerate(probs.tolist())}, rel=1e-5)


def test_accelerate_prepare_trains_the_side_network_only():
    from accelerate import Accelerator

    model = get_ladder_model(tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    side_before = {k: v.clone() for k, v in model.side.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tiny_batch("llama", "causal_lm")
    loader = torch.utils.data.DataLoader(
        [{k: v[i] for k, v in batch.items()} for i in range(3)], batch_size=3
    )
    accelerator = Accelerator(cpu=True)
    prepared, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for step_batch in loader:
        loss = prepared(**step_batch).loss
        accelerator.backward(loss)
        optimizer.step()
    assert accelerator.unwrap_model(prepared) is model
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items())
    assert any(not torch.equal(v, side_before[k]) for k, v in model.side.state_dict().items())


@pytest.mark.parametrize(("family", "head"), [("bert", "sequence_classification"), ("llama", "causal_lm")])
def test_torch_compile_gives_the_eager_outputs_and_gradients(family, head):
    torch._dynamo.reset()
    model = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4)
    ).eval()  # no dropout
    torch.nn.init.normal_(model.side.up.weight, std=0.1)
    batch = tiny_batch(family, head)
    eager = model(**batch)
    eager.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager")  # dynamo's graph capture, without a C++ toolchain
    out = compiled(**batch)
    out.loss.backward()
    torch.testing.assert_close(out.logits, eager.logits, rtol=1e-5, atol=1e-5)
    for n, p in model.side.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    torch._dynamo.reset()


def _sft_rows(n: int = 48):
    """A chat dataset whose answers are learnable: the assistant always answers ``t20 t30``."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"t{5 + i % 7} t{9 + i % 5} t{13 + i % 3}"},
                {"role": "assistant", "content": "t20 t30"},
            ]
        }
        for i in range(n)
    ]


def test_trl_sft_trainer_trains_saves_the_side_only_and_leaves_the_backbone(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tok = numbered_tokenizer()
    backbone = tiny("llama", "causal_lm")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4))
    args = trl.SFTConfig(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4, learning_rate=1e-1,
        logging_steps=1, save_steps=6, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        bf16=False,  # TRL's default autocasts; float32 keeps the reloaded model's logits comparable bit for bit
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(_sft_rows()), processing_class=tok
    )
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 12 and sum(losses[-3:]) < 0.9 * sum(losses[:3])
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    trainer.save_model(str(tmp_path / "final"))
    backbone_names = {f"backbone.{k}" for k in before} | set(before)
    for folder in (tmp_path / "checkpoint-6", tmp_path / "final"):
        saved = load_tensors(folder / WEIGHTS_NAME)
        assert set(saved) == set(model.side.state_dict()) and not set(saved) & backbone_names
        assert not (folder / "model.safetensors").exists()
    # TRL's fused LM-head loss (it applies the LM head to model.base_model's output) is the model's own loss
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        plain = model(**batch).loss
        fused = model(**batch, fused_lm_head=True).loss
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    loaded = LadderModel.from_pretrained(tiny("llama", "causal_lm"), tmp_path / "final").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
