"""The training loop on tiny random backbones saved to disk with a tiny word-level tokenizer (no downloads).

Data: a synthetic RTE-shaped folder (label 1 when "yes" is in the second sentence), so the runs are seconds long and
the task is learnable. What is checked: TrainConfig validation and JSON round trip, the per-epoch data order, the
files a run writes, that LST leaves the backbone untouched and saves only the side network, that a resumed run is
bit-identical to an uninterrupted one, that a NaN stops the run and keeps the last good checkpoint, that a finished
run is never overwritten by accident, and that ``evaluate`` rebuilds every method from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers as T

import laddertune.methods.ladder as ladder_method
from laddertune.core.config import LadderConfig
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.data import TASKS
from laddertune.errors import ConfigError, LadderTuneError
from laddertune.io import load_tensors
from laddertune.training import (
    BASELINE_WEIGHTS,
    TrainingDivergedError,
    epoch_batches,
    evaluate,
    train,
)
from laddertune.training.config import TrainConfig
from laddertune.training.evaluation import MAJORITY, evaluate_examples, format_metrics

WORDS = "the a cat dog sat ran on mat big small red blue green tree house car fast slow yes no".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
EXTRA = list("0123456789.:") + ["rte", "sentence1", "sentence2", "label", "custom", "text"]
EXTRA += [
    f"w{i}" for i in range(100)
]  # prompt tuning copies its 100 prompt vectors from the first 100 tokens
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS + EXTRA)}


# ------------------------------------------------------------------------------------------------- fixtures


def save_tokenizer(folder: Path, token_types: bool = True) -> None:
    """A word-level tokenizer with BERT's special tokens ([SEP] doubles as eos), saved next to a model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    names = (
        ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    )
    fast = T.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[SEP]",
        model_input_names=names,
    )
    fast.save_pretrained(folder)


