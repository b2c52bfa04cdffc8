"""`laddertune serve` over HTTP on 127.0.0.1 with tiny checkpoints: the official openai client (completions, chat,
streams, n > 1), classification, JSON errors, 429 when the queue is full, a client that leaves frees its place, a
failing request fails alone, timeouts, loading and unloading under the models root, and refusals in one line."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import torch
import uvicorn
from serve_assets import LABELS, backbone_folder, classifier_checkpoint, lm_checkpoint
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)
from tiny_tokenizers import ID

from laddertune.cli import main
from laddertune.errors import CheckpointError
from laddertune.serve import ServedModels, create_app
from laddertune.serve.batching import MixedBatch
from laddertune.serve.prompts import chat_prompt, completion_prompt


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    backbone = backbone_folder(root)
    other = tmp_path_factory.mktemp("other")
    return {
        "root": root,
        "backbone": backbone,
        "alpha": lm_checkpoint(root, backbone, "alpha", 1),
        "beta": lm_checkpoint(root, backbone, "beta", 2, max_new_tokens=8),
        "senti": classifier_checkpoint(root, backbone, "senti", 3),
        "nli": classifier_checkpoint(root, backbone, "nli", 4, pair=True),
        "gamma": lm_checkpoint(root, backbone, "gamma", 5),
        "foreign": lm_checkpoint(other, backbone_folder(other, seed=1), "foreign", 6),
    }


@pytest.fixture(scope="module")
def served(assets) -> ServedModels:
    names = ("alpha", "beta", "senti", "nli")
    return ServedModels.open({n: assets[n] for n in names}, models_root=assets["root"])


@contextlib.contextmanager
def running(served, **options):
    """The app on a free port of 127.0.0.1, uvicorn in a thread; yields (base url, app)."""
    app = create_app(served, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def call(url: str, path: str, body=None, *, raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a GET (no body) or POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def direct(served, name: str, ids: list[int], max_new_tokens: int, **sampling) -> str:
    """What the side network's own generate() answers (greedy unless told), decoded as the server decodes."""
    model = served.get(name).model
    x = torch.tensor([ids])
    out = model.generate(x, torch.ones_like(x), max_new_tokens=max_new_tokens, pad_token_id=0, **sampling)
    return served.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


@pytest.fixture
def slow_steps(monkeypatch):
    """Every decoding step takes 50 ms more: requests stay in the batch long enough to be watched."""
    real = MixedBatch.step

    def step(self, tokens):
        time.sleep(0.05)
        return real(self, tokens)

    monkeypatch.setattr(MixedBatch, "step", step)


