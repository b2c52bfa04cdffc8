"""Serving four SmolLM2 tasks: one `laddertune serve` of four side networks against four single-task servers and
against a PEFT multi-adapter server, under the same mixed load from 1, 8 and 32 concurrent clients.

    python benchmarks/serve_prepare.py          # the checkpoints (once)
    python benchmarks/serve_throughput.py [--clients 1 8 32] [--seconds 40] [--configs multi single peft]

Configurations, each started on 127.0.0.1, measured, and stopped before the next (one at a time on the same cores):

* ``multi``: ONE ``laddertune serve`` with the four LST checkpoints (``--threads 2``): every backbone pass is shared
  by the requests of all four tasks (continuous batching across side networks).
* ``single``: FOUR ``laddertune serve`` processes, one LST checkpoint each (``--threads 1`` each, so that together
  they ask for 4 threads on the 2 cores rather than 8); each holds its own backbone and batches its own task.
* ``peft``: ONE server of the four LoRA adapters on one backbone, batching the waiting requests of one adapter at a
  time (``set_adapter``, then ``generate()``), ``benchmarks/serve_peft_baseline.py`` (``--threads 2``).

The load: each client sends ``/v1/completions`` requests one after another (closed loop), each a question of the
instruction sample's validation and training files picked by a seeded generator (the same sequence for every
configuration), to the model of its kind (``max_tokens`` 16, greedy): the four tasks mixed. A level runs for
``--seconds`` after a warm-up, and at most ``--max-requests`` requests. Measured: generated tokens per second
(the servers' ``usage.completion_tokens``), requests per second, latency p50/p99 (client side), errors.

Writes ``benchmarks/results/serve_throughput.json`` and ``.md``.
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "serve_bench"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("capital", "plural", "opposite", "arithmetic")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions() -> list[tuple[str, str]]:
    """(task, prompt) of every question of the four tasks."""
    out = []
    for task in TASKS:
        for split in ("validation", "train"):
            for line in (OUT / "data" / f"{task}-{split}.jsonl").read_text().splitlines():
                out.append((task, json.loads(line)["prompt"]))
    return out


def wait_healthy(port: int, procs: list, seconds: float = 600) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a server exited while starting: " + procs[0].stderr.read()[-2000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"no server on port {port} after {seconds} s")


def start(config: str) -> tuple[list, dict]:
    """Start ``config``'s server processes; returns (processes, {task: port})."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    serve = [sys.executable, "-m", "laddertune.cli", "serve", "--no-progress"]
    ckpt = {t: str(OUT / f"lst-{t}") for t in TASKS}
    if config == "multi":
        port = free_port()
        argv = [
            *serve,
            "--port",
            str(port),
            "--threads",
            "2",
            *[f"--checkpoint={t}={ckpt[t]}" for t in TASKS],
        ]
        procs, ports = [_spawn(argv, env)], dict.fromkeys(TASKS, port)
    elif config == "single":
        ports = {t: free_port() for t in TASKS}
        procs = [
            _spawn([*serve, "--port", str(ports[t]), "--threads", "1", f"--checkpoint={t}={ckpt[t]}"], env)
            for t in TASKS
        ]
    else:
        port = free_port()
        argv = [sys.executable, str(ROOT / "benchmarks" / "serve_peft_baseline.py"), "--port", str(port)]
        procs, ports = [_spawn(argv, env)], dict.fromkeys(TASKS, port)
    for port in set(ports.values()):
        wait_healthy(port, procs)
    return procs, ports


def rss_mib(procs: list) -> float:
    """The servers' resident memory together (Linux ``/proc``), MiB."""
    total = 0
    for p in procs:
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])  # kB
    return round(total / 1024, 1)


def _spawn(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )


def stop(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def ask(conn: http.client.HTTPConnection, task: str, prompt: str, max_tokens: int) -> dict:
    body = json.dumps({"model": task, "prompt": prompt, "max_tokens": max_tokens})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    reply = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {reply['error']['message']}")
    return reply


def level(ports: dict, clients: int, seconds: float, max_requests: int, max_tokens: int, pool: list) -> dict:
    """``clients`` closed-loop clients for ``seconds`` (at most ``max_requests`` requests in all)."""
    latencies, tokens, errors = [], [0], []
    lock, sent = threading.Lock(), [0]
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = random.Random(1000 + k)
        conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=600) for p in set(ports.values())}
        while time.monotonic() < deadline:
            with lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
            task, prompt = rng.choice(pool)
            port = ports[task]
            t0 = time.perf_counter()
            try:
                try:
                    reply = ask(conns[port], task, prompt, max_tokens)
                except (OSError, http.client.HTTPException):
                    # the server closed a connection idle past its keep-alive time (uvicorn: 5 s), which happens
                    # with one connection per server and four servers: reconnect and send it again, once
                    conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                    reply = ask(conns[port], task, prompt, max_tokens)
            except Exception as e:  # noqa: BLE001 (counted, reported)
                errors.append(str(e))
                conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                tokens[0] += reply["usage"]["completion_tokens"]

    start_time = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start_time
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_seconds": round(wall, 2),
        "completion_tokens": tokens[0],
        "tokens_per_second": round(tokens[0] / wall, 2),
        "requests_per_second": round(len(latencies) / wall, 3),
        "mean_completion_tokens": round(tokens[0] / max(1, len(latencies)), 2),
        "latency_p50_seconds": round(_quantile(latencies, 0.5), 3),
        "latency_p99_seconds": round(_quantile(latencies, 0.99), 3),
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["multi", "single", "peft"])
    p.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--max-requests", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--name", default="serve_throughput")
    p.add_argument(
        "--memory-only", action="store_true", help="start each config, record its resident memory, stop it"
    )
    args = p.parse_args(argv)
    pool = questions()
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"configs": {}}
    for config in args.configs:
        t0 = time.perf_counter()
        procs, ports = start(config)
        print(f"[{config}] up in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.memory_only:
            try:
                for task in TASKS:  # every side network has run once
                    ask(http.client.HTTPConnection("127.0.0.1", ports[task], timeout=600), task, "Hi", 2)
                results.setdefault("rss_mib", {})[config] = rss_mib(procs)
                print(f"[{config}] resident memory {results['rss_mib'][config]} MiB", flush=True)
            finally:
                stop(procs)
            path.write_text(json.dumps(results, indent=2) + "\n")
            continue
        try:
            for task in TASKS:  # warm-up: every task once
                ask(http.client.HTTPConnection("127.0.0.1", ports[task], timeout=600), task, "Hi", 2)
            rows = []
            for clients in args.clients:
                load = os.getloadavg()[0]  # the cores are shared: what else ran shows here
                row = level(ports, clients, args.seconds, args.max_requests, args.max_tokens, pool)
                row["load_average_1min_before"] = round(load, 2)
                print(f"[{config}] {json.dumps(row)}", flush=True)
                rows.append(row)
        finally:
            stop(procs)
        results["configs"][config] = rows
        results["setup"] = {
            "seconds_per_level": args.seconds, "max_requests_per_level": args.max_requests,
            "max_tokens": args.max_tokens, "questions": len(pool), "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        }  # fmt: skip
        path.write_text(json.dumps(results, indent=2) + "\n")
    write_md(results, RESULTS / f"{args.name}.md")


def write_md(results: dict, path: Path) -> None:
    configs = results["configs"]
    lines = [
        "# Serving four SmolLM2 tasks: one backbone for all, against four servers and PEFT adapters",
        "",
        "`python benchmarks/serve_throughput.py` (checkpoints: `python benchmarks/serve_prepare.py`); 2 CPU cores "
        "shared with other jobs, so absolute numbers move with their load. Mixed load over the four tasks, "
        "closed-loop clients, greedy, at most 16 new tokens.",
        "",
        "| config | clients | requests | tokens/s | requests/s | mean new tokens | p50 s | p99 s | errors | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in configs.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['clients']} | {r['requests']} | {r['tokens_per_second']} | "
                f"{r['requests_per_second']} | {r['mean_completion_tokens']} | {r['latency_p50_seconds']} | "
                f"{r['latency_p99_seconds']} | {r['errors']} | {r.get('load_average_1min_before', '')} |"
            )
    if "multi" in configs:
        lines += ["", "Ratios of `multi` (tokens/s):", ""]
        for other in ("single", "peft"):
            if other not in configs:
                continue
            for a, b in zip(configs["multi"], configs[other], strict=False):
                ratio = (
                    a["tokens_per_second"] / b["tokens_per_second"]
                    if b["tokens_per_second"]
                    else float("nan")
                )
                lines.append(f"- against `{other}` at {a['clients']} clients: {ratio:.2f}x")
    if "rss_mib" in results:
        lines += ["", "Resident memory of each configuration's server processes together, after every model answered once "
                  "(`--memory-only`):", ""]  # fmt: skip
        lines += [f"- `{name}`: {mib} MiB" for name, mib in results["rss_mib"].items()]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
