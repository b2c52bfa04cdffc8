"""The HTTP server: FastAPI routes over one :class:`~laddertune.serve.engine.Engine`.

``POST /v1/completions``, ``POST /v1/chat/completions`` (OpenAI's; ``stream`` as server-sent events),
``GET /v1/models``, ``POST /v1/classify``, ``POST /v1/models/load`` and ``/v1/models/unload`` (under
``--models-root``), ``GET /health``, ``GET /metrics`` (Prometheus text). Every refused request is a JSON error with
a 4xx status (:class:`~laddertune.serve.protocol.RequestError`); a fault of the server is a JSON 500, never a
traceback to the client. A client that goes away cancels its request: its rows leave the batch at the next step.
FastAPI is imported when an app is made (the ``serve`` extra); the routes' annotations name its classes, so this
module evaluates annotations as it defines the routes (no ``from __future__ import annotations``).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid

from ..errors import LadderTuneError, import_optional
from .engine import Engine, Ticket
from .metrics import Metrics
from .prompts import chat_prompt, completion_prompt
from .protocol import (
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    LoadRequest,
    RequestError,
    UnloadRequest,
    unknown_model,
)
from .sampling import Sampling

logger = logging.getLogger(__name__)
POLL = 0.25  # seconds between checks that a waiting client is still there


class _Observe:
    """ASGI middleware: each request's endpoint, status and time to its last byte, into the metrics (a plain ASGI
    wrapper, not Starlette's BaseHTTPMiddleware, which gets in the way of streams and client disconnects)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_request(scope["path"], status[0], time.perf_counter() - start)


def create_app(
    served, *, max_batch: int = 32, max_queue: int = 256, timeout: float = 600.0, engine_class=Engine
):
    """The server's FastAPI app over ``served`` (:class:`~laddertune.serve.registry.ServedModels`); the engine
    thread starts and stops with the app's lifespan (uvicorn runs it; on SIGTERM uvicorn lets requests finish
    first). ``engine_class``: another scheduler with :class:`Engine`'s interface (the serving benchmark runs its
    PEFT baseline through the same routes)."""
    import_optional("fastapi", "serve", "laddertune serve")
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    metrics = Metrics()
    engine = engine_class(served, metrics, max_batch=max_batch, max_queue=max_queue)
    metrics.models.set_function(lambda: len(served.sides))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.to_thread(engine.stop)

    app = FastAPI(title="laddertune serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served, app.state.engine, app.state.metrics = served, engine, metrics
    app.add_middleware(_Observe, metrics=metrics)

    @app.exception_handler(RequestError)
    async def _request_error(request, e: RequestError):
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(RequestError(message, param=where or None).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        logger.exception("unexpected error serving %s", request.url.path)
        body = RequestError("internal server error", status=500, type="server_error").body()
        return JSONResponse(body, status_code=500)

    def side_of(name: str, kind: str):
        side = served.get(name)
        if side is None:
            raise unknown_model(name, served.names())
        if side.kind != kind:
            other = (
                "/v1/classify" if side.kind == "classification" else "/v1/completions or /v1/chat/completions"
            )
            raise RequestError(f"model {name!r} is a {side.kind} model: use {other}", param="model")
        return side

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "models": served.names(),
            "queue": engine.queue_depth,
            "running": len(engine.batch),
        }

    @app.get("/metrics")
    async def metrics_text():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(s) for s in list(served.sides.values())]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        side = served.get(name)
        if side is None:
            raise unknown_model(name, served.names())
        return _model_card(side)

    @app.post("/v1/models/load")
    async def load(body: LoadRequest):
        try:
            side = await asyncio.to_thread(served.load_from_root, body.model, body.path)
        except PermissionError as e:
            raise RequestError(str(e), status=403, type="permission_error", param="path") from None
        except LadderTuneError as e:
            raise RequestError(str(e), param="path") from None
        return _model_card(side)

    @app.post("/v1/models/unload")
    async def unload(body: UnloadRequest):
        try:
            served.unload(body.model)
        except KeyError:
            raise unknown_model(body.model, served.names()) from None
        return {"id": body.model, "object": "model", "deleted": True}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request):
        side = side_of(body.model, "classification")
        examples = body.examples(pair=side.task.has_pair)
        ticket, events = _ticket(side, examples=examples, timeout=timeout)
        engine.submit(ticket)
        data = None
        async for event in _events(ticket, events, request):
            if event["type"] == "result":
                data = event["data"]
        return {"object": "list", "model": side.name, "data": [{"index": i, **a} for i, a in enumerate(data)]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        side = side_of(body.model, "generation")
        body.check()
        max_tokens = body.max_tokens or side.settings.max_new_tokens
        prompts = [
            completion_prompt(side, served.tokenizer, p, max_tokens, served.max_context)
            for p in body.prompts()
        ]
        return await _generate(side, body, prompts, max_tokens, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        side = side_of(body.model, "generation")
        body.check()
        max_tokens = body.max_completion_tokens or body.max_tokens or side.settings.max_new_tokens
        prompt = chat_prompt(side, served.tokenizer, body.conversation(), max_tokens, served.max_context)
        return await _generate(side, body, [prompt], max_tokens, request, chat=True)

    async def _generate(side, body, prompts, max_tokens, request, *, chat: bool):
        sampling = sampling_of(body, side)
        ticket, events = _ticket(
            side, prompts=prompts, n=body.n, sampling=sampling, max_tokens=max_tokens, stop=body.stops(),
            timeout=timeout,
        )  # fmt: skip
        engine.submit(ticket)
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": side.name,
        }
        if body.stream:
            stream = _sse(ticket, events, request, head, chat, body.include_usage())
            return StreamingResponse(stream, media_type="text/event-stream")
        texts, reasons, usage = [""] * ticket.rows, [None] * ticket.rows, {}
        async for event in _events(ticket, events, request):
            if event["type"] == "delta":
                texts[event["index"]] += event["text"]
            elif event["type"] == "finish":
                reasons[event["index"]] = event["reason"]
            elif event["type"] == "done":
                usage = _usage(event)
        if chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": r,
                    "logprobs": None,
                }
                for i, (t, r) in enumerate(zip(texts, reasons, strict=True))
            ]
            return {**head, "object": "chat.completion", "choices": choices, "usage": usage}
        choices = [
            {"index": i, "text": t, "finish_reason": r, "logprobs": None}
            for i, (t, r) in enumerate(zip(texts, reasons, strict=True))
        ]
        return {**head, "object": "text_completion", "choices": choices, "usage": usage}

    return app