def test_openai_client_completions_chat_streams_and_choices(served):
    tok, ctx = served.tokenizer, served.max_context
    with running(served, max_batch=8) as (url, _):
        c = client(url)
        assert {m.id for m in c.models.list()} == {"alpha", "beta", "senti", "nli"}
        assert c.models.retrieve("senti").id == "senti"
        for name, prompt in (("alpha", "What is the capital of France ?"), ("beta", "Hi")):
            got = c.completions.create(model=name, prompt=prompt, max_tokens=6)
            ids = completion_prompt(served.get(name), tok, prompt, 6, ctx)
            assert got.choices[0].text == direct(served, name, ids, 6)
            assert got.usage.prompt_tokens == len(ids) and got.model == name
        answers = {
            c.completions.create(model=n, prompt="Be nice", max_tokens=6).choices[0].text
            for n in ("alpha", "beta")
        }
        assert len(answers) == 2  # two side networks, two answers
        messages = [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"}]
        chat = c.chat.completions.create(model="beta", messages=messages)  # max_tokens: the checkpoint's 8
        ids = chat_prompt(served.get("beta"), tok, messages, 8, ctx)
        assert chat.choices[0].message.content == direct(served, "beta", ids, 8)
        assert chat.choices[0].message.role == "assistant"
        assert chat.usage.completion_tokens <= 8 and chat.choices[0].finish_reason in ("stop", "length")
        # a stream carries the same text, piece by piece, and one finish reason
        chunks = list(c.chat.completions.create(model="beta", messages=messages, stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == chat.choices[0].message.content
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == [
            chat.choices[0].finish_reason
        ]
        stream = c.completions.create(model="alpha", prompt=["Hi", "Bye"], max_tokens=4, stream=True,
                                      stream_options={"include_usage": True})  # fmt: skip
        pieces = {0: "", 1: ""}
        usage = None
        for ch in stream:
            usage = ch.usage or usage
            for choice in ch.choices:
                pieces[choice.index] += choice.text
        for i, prompt in enumerate(("Hi", "Bye")):
            assert pieces[i] == direct(
                served, "alpha", completion_prompt(served.get("alpha"), tok, prompt, 4, ctx), 4
            )
        assert usage is not None and usage.completion_tokens >= 2
        # n > 1 with sampling: seeded choices are reproducible and choice j draws as generate() seeded seed + j
        kw = dict(model="alpha", prompt="Hi", max_tokens=6, n=3, temperature=1.5, seed=11)
        first, again = c.completions.create(**kw), c.completions.create(**kw)
        texts = [ch.text for ch in first.choices]
        assert len(texts) == 3 and texts == [ch.text for ch in again.choices]
        ids = completion_prompt(served.get("alpha"), tok, "Hi", 6, ctx)
        for j in range(3):
            torch.manual_seed(11 + j)
            assert texts[j] == direct(served, "alpha", ids, 6, do_sample=True, temperature=1.5)
        # stop sequences end the text before them
        full = c.completions.create(model="alpha", prompt="Hi", max_tokens=6).choices[0].text
        stop = full.split()[1] if len(full.split()) > 1 else full[-1]
        cut = c.completions.create(model="alpha", prompt="Hi", max_tokens=6, stop=[stop]).choices[0]
        assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
        status, health = call(url, "/health")
        assert status == 200 and health["status"] == "ok" and health["running"] == 0
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
        assert 'laddertune_requests_total{endpoint="/v1/completions",status="200"}' in metrics
        assert "laddertune_tokens_per_second" in metrics and "laddertune_step_rows_bucket" in metrics


def test_classify_answers_as_the_side_network_alone(served):
    with running(served) as (url, _):
        status, body = call(
            url, "/v1/classify", {"model": "senti", "input": ["Hi", "What is the capital of France ?"]}
        )
        assert status == 200 and [d["index"] for d in body["data"]] == [0, 1]
        side = served.get("senti")
        batch = side.collate([{"text": "What is the capital of France ?", "text_pair": None, "label": 0}])
        batch.pop("labels")
        with torch.inference_mode():
            probs = side.model(**batch).logits.softmax(-1)[0].tolist()
        got = body["data"][1]
        assert set(got["probabilities"]) == set(LABELS) and got["label"] == LABELS[got["label_id"]]
        assert [got["probabilities"][n] for n in LABELS] == pytest.approx(probs, abs=1e-5)
        status, body = call(url, "/v1/classify", {"model": "nli", "input": [["Hi", "Hello"], ["Bye", "Hi"]]})
        assert status == 200 and len(body["data"]) == 2
        status, body = call(url, "/v1/classify", {"model": "nli", "input": ["Hi"]})
        assert status == 400 and "pair" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "Hi"}, 404, "not served"),
        ("/v1/completions", {"model": "alpha", "prompt": "Hi", "n": 0}, 400, "n:"),
        ("/v1/completions", {"model": "alpha", "prompt": "Hi", "temperature": 7}, 400, "temperature"),
        (
            "/v1/completions",
            {"model": "alpha", "prompt": "Hi", "logprobs": 2},
            400,
            "logprobs is not supported",
        ),
        ("/v1/completions", {"model": "alpha", "prompt": "Hi " * 40}, 400, "longer than"),
        ("/v1/completions", {"model": "alpha", "prompt": "Hi", "max_tokens": 63}, 400, "no room"),
        ("/v1/completions", {"model": "alpha"}, 400, "prompt"),
        ("/v1/completions", {"model": "senti", "prompt": "Hi"}, 400, "/v1/classify"),
        ("/v1/chat/completions", {"model": "alpha", "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "role",
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "assistant", "content": "x"}]},
            400,
            "last",
        ),
        ("/v1/classify", {"model": "alpha", "input": ["Hi"]}, 400, "generation model"),
        ("/v1/classify", {"model": "senti", "input": []}, 400, "input: give a text"),
        ("/v1/models/unload", {"model": "nope"}, 404, "not served"),
    ],
)
def test_bad_requests_get_a_json_error_and_the_server_goes_on(served, path, body, status, words):
    with running(served) as (url, _):
        got, reply = call(url, path, body)
        assert got == status, reply
        message = reply["error"]["message"]
        assert words in message and "\n" not in message and "Traceback" not in message
        assert call(url, "/v1/completions", {"model": "alpha", "prompt": "Hi", "max_tokens": 2})[0] == 200


