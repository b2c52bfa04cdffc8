"""Gradient accumulation, ``max_steps`` and ``eval_steps``: every count is of optimizer steps.

The core claim: K micro-batches of one optimizer step give the weights one step on their union gives (the mean loss
over every loss term of the step), for a classification head and an LM head whose micro-batches hold different
numbers of target tokens (where a plain mean of micro-batch means would differ), in fp32 and under fp16 with the
gradient scaler. Data parallelism with accumulation is in ``test_distributed.py``; a kill between micro-batches,
then ``--resume``, in ``test_resume_after_kill.py``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import VOCAB, tiny_backbone
from test_trainer import config, one_thread, records  # noqa: F401 (one_thread: an autouse fixture)

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.errors import ConfigError
from laddertune.io import load_tensors
from laddertune.training import train
from laddertune.training.config import TrainConfig
from laddertune.training.precision import Precision
from laddertune.training.step import train_step

FAMILY = {"sequence_classification": "bert", "causal_lm": "llama"}
LENGTHS = [7, 3, 5, 6, 2]  # real tokens per row: micro-batches with unequal numbers of target tokens
GROUPS = [[0, 1], [2, 3], [4]]  # K = 3 micro-batches; the last one smaller, as an epoch's last step can be


def _batch(head: str, rows: list[int]) -> dict:
    """Rows of one fixed data set, right-padded to their own longest row (as the collator pads a micro-batch)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (len(LENGTHS), max(LENGTHS)), generator=g)
    mask = (torch.arange(max(LENGTHS)) < torch.tensor(LENGTHS)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    if head == "causal_lm":
        labels = ids.masked_fill(mask == 0, -100)
    else:
        labels = torch.tensor([0, 1, 1, 0, 1])
    width = max(LENGTHS[r] for r in rows)
    labels = labels[rows, :width] if head == "causal_lm" else labels[rows]
    return {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width], "labels": labels}


def _model(head: str):
    return get_ladder_model(tiny_backbone(FAMILY[head], head), LadderConfig(reduction_factor=4))


def _step(model, batches, head: str, precision: str = "fp32") -> tuple[float, dict]:
    """One step of plain SGD (the update is the gradient itself: AdamW's first step would hide a gradient's size)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = train_step(model, batches, optimizer, scheduler, 0.0, Precision(precision, "cpu"), head=head)
    moved = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert max((moved[n] - before[n]).abs().max().item() for n in moved) > 1e-3, "degenerate: nothing moved"
    return loss, moved


def _max_diff(a: dict, b: dict) -> float:
    return max((a[n] - b[n]).abs().max().item() for n in a)


def _fp16_on_cpu() -> str | None:
    """Why fp16 training cannot run on this CPU, or None."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        torch.amp.GradScaler("cpu")
    except (RuntimeError, AttributeError, TypeError) as e:
        return f"fp16 autocast or GradScaler unavailable on CPU in torch {torch.__version__}: {e}"
    return None


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("head", ["sequence_classification", "causal_lm"])
def test_k_micro_batches_equal_one_batch_of_their_union(head, precision):
    if precision == "fp16" and (why := _fp16_on_cpu()):
        pytest.skip(why)
    model = _model(head).eval()  # no dropout: its draws differ between one batch and three
    twin = copy.deepcopy(model)
    whole_loss, whole = _step(model, _batch(head, sum(GROUPS, [])), head, precision)
    micro_loss, micro = _step(twin, [_batch(head, rows) for rows in GROUPS], head, precision)
    diff = _max_diff(whole, micro)
    print(f"{head} {precision}: max |w_K micro-batches - w_one batch| = {diff:.3g}")
    tolerance = 1e-6 if precision == "fp32" else 1e-4  # fp16 rounds each micro-batch's matmuls on its own
    assert diff < tolerance
    assert micro_loss == pytest.approx(whole_loss, rel=1e-5 if precision == "fp32" else 1e-3)
    # the weighting is what makes them equal: a plain mean of micro-batch means is not
    if precision == "fp32":
        base = _model(head).eval()
        grads = []
        for rows in GROUPS:
            base.zero_grad()
            base(**_batch(head, rows)).loss.backward()
            grads.append({n: p.grad.clone() for n, p in base.named_parameters() if p.requires_grad})
        base.zero_grad()
        base(**_batch(head, sum(GROUPS, []))).loss.backward()
        mean_of_means = {n: sum(g[n] for g in grads) / len(grads) for n in grads[0]}
        exact = {n: p.grad for n, p in base.named_parameters() if p.requires_grad}
        assert _max_diff(mean_of_means, exact) > 100 * tolerance


def test_a_missing_head_is_refused_for_several_micro_batches():
    model = _model("sequence_classification")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batches = [_batch("sequence_classification", rows) for rows in GROUPS]
    with pytest.raises(ValueError, match="needs the head"):
        train_step(model, batches, optimizer, scheduler, 1.0)


