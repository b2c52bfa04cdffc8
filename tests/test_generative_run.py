"""Generative fine-tuning end to end on a tiny Llama with a ChatML tokenizer (no downloads): `laddertune train`
on chat rows with no other flag, evaluation (loss, perplexity, generated answers), prediction and evaluation of the
run folder, for LST and a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)
from tiny_tokenizers import WORDS, tiny_tokenizer

from laddertune.cli import main
from laddertune.training import evaluate, predict_file, train
from laddertune.training.config import TrainConfig

PAIRS = [("Hi", "Hello"), ("Bye", "Bye"), ("What is the capital of France ?", "Paris"), ("Be nice", "Hello")]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("generative")
    config = T.LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(0)
    T.LlamaForCausalLM(config).save_pretrained(root / "llama")
    tiny_tokenizer().save_pretrained(root / "llama")
    chats = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for _ in range(6)
        for q, a in PAIRS
    ]
    (root / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    prompts = [{"prompt": q, "completion": a} for q, a in PAIRS * 4]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    (root / "ask.jsonl").write_text(
        json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"prompt": "Bye"}) + "\n"
    )
    return {"root": root, "llama": str(root / "llama")}


def test_chat_rows_train_with_no_other_flag(assets, tmp_path, capsys):
    """`--train-file chat.jsonl` alone: the task is custom, the layout chat, the head the backbone's LM head."""
    out = tmp_path / "run"
    argv = ["train", "--backbone", assets["llama"], "--train-file", str(assets["root"] / "chat.jsonl"),
            "--output-dir", str(out), "--epochs", "2", "--batch-size", "4", "--memory-steps", "0", "--lr", "0.01"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "custom" and results["effective"]["format"] == "chat"
    assert results["effective"]["head"] == "causal_lm"
    history = results["metrics"]["validation"]
    assert {"loss", "perplexity", "score"} <= set(history[0]["metrics"])
    assert history[-1]["metrics"]["loss"] < history[0]["metrics"]["loss"] + 1e-6  # it learns something
    task = json.loads((out / "checkpoint-best" / "task.json").read_text())
    assert task["generative"]["layout"] == "chat" and task["head"] == "causal_lm"
    assert task["generation"]["max_new_tokens"] == 32


@pytest.mark.parametrize("method", ["lst", "lora"])
def test_generated_answers_are_scored_predicted_and_evaluated(assets, tmp_path, method):
    out = tmp_path / method
    config = TrainConfig.from_flat(
        backbone=assets["llama"],
        train_file=str(assets["root"] / "pairs.jsonl"),
        method=method,
        epochs=2,
        batch_size=4,
        memory_steps=0,
        output_dir=str(out),
        eval_generate=True,
        max_new_tokens=3,
        max_length=32,
        **({"lora_rank": 4} if method == "lora" else {}),
    )
    seen = []
    results = train(
        config, metric=lambda preds, refs: {"answered": 100.0 * sum(bool(p) for p in preds) / len(preds)}
    )
    best = results["metrics"]["best_validation"]
    assert {"loss", "perplexity", "exact_match", "f1", "rougeL", "answered", "score"} <= set(best)
    assert best["score"] == best["exact_match"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and {"reference", "generated"} <= set(samples[0])
    answers = predict_file(out, assets["root"] / "ask.jsonl", generation={"max_new_tokens": 2})
    assert len(answers) == 2 and all(isinstance(a["generated"], str) for a in answers)
    seen.append(answers)
    scores = evaluate(out, generate=True, max_new_tokens=3)
    assert scores["validation"]["exact_match"] == pytest.approx(best["exact_match"])
    assert scores["validation"]["loss"] == pytest.approx(best["loss"], rel=1e-5)


def test_a_copied_run_folder_predicts_from_the_command_line(assets, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--backbone", assets["llama"], "--train-file", str(assets["root"] / "pairs.jsonl"),
            "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--memory-steps", "0"]  # fmt: skip
    assert main(argv) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "run").symlink_to(out)  # reading through another path is enough: the folder records no path
    rc = main(["predict", "--checkpoint", str(copy / "run"), "--input", str(assets["root"] / "ask.jsonl"),
               "--max-new-tokens", "2", "--no-progress"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and [set(json.loads(line)) for line in lines[-2:]] == [{"generated"}, {"generated"}]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "Hi"}], "no layout fits|columns"),
        (
            [{"messages": [{"role": "robot", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}],
            "role",
        ),
        ([{"prompt": "Hi", "completion": ""}], "empty"),
    ],
)
def test_bad_generative_rows_are_one_line_errors(assets, tmp_path, capsys, rows, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    argv = ["train", "--backbone", assets["llama"], "--train-file", str(data), "--format", "prompt_completion"
            if "completion" in rows[0] else "chat" if "messages" in rows[0] else "prompt_completion",
            "--output-dir", str(tmp_path / "run"), "--memory-steps", "0"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_backbone_without_a_chat_template_refuses_chat_rows(assets, tmp_path, capsys):
    folder = tmp_path / "plain"
    T.AutoModelForCausalLM.from_pretrained(assets["llama"]).save_pretrained(folder)
    tiny_tokenizer(chat=False).save_pretrained(folder)
    argv = ["train", "--backbone", str(folder), "--train-file", str(assets["root"] / "chat.jsonl"),
            "--output-dir", str(tmp_path / "run"), "--memory-steps", "0"]  # fmt: skip
    assert main(argv) == 2
    assert "chat template" in capsys.readouterr().err
    template = tmp_path / "chatml.jinja"
    from tiny_tokenizers import CHATML

    template.write_text(CHATML)
    assert main([*argv, "--chat-template", str(template), "--epochs", "1"]) == 0
    task = json.loads((tmp_path / "run" / "checkpoint-best" / "task.json").read_text())
    assert task["generative"]["chat_template"] == CHATML  # the checkpoint carries it


def test_generative_flags_check_their_data(tmp_path):
    from laddertune.errors import ConfigError

    with pytest.raises(ConfigError, match="reads generative rows from a train_file"):
        TrainConfig.from_flat(task="rte", format="chat")
    with pytest.raises(ConfigError, match="needs train_file"):
        TrainConfig.from_flat(task="custom")
    assert TrainConfig.from_flat(train_file=str(tmp_path / "x.jsonl")).data.task == "custom"
    assert Path(tmp_path).exists()


def test_generate_streams_what_predict_answers(assets, tmp_path, capsys, monkeypatch):
    """`laddertune generate` renders typed prompts as the checkpoint's training rows and streams the answers that
    `predict` gives for those rows; it refuses what it cannot answer with one line."""
    import io

    chat, pairs = tmp_path / "chat", tmp_path / "pairs"
    for out, rows in ((chat, "chat.jsonl"), (pairs, "pairs.jsonl")):
        argv = ["train", "--backbone", assets["llama"], "--train-file", str(assets["root"] / rows),
                "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--memory-steps", "0",
                "--lr", "0.0001", "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    capsys.readouterr()
    asked = tmp_path / "asked.jsonl"
    turns = [[{"role": "user", "content": "Hi"}], [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Bye"}]]  # fmt: skip
    asked.write_text("".join(json.dumps({"messages": m}) + "\n" for m in turns))
    expected = [a["generated"] for a in predict_file(chat, asked, generation={"max_new_tokens": 4})]
    assert main(["generate", "--checkpoint", str(chat), "Hi", "--max-new-tokens", "4", "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()
    rc = main(["generate", "--checkpoint", str(chat), "--system", "Be nice", "Bye", "--max-new-tokens", "4"])
    second = capsys.readouterr().out.splitlines()
    assert any(expected) and rc == 0 and [line.strip() for line in first + second] == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n\nBye\n"))  # one prompt a line, the empty one skipped
    assert main(["generate", "--checkpoint", str(pairs), "--max-new-tokens", "2", "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    rc = main(["generate", "--checkpoint", str(pairs), "--system", "Be nice", "Hi"])
    assert rc == 2 and "chat" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["generate", "--checkpoint", str(pairs)]) == 2 and "no prompt" in capsys.readouterr().err