def test_malformed_json_is_a_400(served):
    with running(served) as (url, _):
        status, reply = call(url, "/v1/completions", raw=b"{not json")
        assert status == 400 and reply["error"]["type"] == "invalid_request_error"


def wait_for(url: str, predicate, seconds: float = 10.0) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        health = call(url, "/health")[1]
        if predicate(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"not reached: {health}")


def test_a_full_queue_answers_429(served, slow_steps):
    with running(served, max_batch=1, max_queue=1) as (url, _):
        c = client(url)
        results = {}

        def ask(key):
            results[key] = c.completions.create(model="alpha", prompt="Hi", max_tokens=20).choices[0].text

        threads = [threading.Thread(target=ask, args=(k,)) for k in ("running", "waiting")]
        threads[0].start()
        wait_for(url, lambda h: h["running"] == 1)
        threads[1].start()
        wait_for(url, lambda h: h["queue"] == 1)
        with pytest.raises(openai.RateLimitError) as refused:
            c.completions.create(model="alpha", prompt="Hi", max_tokens=2)
        assert (
            "busy" in refused.value.body["message"] and refused.value.response.headers["retry-after"] == "1"
        )
        for t in threads:
            t.join(30)
        assert results["running"] == results["waiting"] != ""


def test_a_client_that_leaves_mid_stream_frees_its_place(served, slow_steps):
    with running(served, max_batch=1) as (url, app):
        c = client(url)
        stream = c.completions.create(model="alpha", prompt="Hi", max_tokens=50, stream=True)
        next(iter(stream))
        assert call(url, "/health")[1]["running"] == 1
        stream.close()  # the client goes away after one piece of text
        wait_for(url, lambda h: h["running"] == 0)
        assert app.state.metrics.registry.get_sample_value("laddertune_cancelled_total") == 1
        done = c.completions.create(model="alpha", prompt="Hi", max_tokens=3)  # the place is free again
        assert done.choices[0].finish_reason in ("stop", "length")


def test_a_request_that_fails_inside_the_model_fails_alone(served, slow_steps, monkeypatch):
    """Three requests of two side networks join one prefill; the one whose prompt holds "cat" makes the backbone
    raise: it gets a 500 JSON error, the other two their answers."""
    model_class = type(served.get("alpha").model)
    real = model_class.run_backbone

    def run_backbone(self, stack, input_ids, **kw):
        if (input_ids == ID["cat"]).any():
            raise RuntimeError("cannot read cats")
        return real(self, stack, input_ids, **kw)

    monkeypatch.setattr(model_class, "run_backbone", run_backbone)
    with running(served, max_batch=8) as (url, app):
        c = client(url)
        results = {}

        def ask(key, name, prompt):
            try:
                results[key] = c.completions.create(model=name, prompt=prompt, max_tokens=4).choices[0].text
            except openai.APIStatusError as e:
                results[key] = e

        busy = threading.Thread(target=ask, args=("busy", "beta", "Bye"))  # keeps the engine stepping
        busy.start()
        wait_for(url, lambda h: h["running"] == 1)
        asks = [("ok1", "alpha", "Hi"), ("bad", "beta", "cat"), ("ok2", "beta", "Be nice")]
        threads = [threading.Thread(target=ask, args=a) for a in asks]
        for t in threads:
            t.start()
        for t in [busy, *threads]:
            t.join(30)
    assert isinstance(results["bad"], openai.InternalServerError)
    assert "cannot read cats" in results["bad"].body["message"]
    tok, ctx = served.tokenizer, served.max_context
    for key, name, prompt in [("busy", "beta", "Bye"), *[a for a in asks if a[0] != "bad"]]:
        assert results[key] == direct(
            served, name, completion_prompt(served.get(name), tok, prompt, 4, ctx), 4
        )
    assert app.state.metrics.registry.get_sample_value("laddertune_failures_total") == 1


