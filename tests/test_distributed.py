"""Data-parallel training (``torchrun``, gloo on CPU): 2 processes equal 1 at the same global batch and seed, write one
set of files, resume after a kill (with any number of ranks), and end cleanly when a rank dies.

Tiny and dropout-free (dropout draws differ between one process and two, by design of per-rank RNG streams): a
2-layer BERT, 24 training examples, global batch 3 (split 2 + 1: the uneven split the loss weighting must handle),
2 epochs of 8 steps, ``checkpoint-last`` every 2 steps. Each torchrun launch imports torch twice on 2 shared cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_setup import ENV, SLOW_START_S
from test_trainer import save_backbone, write_data

from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.io import load_tensors, verify_checksums
from laddertune.training import STATE_JSON, distributed, train
from laddertune.training.config import TrainConfig
from laddertune.training.distributed import Distributed
from laddertune.training.step import loss_terms

WORKER = Path(__file__).with_name("distributed_worker.py")
RUN = dict(task="rte", epochs=2, batch_size=3, save_steps=2, log_every=1, memory_steps=0, lr=0.03)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("distributed")
    bert = save_backbone(root / "bert", "bert", seed=0)
    cfg = json.loads((root / "bert" / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (root / "bert" / "config.json").write_text(json.dumps(cfg))
    return {"root": root, "bert": bert, "data": write_data(root / "data", n_train=24, n_val=10)}


def _argv(assets, out: Path, *extra) -> list[str]:
    argv = [
        "train",
        "--task",
        "rte",
        "--backbone",
        assets["bert"],
        "--data-dir",
        assets["data"],
        "--epochs",
        "2",
    ]
    argv += [
        "--batch-size",
        "3",
        "--save-steps",
        "2",
        "--log-every",
        "1",
        "--lr",
        "0.03",
        "--memory-steps",
        "0",
    ]
    return [*argv, "--threads", "1", "--no-progress", "--output-dir", str(out), *extra]


def torchrun(
    assets, out: Path, *extra, nproc: int = 2, kill: str | None = None
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 distributed_worker.py train ...`` (the worker is laddertune's CLI,
    with ``kill`` = ``"<ranks>:<step>"`` SIGKILLing those ranks after that step)."""
    env = {**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LADDERTUNE_TEST_KILL", None)
    if kill:
        env["LADDERTUNE_TEST_KILL"] = kill
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, str(WORKER), *_argv(assets, out, *extra)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SLOW_START_S)


@pytest.fixture(scope="module")
def one_process(assets) -> Path:
    out = assets["root"] / "one"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            TrainConfig.from_flat(
                **RUN, backbone=assets["bert"], data_dir=assets["data"], output_dir=str(out)
            )
        )
    finally:
        torch.set_num_threads(n)
    return out


@pytest.fixture(scope="module")
def two_processes(assets) -> Path:
    out = assets["root"] / "two"
    done = torchrun(assets, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results:") == 1, "rank 1 printed too"
    return out


def _train_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "train"]


def _scores(out: Path) -> dict:
    m = json.loads((out / "results.json").read_text())["metrics"]
    return {"validation": [r["metrics"] for r in m["validation"]], "best": m["best_epoch"]}


def assert_same_run(a: Path, b: Path, steps: int = 16, atol: float = 1e-5) -> None:
    """Same loss at every step (float tolerance), same scores, same files, close side weights."""
    la, lb = _train_losses(a), _train_losses(b)
    assert len(la) == len(lb) == steps
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-6)
    assert _scores(a) == _scores(b)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for folder in ("checkpoint-best", "checkpoint-last"):
        verify_checksums(b / folder)
        wa, wb = (load_tensors(d / folder / WEIGHTS_NAME) for d in (a, b))
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.allclose(wa[name], wb[name], atol=atol), name


def test_loss_terms_count_examples_or_shifted_target_tokens():
    assert loss_terms(torch.tensor([0, 1, 1]), "sequence_classification") == 3
    labels = torch.tensor([[5, 6, -100], [7, -100, -100]])
    assert loss_terms(labels, "seq2seq_lm") == 3
    assert loss_terms(labels, "causal_lm") == 1  # the first token of each row is never a target


def test_shard_then_gather_restores_the_global_order(monkeypatch):
    """Evaluation: rank r predicts items r, r + N, ...; gather puts every rank's predictions back in place."""
    items = list(range(11))
    ranks = [Distributed(rank, 3, rank, "gloo") for rank in range(3)]
    shards = [ctx.shard(items) for ctx in ranks]
    assert sorted(sum(shards, [])) == items and [len(s) for s in shards] == [4, 4, 3]

    def all_gather_object(parts, _mine):  # what the 3 ranks would exchange
        parts[:] = [[f"p{i}" for i in shard] for shard in shards]

    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    assert ranks[1].gather(None) == [f"p{i}" for i in items]