def sampling_of(body, side) -> list[Sampling]:
    """Each choice's :class:`Sampling`: the checkpoint's recorded settings unless the request gives ``temperature``
    or ``top_p`` (then OpenAI's defaults, 1 and 1; temperature 0 is greedy); ``top_k``/``min_p`` from the
    checkpoint's ``generation_config``, as ``generate()`` reads them. Choice j is seeded ``seed + j``."""
    recorded = side.settings
    if body.temperature is None and body.top_p is None:
        sample, temperature, top_p = recorded.do_sample, recorded.temperature, recorded.top_p
    else:
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        sample = temperature > 0
    gc = side.model.generation_config
    out = []
    for j in range(body.n):
        seed = None if body.seed is None else body.seed + j
        if not sample:
            out.append(Sampling())
        else:
            out.append(
                Sampling(
                    True, temperature, top_p, getattr(gc, "top_k", None), getattr(gc, "min_p", None), seed
                )
            )
    return out


def _ticket(side, **kwargs) -> tuple[Ticket, asyncio.Queue]:
    """A ticket whose events land in an asyncio queue of this loop (the engine emits them from its thread)."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def emit(event: dict) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
            loop.call_soon_threadsafe(events.put_nowait, event)

    return Ticket(side, emit, **kwargs), events


async def _events(ticket: Ticket, events: asyncio.Queue, request):
    """The ticket's events until it is done; an error event raises its RequestError; a client that goes away
    cancels the ticket."""
    finished = False
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), POLL)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if event["type"] == "error":
                finished = True
                raise event["error"]
            yield event
            if event["type"] == "done":
                finished = True
                return
    finally:
        if not finished:
            ticket.cancel()


async def _sse(ticket, events, request, head: dict, chat: bool, include_usage: bool):
    """OpenAI's stream: a chunk per piece of text, one with each choice's finish reason, ``[DONE]``."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    started = set()

    def chunk(index: int, text: str | None, reason: str | None) -> str:
        if chat:
            delta = {} if text is None else {"content": text}
            if index not in started:
                delta["role"] = "assistant"
                started.add(index)
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        return _data({**head, "object": kind, "choices": [choice]})

    try:
        async for event in _events(ticket, events, request):
            if event["type"] == "delta":
                yield chunk(event["index"], event["text"], None)
            elif event["type"] == "finish":
                yield chunk(event["index"], None, event["reason"])
            elif event["type"] == "done" and include_usage:
                yield _data({**head, "object": kind, "choices": [], "usage": _usage(event)})
    except RequestError as e:  # the status line is sent already: the error travels as an event
        yield _data(e.body())
    yield "data: [DONE]\n\n"


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _usage(event: dict) -> dict:
    p, c = event["prompt_tokens"], event["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _model_card(side) -> dict:
    return {
        "id": side.name,
        "object": "model",
        "created": side.created,
        "owned_by": "laddertune",
        "task": side.kind,
        "checkpoint": side.path.name,
    }