def save_backbone(folder: Path, family: str = "bert", seed: int = 0) -> str:
    """A tiny random backbone (bert, t5, llama) and its tokenizer in ``folder``; returns the folder as a string."""
    torch.manual_seed(seed)
    n = len(VOCAB)
    if family == "bert":
        cfg = T.BertConfig(
            vocab_size=n,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=160,
        )
        model = T.BertForSequenceClassification(cfg)
    elif family == "t5":
        cfg = T.T5Config(
            vocab_size=n,
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            num_decoder_layers=2,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
        model = T.T5ForConditionalGeneration(cfg)
    else:
        cfg = T.LlamaConfig(
            vocab_size=n,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            eos_token_id=3,
            bos_token_id=2,
            max_position_embeddings=160,
        )
        model = T.LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    save_tokenizer(folder, token_types=family == "bert")
    return str(folder)


def write_data(root: Path, task: str = "rte", n_train: int = 48, n_val: int = 24, seed: int = 0) -> str:
    """A GLUE-layout folder ``root/<task>/{train,validation}.jsonl`` with a learnable RTE-shaped task: the label
    is 1 when the second sentence says "yes" (four times, so that even a random backbone carries the signal)."""
    rng = random.Random(seed)
    body = [w for w in WORDS if w not in ("yes", "no")]
    (root / task).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        rows = []
        for i in range(n):
            label = i % 2
            s2 = rng.sample(body, rng.randint(1, 3)) + ["yes" if label else "no"] * 4
            rng.shuffle(s2)
            rows.append(
                {
                    "sentence1": " ".join(rng.sample(body, rng.randint(3, 8))),
                    "sentence2": " ".join(s2),
                    "label": label,
                    "idx": i,
                }
            )
        (root / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("assets")
    return {
        "bert": save_backbone(root / "bert", "bert"),
        "t5": save_backbone(root / "t5", "t5"),
        "llama": save_backbone(root / "llama", "llama"),
        "data": write_data(root / "data"),
    }


def config(assets, out: Path, **kw) -> TrainConfig:
    base = dict(
        task="rte",
        backbone=assets["bert"],
        data_dir=assets["data"],
        epochs=2,
        batch_size=8,
        eval_batch_size=16,
        output_dir=str(out),
        memory_steps=0,
        log_every=1,
    )
    return TrainConfig.from_flat(**{**base, **kw})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------- TrainConfig


def test_config_defaults_and_resolution():
    c = TrainConfig.from_flat(task="rte")
    opt = c.optimization
    assert (
        c.model.backbone,
        c.method_name,
        opt.batch_size,
        c.data.max_length,
        c.data.protocol,
        opt.seed,
    ) == (
        "minilm",
        "lst",
        32,
        128,
        "dev",
        0,
    )
    assert TrainConfig.from_flat(task="rte").resolved_lr() == 3e-3
    assert TrainConfig.from_flat(task="rte", method="prompt").resolved_lr() == 0.3
    assert all(
        TrainConfig.from_flat(task="rte", method=m).resolved_lr() == 3e-4
        for m in ("full", "lora", "adapter", "bitfit")
    )
    assert TrainConfig.from_flat(task="rte", lr=1e-2).resolved_lr() == 1e-2
    assert (
        c.resolved_epochs(20) == 20 and TrainConfig.from_flat(task="rte", epochs=3).resolved_epochs(20) == 3
    )
    assert c.resolved_warmup(234) == 23 and c.resolved_warmup(100_000) == 500
    assert TrainConfig.from_flat(task="rte", warmup_steps=0).resolved_warmup(1000) == 0
    assert TrainConfig.from_flat(task="rte", warmup_ratio=0.05).resolved_warmup(1001) == 51  # rounded up
    assert TrainConfig.from_flat(task="rte", side_layers="3,1").method.side_layers == [1, 3]


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "dora"},
        {"init": "svd"},
        {"protocol": "test"},
        {"format": "seq2seq"},
        {"batch_size": 0},
        {"epochs": 0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"max_length": 4},
        {"reduction_factor": True},
        {"side_layers": [-1]},
        {"side_layers": "1,x"},
        {"overwrite": True, "resume": True},
        {"warmup_ratio": 1.5},
        {"warmup_ratio": 0.1, "warmup_steps": 10},
        {"method": "lst", "freeze_layers": 2},
        {"method": "full", "side_layers": [1]},
        {"method": "prompt", "freeze_layers": 1},
        {"method": "lora", "lora_rank": 0},
        {"mystery_option": 1},
        {"task": "custom"},
        {"backbone_dropout": "yes"},
        {"memory_steps": -1},
        {"weight_decay": -0.1},
        {"task": ""},
    ],
)
def test_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError):
        TrainConfig.from_flat(**{"task": "rte", **kw})