def test_a_request_past_its_timeout_gets_504(served, slow_steps):
    with running(served, timeout=0.2) as (url, _):
        status, reply = call(url, "/v1/completions", {"model": "alpha", "prompt": "Hi", "max_tokens": 40})
        assert status == 504 and "timed out" in reply["error"]["message"]


def test_models_load_and_unload_only_under_the_root(served, assets, tmp_path):
    root = assets["root"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with running(served) as (url, _):
        status, card = call(url, "/v1/models/load", {"model": "gamma", "path": "gamma/checkpoint-best"})
        assert status == 200 and card["id"] == "gamma" and card["task"] == "generation"
        assert call(url, "/v1/completions", {"model": "gamma", "prompt": "Hi", "max_tokens": 2})[0] == 200
        assert call(url, "/v1/models/load", {"model": "gamma", "path": "gamma/checkpoint-best"})[0] == 400
        assert call(url, "/v1/models/unload", {"model": "gamma"}) == (
            200, {"id": "gamma", "object": "model", "deleted": True},
        )  # fmt: skip
        assert call(url, "/v1/completions", {"model": "gamma", "prompt": "Hi"})[0] == 404
        for path in ("../outside", str(outside), "escape", str(assets["foreign"])):
            status, reply = call(url, "/v1/models/load", {"model": "x", "path": path})
            assert status == 403 and "outside the models root" in reply["error"]["message"], path
        status, reply = call(url, "/v1/models/load", {"model": "x", "path": "nothing/here"})
        assert status == 400 and "no checkpoint folder" in reply["error"]["message"]
    closed = ServedModels(served.backbone, served.tokenizer, max_context=64)
    with pytest.raises(PermissionError, match="--models-root"):
        closed.load_from_root("x", "gamma")


def test_a_checkpoint_of_another_backbone_is_refused_in_one_line(served, assets, capsys):
    with pytest.raises(CheckpointError, match="this backbone differs") as refused:
        served.load("foreign", assets["foreign"])
    assert "\n" not in str(refused.value) and "foreign" not in served.names()
    argv = [
        "serve",
        "--checkpoint",
        f"a={assets['alpha']}",
        "--checkpoint",
        str(assets["foreign"]),
        "--port",
        "0",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "this backbone differs" in err[-1]


def test_a_side_that_reruns_the_backbones_top_layers_is_refused_in_one_line(served, assets, tmp_path):
    """Re-entry runs the backbone's top layers once more per side network; the shared backbone pass does not."""
    path = lm_checkpoint(tmp_path, assets["backbone"], "reentry", 7, reentry_layers=1)
    with pytest.raises(CheckpointError, match="reentry_layers=1") as refused:
        served.load("reentry", path)
    assert "\n" not in str(refused.value) and "reentry" not in served.names()


def test_sigterm_lets_a_running_stream_finish_then_exits(assets, tmp_path):
    """The real command in a subprocess (steps slowed to 50 ms): SIGTERM in the middle of a stream; the stream ends
    with its finish reason and [DONE], new connections are refused, and the process exits 0."""
    import signal
    import subprocess
    import sys

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    script = (
        "import time, sys\n"
        "from laddertune.serve.batching import MixedBatch\n"
        "real = MixedBatch.step\n"
        "MixedBatch.step = lambda self, tokens: (time.sleep(0.05), real(self, tokens))[1]\n"
        "from laddertune.cli import main\n"
        f"sys.exit(main(['serve', '--checkpoint', 'alpha={assets['alpha']}', '--port', '{port}', '--threads', '1']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 120
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                if call(url, "/health")[0] == 200:
                    break
            time.sleep(0.2)
        stream = client(url).completions.create(model="alpha", prompt="Hi", max_tokens=30, stream=True)
        chunks = iter(stream)
        next(chunks)
        proc.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert rest and rest[-1].choices[0].finish_reason in ("stop", "length")
        assert proc.wait(30) == -signal.SIGTERM
        with pytest.raises(OSError):
            call(url, "/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