# ------------------------------------------------------------------------------------------------ whole runs


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    from test_trainer import save_backbone, write_data

    root = tmp_path_factory.mktemp("accumulation")
    bert = save_backbone(root / "bert")
    # no dropout: its draws differ with the batch's shape
    cfg = json.loads((root / "bert" / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (root / "bert" / "config.json").write_text(json.dumps(cfg))
    return {"bert": bert, "data": write_data(root / "data", n_train=40, n_val=12)}


def _weights(out) -> dict:
    return load_tensors(out / "checkpoint-last" / WEIGHTS_NAME)


def test_a_run_with_accumulation_equals_the_run_with_the_large_batch(assets, tmp_path):
    """40 examples: batch 4 x K 3 (4 steps an epoch, the last of 1 micro-batch) against batch 12 (4 steps an epoch,
    the last of 4 examples); the same shuffle, so the same examples in every step."""
    k3 = config(assets, tmp_path / "k3", batch_size=4, gradient_accumulation_steps=3, lr=0.01)
    big = config(assets, tmp_path / "big", batch_size=12, lr=0.01)
    r3, rb = train(k3), train(big)
    assert r3["effective"]["total_steps"] == rb["effective"]["total_steps"] == 8
    assert r3["effective"]["gradient_accumulation_steps"] == 3 and r3["effective"]["examples_per_step"] == 12
    assert r3["timing"]["steps"] == 8 and r3["effective"]["steps_per_epoch"] == 4
    losses = [[r["loss"] for r in records(c.run.output_dir) if r["type"] == "train"] for c in (k3, big)]
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    wa, wb = _weights(tmp_path / "k3"), _weights(tmp_path / "big")
    diff = max((wa[n] - wb[n]).abs().max().item() for n in wa)
    print(f"8 AdamW steps, batch 4 x 3 vs batch 12: max |w difference| = {diff:.3g}")
    assert diff < 1e-5


def test_max_steps_overrides_epochs_and_validates_where_it_stops(assets, tmp_path):
    """40 examples, batch 8: 5 steps an epoch; max_steps 7 runs epoch 1 and 2 steps of epoch 2, the schedule
    decays to 0 at step 7, and the stop validates (a second validation record, at step 7)."""
    c = config(assets, tmp_path / "run", epochs=5, max_steps=7, lr=0.01)
    results = train(c)
    e = results["effective"]
    assert (e["epochs"], e["steps_per_epoch"], e["total_steps"], e["max_steps"]) == (2, 5, 7, 7)
    assert results["timing"]["steps"] == 7
    recs = records(c.run.output_dir)
    train_recs = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train_recs] == list(range(1, 8))
    assert train_recs[-1]["lr"] == 0.0  # linear decay to zero at the last of the max_steps
    assert [(r["epoch"], r["step"]) for r in recs if r["type"] == "eval"] == [(1, 5), (2, 7)]


def test_eval_steps_validate_between_epoch_ends_and_count_for_the_best(assets, tmp_path):
    """5 steps an epoch (batch 4 x 2), eval_steps 2: validations at every second step (2, 4, 6, 8), at the epoch's
    end (5) and at the end (10), which is also a second step and validates once."""
    c = config(assets, tmp_path / "run", batch_size=4, gradient_accumulation_steps=2, eval_steps=2, lr=0.01)
    results = train(c)
    evals = [(r["epoch"], r["step"]) for r in records(c.run.output_dir) if r["type"] == "eval"]
    assert evals == [(1, 2), (1, 4), (1, 5), (2, 6), (2, 8), (2, 10)]
    history = results["metrics"]["validation"]
    best = max(history, key=lambda r: r["metrics"]["score"])  # the first of the best, as the run keeps it
    assert results["metrics"]["best_validation"] == best["metrics"]
    assert results["metrics"]["best_epoch"] == best["epoch"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["effective"]["eval_steps"] == 2


def test_the_new_options_are_checked_and_eval_max_samples_is_an_alias():
    with pytest.raises(ConfigError, match="gradient_accumulation_steps must be an integer >= 1"):
        TrainConfig.from_flat(task="rte", gradient_accumulation_steps=0)
    with pytest.raises(ConfigError, match="max_steps must be an integer >= 1"):
        TrainConfig.from_flat(task="rte", max_steps=0)
    with pytest.raises(ConfigError, match="eval_steps must be an integer >= 1"):
        TrainConfig.from_flat(task="rte", eval_steps=0)
    c = TrainConfig.from_flat(task="rte", eval_max_samples=7)
    assert c.data.max_eval_samples == 7 and c.to_dict()["max_eval_samples"] == 7
    assert "eval_max_samples" not in c.to_dict()
    epochs, per_epoch, total = TrainConfig.from_flat(
        task="rte", batch_size=4, gradient_accumulation_steps=3
    ).resolved_steps(train_size=41, task_epochs=2)
    assert (epochs, per_epoch, total) == (2, 4, 8)  # 11 batches in groups of 3