def test_config_json_round_trip(tmp_path):
    c = TrainConfig.from_flat(
        task="mrpc",
        method="lora",
        epochs=4,
        lr=1e-3,
        max_train_samples=10,
        output_dir="x",
        format="classification",
    )
    c.save(tmp_path)
    assert json.loads((tmp_path / "train_config.json").read_text())["output_dir"].startswith("../")
    moved = dataclasses.replace(c, run=dataclasses.replace(c.run, output_dir=os.path.abspath("x")))  # cwd's x
    assert TrainConfig.load(tmp_path) == moved
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match="unknown option 'lerning_rate'"):
        TrainConfig.from_dict({**c.to_dict(), "lerning_rate": 1})
    (tmp_path / "train_config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        TrainConfig.load(tmp_path)


def test_epoch_batches_seeded_per_epoch():
    a = epoch_batches(50, 8, seed=0, epoch=1)
    torch.manual_seed(123)  # the global RNG plays no part
    assert epoch_batches(50, 8, seed=0, epoch=1) == a
    assert sorted(i for b in a for i in b) == list(range(50)) and [len(b) for b in a] == [8] * 6 + [2]
    assert epoch_batches(50, 8, seed=0, epoch=2) != a and epoch_batches(50, 8, seed=1, epoch=1) != a


# ---------------------------------------------------------------------------------------------------- runs


def test_lst_run_writes_everything_and_leaves_backbone_untouched(assets, tmp_path):
    seen = []
    before = T.BertForSequenceClassification.from_pretrained(assets["bert"]).state_dict()
    c = config(assets, tmp_path / "run", epochs=3, memory_steps=2)
    results = train(c, on_record=seen.append)
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-best",
        "checkpoint-last",
        "metrics.jsonl",
        "results.json",
        "train_config.json",
    ]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert TrainConfig.load(out) == c
    m = results["metrics"]
    assert [r["epoch"] for r in m["validation"]] == [1, 2, 3] and m["test"] is None
    assert m["best_validation"]["score"] == max(r["metrics"]["score"] for r in m["validation"])
    assert 0 <= m["best_validation"]["accuracy"] <= 100
    p = results["parameters"]
    assert 0 < p["trainable"] < p["total"] and p["trainable_percent"] == pytest.approx(
        100 * p["trainable"] / p["total"]
    )
    assert results["effective"] == {
        "epochs": 3,
        "lr": 3e-3,
        "warmup_steps": 1,
        "total_steps": 18,
        "steps_per_epoch": 6,
        "max_steps": None,
        "gradient_accumulation_steps": 1,
        "examples_per_step": 8,
        "eval_steps": None,
        "format": "classification",
        "head": "sequence_classification",
    }
    assert results["memory"]["peak_train_bytes"] > 0 and results["memory"]["measured_steps"] == 2
    assert {"init", "train", "eval"} <= set(results["memory"]["phases"]["phases"])
    t = results["timing"]
    assert t["steps"] == 18 and t["timed_steps"] == 18 - 1 - 2 and t["seconds_per_step"] > 0
    assert set(results["versions"]) == {"torch", "transformers", "peft", "laddertune"}
    # metrics.jsonl: one record per step (log_every=1) and per evaluation, the same ones the callback saw
    recs = records(out)
    assert recs == json.loads(json.dumps(seen))
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, 19))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in recs if r["type"] == "train")
    # the checkpoints hold the side network alone; the backbone on disk is what it was
    side = load_tensors(out / "checkpoint-best" / WEIGHTS_NAME)
    assert sum(t.numel() for t in side.values()) == p["trainable"]
    assert not any(k.startswith(("bert.", "backbone.")) for k in side)
    after = T.BertForSequenceClassification.from_pretrained(assets["bert"]).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # evaluate() rebuilds the best epoch from disk and reproduces its validation score exactly
    again = evaluate(out)
    assert again["validation"] == m["best_validation"] and again["test"] is None


def test_the_loop_learns_the_synthetic_task(assets, tmp_path):
    # Full fine-tuning: on a tiny RANDOM backbone the 4-wide LST side network sits on a loss plateau for a
    # seed-dependent number of steps, which would make this test flaky; LST learning is shown on MiniLM instead.
    results = train(config(assets, tmp_path / "run", method="full", epochs=6, lr=1e-3))
    assert results["metrics"]["best_validation"]["accuracy"] >= 90
    assert results["metrics"]["validation"][0]["metrics"]["accuracy"] == 50  # it did start from chance


def _interrupt_after(step: int):
    def hook(record):
        if record["type"] == "train" and record["step"] == step:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("method", ["lst", "lora"])