def test_close_releases_the_reducer_while_the_group_is_registered(tmp_path):
    """A DDP reducer holding the gloo group's last reference destroys the group with the GIL held, which can wait
    forever on a gloo thread still freeing a gathered object's tensors (a rank hung at exit). close() drops the
    reducer first, so the group goes with its Python handles instead."""
    torch.distributed.init_process_group(
        "gloo", store=torch.distributed.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
    )
    try:
        ctx = Distributed(0, 1, 0, "gloo")
        ctx.wrap(torch.nn.Linear(2, 2))
        ddp = ctx.model
        assert "reducer" in ddp.__dict__  # what close() must release (DDP keeps it as a plain attribute)
        assert ctx.gather([1, 2]) == [1, 2]  # a finished collective whose tensors Python owned
        ctx.close()
        assert ctx.model is None
        assert "reducer" not in ddp.__dict__ and "logger" not in ddp.__dict__
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_two_processes_equal_one_at_the_same_global_batch(one_process, two_processes):
    assert_same_run(one_process, two_processes)
    results = json.loads((two_processes / "results.json").read_text())
    assert results["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert len(set(_train_losses(one_process))) > 3, "degenerate test: the loss does not move"


def test_accumulation_over_two_processes_equals_one_process_on_the_large_batch(assets):
    """2 ranks x 2 micro-batches of the global batch 3 (rank 0 takes 2 + 2 examples, rank 1 takes 1 + 1) per step
    equal one process on batch 6: 4 steps an epoch, the loss terms counted over both micro-batches and ranks."""
    one = assets["root"] / "one-batch-6"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = {**RUN, "batch_size": 6, "backbone": assets["bert"], "data_dir": assets["data"]}
        train(TrainConfig.from_flat(**options, output_dir=str(one)))
    finally:
        torch.set_num_threads(n)
    two = assets["root"] / "two-accumulating"
    done = torchrun(assets, two, "--gradient-accumulation-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    # AdamW's first update is about lr * sign(g): a gradient component near its eps (1e-8), which rounding moves
    # by a few percent, moves its weight by up to ~1.5% of lr (4.2e-4 here, also between batch 3 x 2 and batch 6
    # in one process). The losses stay within 1e-4; test_accumulation.py checks the gradients themselves (SGD).
    assert_same_run(one, two, steps=8, atol=1e-3)
    effective = json.loads((two / "results.json").read_text())["effective"]
    assert (effective["gradient_accumulation_steps"], effective["examples_per_step"]) == (2, 6)


def test_resume_after_killing_both_ranks_gives_the_same_result(assets, two_processes):
    out = assets["root"] / "killed"
    killed = torchrun(assets, out, kill="0,1:5")
    assert killed.returncode != 0 and not (out / "results.json").exists()
    assert json.loads((out / "checkpoint-last" / STATE_JSON).read_text())["step"] == 4
    resumed = torchrun(assets, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(two_processes, out)


def test_a_rank_that_dies_ends_the_job_clearly_and_one_process_resumes(assets, one_process):
    out = assets["root"] / "dies"
    died = torchrun(assets, out, kill="1:5")
    assert died.returncode != 0
    assert "rank      : 1" in died.stderr and "SIGKILL" in died.stderr  # torchrun names the rank that died
    assert not (out / "results.json").exists()
    verify_checksums(out / "checkpoint-last")  # intact: checkpoints are swapped in whole
    assert json.loads((out / "checkpoint-last" / STATE_JSON).read_text())["step"] == 4
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # --resume with another number of ranks: checkpoints count global steps
        config = TrainConfig.from_flat(
            **RUN, backbone=assets["bert"], data_dir=assets["data"], output_dir=str(out)
        )
        config.run.resume = True
        train(config)
    finally:
        torch.set_num_threads(n)
    assert_same_run(one_process, out)


def test_tap_cache_with_several_processes_is_refused_before_anything_is_written(
    assets, tmp_path, monkeypatch
):
    """Ranks do not share a tap cache yet (they would build one entry at once): one line, no run folder."""
    from laddertune.errors import ConfigError

    monkeypatch.setattr(Distributed, "from_env", classmethod(lambda cls: Distributed(0, 2, 0, "gloo")))
    out = tmp_path / "run"
    config = TrainConfig.from_flat(
        **RUN,
        backbone=assets["bert"],
        data_dir=assets["data"],
        output_dir=str(out),
        tap_cache=str(tmp_path / "c"),
    )
    with pytest.raises(ConfigError, match="tap-cache is not supported with several processes"):
        train(config)
    assert not out.exists() and not (tmp_path / "c").exists()
