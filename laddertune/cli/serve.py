"""``laddertune serve``: many checkpoints of one backbone behind one OpenAI-compatible HTTP server."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, import_optional
from .train import NO_PROGRESS, quiet

BACKBONE_DTYPES = ("float32", "bfloat16", "float16", "int8", "nf4")


def register(subparsers) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="serve checkpoints of one backbone over HTTP (OpenAI-compatible)",
        description="One process, one backbone, many side networks: /v1/completions, /v1/chat/completions, "
        "/v1/classify, /v1/models, /health, /metrics. Requests for different checkpoints share every backbone pass.",
    )
    p.add_argument(
        "--checkpoint", action="append", required=True, metavar="NAME=DIR",
        help="a run folder or checkpoint folder to serve as model NAME (a bare DIR is named after its run folder); "
        "repeat it: every checkpoint must be of the same backbone (its fingerprint is checked)",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--backbone", default=None, help="load this backbone instead of the recorded one")
    p.add_argument(
        "--backbone-dtype", choices=BACKBONE_DTYPES, default=None,
        help="the frozen backbone's dtype (default: the one the first checkpoint trained in)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="where the models run: cpu, cuda, cuda:1...")
    p.add_argument("--max-batch-size", type=int, default=32, help="rows (request choices) decoded together")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting at most; more get 429")
    p.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds a request may take (then 504)"
    )
    p.add_argument(
        "--max-context", type=int, default=None,
        help="longest prompt plus answer in tokens (default: the backbone's positions, at most 2048)",
    )  # fmt: skip
    p.add_argument(
        "--models-root", default=None,
        help="allow POST /v1/models/load of checkpoints under this folder (and nothing outside it)",
    )  # fmt: skip
    p.add_argument(
        "--trust-remote-code", action="store_true", help="let transformers run the backbone's own code"
    )
    p.add_argument(
        "--allow-pickle", action="store_true", help="load a backbone whose weights are pickle files"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    p.set_defaults(func=run_serve)


def parse_checkpoints(values: list[str]) -> dict[str, str]:
    """``NAME=DIR`` or ``DIR`` values -> ``{name: dir}``; a bare DIR is named after its run folder."""
    from ..serve.registry import run_name

    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = run_name(value), value
        if not name or not path:
            raise ConfigError(f"--checkpoint {value!r}: give NAME=DIR or DIR")
        if name in out:
            raise ConfigError(f"--checkpoint: two checkpoints are named {name!r}; name them NAME=DIR")
        out[name] = path
    return out


def run_serve(args: argparse.Namespace) -> int:
    for value, flag in ((args.max_batch_size, "--max-batch-size"), (args.max_queue, "--max-queue")):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.request_timeout <= 0:
        raise ConfigError(f"--request-timeout must be > 0, got {args.request_timeout}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        import_optional(module, "serve", "laddertune serve")
    import uvicorn

    from ..serve import ServedModels, create_app

    quiet(args)
    served = ServedModels.open(
        parse_checkpoints(args.checkpoint),
        backbone=args.backbone,
        backbone_dtype=args.backbone_dtype,
        device=args.device,
        max_context=args.max_context,
        models_root=args.models_root,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    app = create_app(
        served, max_batch=args.max_batch_size, max_queue=args.max_queue, timeout=args.request_timeout
    )
    names = ", ".join(served.names())
    print(f"serving {names} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=None
    )
    # SIGTERM/SIGINT: uvicorn stops accepting, lets running requests finish, stops the engine, then raises the
    # signal again (the process ends by it, as a supervisor expects)
    uvicorn.Server(config).run()
    return 0