def test_resume_is_bit_identical(assets, tmp_path, method):
    """Stop in the middle of epoch 2, resume, and land on exactly the weights and metrics of an unbroken run."""
    kw = {"method": method, "epochs": 2, "save_steps": 2, "lr": 1e-2}
    full = train(config(assets, tmp_path / "a", **kw))
    with pytest.raises(KeyboardInterrupt):
        train(config(assets, tmp_path / "b", **kw), on_record=_interrupt_after(9))  # checkpoint at step 8
    with pytest.raises(ConfigError, match="unfinished run"):
        train(config(assets, tmp_path / "b", **kw))
    with pytest.raises(ConfigError, match="other settings: lr"):
        train(config(assets, tmp_path / "b", **{**kw, "lr": 1e-3}, resume=True))
    resumed = train(config(assets, tmp_path / "b", **kw, resume=True))
    name = WEIGHTS_NAME if method == "lst" else BASELINE_WEIGHTS
    for ckpt in ("checkpoint-last", "checkpoint-best"):
        a, b = load_tensors(tmp_path / "a" / ckpt / name), load_tensors(tmp_path / "b" / ckpt / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scores = [[r["metrics"] for r in x["metrics"]["validation"]] for x in (full, resumed)]
    assert scores[0] == scores[1] and resumed["metrics"]["best_epoch"] == full["metrics"]["best_epoch"]
    assert resumed["timing"]["resumed"] and not full["timing"]["resumed"]
    strip = [r for r in records(tmp_path / "b") if r["type"] != "resume"]
    assert [r.get("loss") for r in strip] == [r.get("loss") for r in records(tmp_path / "a")]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(assets, tmp_path, monkeypatch):
    import laddertune.training.loop as trainer

    build = trainer.build_model

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += module.training  # count training forwards only: step k is the k-th
            if module.training and calls["n"] >= 8:  # step 8 is the second step of epoch 2
                output.loss = output.loss * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer, "build_model", poisoned)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingDivergedError, match=r"step 8 \(epoch 2\): the loss is nan.*checkpoint-last"
    ) as err:
        train(config(assets, out))
    assert isinstance(err.value, LadderTuneError)
    state = json.loads((out / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["epoch"] == 1  # written at the end of epoch 1, before the NaN
    assert not (out / "results.json").exists()
    assert records(out)[-1]["type"] == "diverged" and records(out)[-1]["step"] == 8


def test_finished_run_is_refused_unless_overwrite(assets, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "run").mkdir()
    (out / "notes.txt").write_text("mine")
    train(config(assets, out, epochs=1))
    with pytest.raises(ConfigError, match="finished run.*--overwrite"):
        train(config(assets, out, epochs=1))
    with pytest.raises(ConfigError, match="finished run"):
        train(config(assets, out, epochs=1, resume=True))
    train(config(assets, out, epochs=1, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes the run's files only
    assert [r["type"] for r in records(out)].count("eval") == 1


@pytest.mark.parametrize("method", ["full", "lora", "adapter", "bitfit", "prompt"])
def test_baselines_save_trainable_parameters_only(assets, tmp_path, method):
    results = train(config(assets, tmp_path / "run", method=method, epochs=1))
    saved = load_tensors(tmp_path / "run" / "checkpoint-best" / BASELINE_WEIGHTS)
    assert sum(t.numel() for t in saved.values()) == results["parameters"]["trainable"]
    assert results["effective"]["lr"] == (0.3 if method == "prompt" else 3e-4)
    assert (
        evaluate(tmp_path / "run" / "checkpoint-best")["validation"] == results["metrics"]["best_validation"]
    )


def test_text2text_on_t5_with_the_paper_protocol(assets, tmp_path):
    results = train(config(assets, tmp_path / "run", backbone=assets["t5"], protocol="paper", epochs=1))
    assert results["effective"]["format"] == "text2text"
    assert results["data"]["sizes"] == {"train": 48, "validation": 12, "test": 12}
    assert results["metrics"]["test"] is not None and 0 <= results["metrics"]["test"]["score"] <= 100
    assert [r["split"] for r in records(tmp_path / "run") if r["type"] == "eval"] == ["validation", "test"]
    again = evaluate(tmp_path / "run")
    assert again["test"] == results["metrics"]["test"]


@pytest.mark.parametrize("fmt", ["classification", "causal"])
def test_decoder_only_formats(assets, tmp_path, fmt):
    results = train(config(assets, tmp_path / "run", backbone=assets["llama"], format=fmt, epochs=1))
    head = {"classification": "sequence_classification", "causal": "causal_lm"}[fmt]
    assert results["effective"]["head"] == head and results["metrics"]["best_validation"] is not None


@pytest.mark.parametrize("init", ["magnitude", "fisher"])
def test_pruned_initialisation(assets, tmp_path, init):
    """Fisher gets training batches as calibration data. The init phase stays out of the "train" peak; on CPU a
    Fisher init is not profiled (the profiler slows it ~10x), so its run has no "init" phase."""
    results = train(config(assets, tmp_path / "run", init=init, epochs=1, memory_steps=1))
    phases = results["memory"]["phases"]["phases"]
    expected = {"train", "eval"} if init == "fisher" else {"init", "train", "eval"}
    assert set(phases) == expected and results["memory"]["peak_train_bytes"] == phases["train"]["peak_bytes"]
    assert (
        json.loads((tmp_path / "run" / "checkpoint-best" / "ladder_config.json").read_text())["init"] == init
    )
    assert evaluate(tmp_path / "run")["validation"] == results["metrics"]["best_validation"]


def test_format_must_fit_the_backbone(assets, tmp_path):
    with pytest.raises(ConfigError, match="text2text needs an encoder-decoder"):
        train(config(assets, tmp_path / "a", format="text2text"))
    with pytest.raises(ConfigError, match="causal needs a decoder-only"):
        train(config(assets, tmp_path / "b", backbone=assets["t5"], format="causal"))


def test_pruning_options_reach_the_ladder_config(monkeypatch):
    """--pruning-chain and --fisher-samples flow from the command line through TrainConfig into LadderConfig."""
    from laddertune.cli import build_parser
    from laddertune.cli import train as cli_train
    from laddertune.training import build

    args = build_parser().parse_args(
        [
            "train",
            "--task",
            "rte",
            "--init",
            "magnitude",
            "--pruning-chain",
            "authors",
            "--fisher-samples",
            "7",
        ]
    )
    config = cli_train.config_from_args(args)
    assert isinstance(config.method, LadderConfig)  # the method's options are the side network's config
    assert (config.method.pruning_chain, config.method.fisher_samples) == ("authors", 7)
    seen = {}
    monkeypatch.setattr(build, "load_backbone_for", lambda *a, **k: torch.nn.Identity())
    monkeypatch.setattr(
        ladder_method, "get_ladder_model", lambda b, cfg, calibration_data=None: seen.setdefault("cfg", cfg)
    )
    build.build_model(config, None, "sequence_classification", None)
    assert (seen["cfg"].init, seen["cfg"].pruning_chain, seen["cfg"].fisher_samples) == (
        "magnitude",
        "authors",
        7,
    )
    with pytest.raises(ConfigError, match="pruning_chain"):
        TrainConfig.from_flat(task="rte", pruning_chain="mine")
    with pytest.raises(ConfigError, match="fisher_samples"):
        TrainConfig.from_flat(task="rte", fisher_samples=0)


def test_a_model_predicting_one_class_is_flagged_in_its_metrics(tmp_path):
    class Constant(torch.nn.Module):  # always class 1: scores the share of label 1, having learned nothing
        def forward(self, input_ids, attention_mask=None, **kwargs):
            return SimpleNamespace(logits=torch.tensor([[0.0, 1.0]]).expand(input_ids.shape[0], 2))

    save_tokenizer(tmp_path)
    tok = T.AutoTokenizer.from_pretrained(tmp_path)
    rows = [{"text": "a cat", "text_pair": "a dog", "label": int(i % 3 != 0)} for i in range(9)]
    metrics = evaluate_examples(
        Constant(), rows, spec=TASKS["rte"], fmt="classification", tokenizer=tok, batch_size=4, max_length=16
    )
    assert metrics[MAJORITY] == 100.0 and round(metrics["accuracy"], 2) == 66.67
    assert MAJORITY not in format_metrics(metrics)
