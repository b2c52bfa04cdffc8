"""No lost and no mixed-up answers: many requests to one `laddertune serve` of four side networks, some cancelled
at random, every answer checked against its side network's own greedy ``generate()``.

    python benchmarks/serve_consistency.py --backbone tiny --requests 10000
    python benchmarks/serve_consistency.py --backbone smollm2 --requests 2000   # after serve_prepare.py

``tiny``: a 2-layer Llama (width 64) with SmolLM2's tokenizer and chat template, and four side networks whose
weights are seeded perturbations (they answer differently, and rarely stop early: long answers, many steps);
``smollm2``: the four LST checkpoints of ``benchmarks/serve_prepare.py``. The server runs in its own process on
127.0.0.1. Each request sends a question of the instruction sample to one of the four models (any question to any
model, so that an answer given by the wrong side network shows) with ``max_tokens`` drawn from 1 to 16, plain or
streamed (then the text is put together from the events). A fraction of the requests is cancelled: the client
closes its connection after a random delay of 0 to 50 ms, whatever the server is doing (queued, prefilling,
decoding, streaming). Every other request must come back 200 with exactly the text of the first ``max_tokens``
tokens of ``generate(max_new_tokens=16, do_sample=False)`` on that model alone (up to its end of answer).

Writes ``benchmarks/results/serve_consistency_<backbone>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "runs" / "serve_bench"
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "laddertune" / "data" / "sample" / "instructions"
TASKS = ("capital", "plural", "opposite", "arithmetic")
LONGEST = 16


def tiny_checkpoints() -> dict[str, Path]:
    """Four side networks on a tiny Llama with SmolLM2's tokenizer (written once to runs/serve_bench/tiny)."""
    import transformers as T

    from laddertune import LadderConfig, get_ladder_model, load_backbone
    from laddertune.core.backbones import load_tokenizer
    from laddertune.data.generative_task import GenerativeTask
    from laddertune.io import write_checksums

    root = OUT / "tiny"
    paths = {t: root / t / "checkpoint-best" for t in TASKS}
    if all((p / "SHA256SUMS").is_file() for p in paths.values()):
        return paths
    tokenizer = load_tokenizer("smollm2")
    config = T.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    T.LlamaForCausalLM(config).save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    for seed, (task, folder) in enumerate(paths.items()):
        model = get_ladder_model(
            load_backbone(str(root / "llama"), "causal_lm"), LadderConfig(reduction_factor=4)
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.side.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
        model.save_pretrained(folder)
        record = {
            "version": 1, "task": task, "format": "prompt_completion", "max_length": 96,
            "backbone": str(root / "llama"), "method": "lst", "head": "causal_lm",
            "generative": GenerativeTask(layout="prompt_completion", name=task).to_dict(),
            "generation": {"eval_generate": False, "max_new_tokens": LONGEST, "num_beams": 1, "do_sample": False,
                           "temperature": 1.0, "top_p": 1.0},
        }  # fmt: skip
        (folder / "task.json").write_text(json.dumps(record))
        write_checksums(folder)
    return paths


def references(paths: dict, prompts: list[str], pairs: int, seed: int) -> dict:
    """``{(model, prompt): generated token ids}`` of ``pairs`` random (model, question) pairs, each by that side
    network's own ``generate()`` on that prompt alone."""
    from laddertune.serve import ServedModels
    from laddertune.serve.prompts import completion_prompt

    served = ServedModels.open(dict(paths))
    rng = random.Random(seed)
    chosen = rng.sample([(m, p) for m in TASKS for p in prompts], pairs)
    out = {}
    t0 = time.perf_counter()
    for name, prompt in chosen:
        side = served.get(name)
        ids = completion_prompt(side, served.tokenizer, prompt, LONGEST, served.max_context)
        x = torch.tensor([ids])
        with torch.inference_mode():
            gen = side.model.generate(
                x, torch.ones_like(x), max_new_tokens=LONGEST, do_sample=False,
                pad_token_id=served.tokenizer.pad_token_id,
            )[0, len(ids) :].tolist()  # fmt: skip
        cut = next((i for i, t in enumerate(gen) if t in side.eos), len(gen))
        out[(name, prompt)] = gen[:cut]
    print(f"{len(out)} references in {time.perf_counter() - t0:.0f} s", flush=True)
    return out, served.tokenizer


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument(
        "--pairs", type=int, default=None, help="(model, question) pairs (default: 1600 tiny, 200)"
    )
    p.add_argument("--cancel", type=float, default=0.1, help="fraction of requests cancelled")
    p.add_argument("--stream", type=float, default=0.3, help="fraction of requests streamed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = tiny_checkpoints() if args.backbone == "tiny" else {t: OUT / f"lst-{t}" for t in TASKS}
    prompts = sorted(
        {
            json.loads(line)["prompt"]
            for split in ("train", "validation")
            for line in (DATA / f"{split}.jsonl").open()
        }
    )
    pairs = args.pairs or (1600 if args.backbone == "tiny" else 200)
    expected, tokenizer = references(paths, prompts, pairs, args.seed)
    by_prompt: dict = {}
    for (_, question), ids in expected.items():
        by_prompt.setdefault(question, []).append(tuple(ids))
    shared = [answers for answers in by_prompt.values() if len(answers) > 1]
    distinct = sum(len(set(answers)) == len(answers) for answers in shared)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv_serve = [sys.executable, "-m", "laddertune.cli", "serve", "--port", str(port), "--threads", str(args.threads),
                  "--no-progress", *[f"--checkpoint={t}={paths[t]}" for t in TASKS]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(argv_serve, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait(port, server)
        report = load(port, expected, tokenizer, args)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(1.0)  # cancelled rows leave the batch at the next step
        conn.request("GET", "/health")
        report["health_after"] = json.loads(conn.getresponse().read())
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        report["server_cancelled_total"] = _metric(metrics, "laddertune_cancelled_total")
        report["server_failures_total"] = _metric(metrics, "laddertune_failures_total")
    finally:
        server.terminate()
        server.wait(60)
    report.update(backbone=args.backbone, pairs=len(expected), questions_sent_to_several_models=len(shared),
                  questions_answered_differently_by_each=distinct,
                  clients=args.clients, cancel_fraction=args.cancel, stream_fraction=args.stream)  # fmt: skip
    name = f"serve_consistency_{args.backbone}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    lines = [
        f"# No lost or mixed-up answers ({args.backbone})",
        "",
        f"`python benchmarks/serve_consistency.py --backbone {args.backbone} --requests {args.requests} "
        f"--pairs {len(expected)} --clients {args.clients} --threads {args.threads}`",
        "",
        f"- requests sent: {report['sent']} from {args.clients} clients in {report['wall_seconds']} s "
        f"({report['streamed']} streamed); cancelled by the client on purpose: {report['cancelled']}",
        f"- answers checked against the side network's own greedy generate(): {report['checked']}; equal: "
        f"{report['equal']}; different: {report['mismatched']}; lost (error or no answer): {report['lost']}",
        f"- (model, question) pairs: {report['pairs']}; of the {len(shared)} questions sent to several models, "
        f"{distinct} have a different reference answer on each (an answer from the wrong side network shows)",
        f"- server after the run: {report['health_after']}; cancelled requests it counted: "
        f"{report['server_cancelled_total']}; failures: {report['server_failures_total']} (a client that closes "
        "its connection after its answer was sent cancels nothing on the server)",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def _wait(port: int, server) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(server.stderr.read()[-2000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(1)
    raise SystemExit("the server did not start")


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def load(port: int, expected: dict, tokenizer, args) -> dict:
    """Send the requests; count what came back equal, different, lost, and what was cancelled on purpose."""
    keys = list(expected)
    counts = dict.fromkeys(("sent", "checked", "equal", "mismatched", "lost", "cancelled", "streamed"), 0)
    examples: list = []
    lock = threading.Lock()
    per_client = args.requests // args.clients

    def note(key: str, example=None) -> None:
        with lock:
            counts[key] += 1
            if example is not None and len(examples) < 10:
                examples.append(example)

    def client(k: int) -> None:
        rng = random.Random(args.seed * 1000 + k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for _ in range(per_client):
            model, prompt = rng.choice(keys)
            max_tokens = rng.randint(1, LONGEST)
            stream = rng.random() < args.stream
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}
            note("sent")
            if rng.random() < args.cancel:
                _cancelled(port, body, rng.uniform(0, 0.05))
                note("cancelled")
                continue
            want = tokenizer.decode(expected[(model, prompt)][:max_tokens], skip_special_tokens=True)
            try:
                got = _ask(conn, body)
            except Exception as e:  # noqa: BLE001 (a lost answer: counted and shown)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                note("lost", {"model": model, "prompt": prompt, "error": str(e)[:200]})
                continue
            note("checked")
            if stream:
                note("streamed")
            if got == want:
                note("equal")
            else:
                note(
                    "mismatched",
                    {"model": model, "prompt": prompt, "max_tokens": max_tokens, "got": got, "want": want},
                )

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**counts, "wall_seconds": round(time.perf_counter() - t0, 1), "examples": examples}


def _ask(conn: http.client.HTTPConnection, body: dict) -> str:
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read().decode()
    if response.status != 200:
        raise RuntimeError(f"{response.status} {raw[:200]}")
    if not body["stream"]:
        return json.loads(raw)["choices"][0]["text"]
    text, done = "", False
    for line in raw.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            text += "".join(c["text"] for c in event["choices"])
    if not done:
        raise RuntimeError("the stream ended without [DONE]")
    return text


def _cancelled(port: int, body: dict, delay: float) -> None:
    """Send the request, then close the connection after ``delay`` seconds, answer or not."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + payload)
        time.sleep(delay)


if __name__ == "__main__":
    main()
