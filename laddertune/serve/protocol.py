"""The HTTP protocol: OpenAI's request bodies (the subset served), the classify and model-management bodies, and the
JSON error every refused request gets.

Request bodies are plain dataclasses (FastAPI checks their types through pydantic; this module imports neither, so
laddertune imports without the ``serve`` extra) whose ``check()`` adds the ranges; an option the server does not
implement is refused when set to anything but its neutral value, never silently ignored. Every error is OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for what the client can fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MAX_N = 16  # choices per request
MAX_STOP = 4  # stop sequences, as OpenAI allows
MAX_INPUTS = 1024  # texts per classify request


class RequestError(Exception):
    """A request the server refuses or could not answer: its HTTP status and OpenAI's error fields."""

    def __init__(
        self, message: str, *, status: int = 400, type: str = "invalid_request_error", param=None, code=None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unknown_model(name: str, served: list[str]) -> RequestError:
    return RequestError(
        f"model {name!r} is not served; served: {', '.join(served) or 'none'}",
        status=404,
        param="model",
        code="model_not_found",
    )


def _check(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise RequestError(f"{param}: {message}", param=param)


@dataclass
class _Generation:
    """What completions and chat completions share (OpenAI's names and ranges)."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    logprobs: bool | int | None = None
    user: str | None = None

    # options this server does not implement, with their neutral value: refused unless neutral, never ignored
    NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}}

    def check(self) -> None:
        """Ranges the types do not say, and the options not served; a RequestError (400) names the field."""
        for name, neutral in self.NEUTRAL.items():
            value = getattr(self, name)
            if value is not None and value != neutral:
                raise RequestError(f"{name} is not supported by this server", param=name)
        _check(self.max_tokens is None or self.max_tokens >= 1, "must be at least 1", "max_tokens")
        _check(self.temperature is None or 0 <= self.temperature <= 2, "must be from 0 to 2", "temperature")
        _check(self.top_p is None or 0 < self.top_p <= 1, "must be in (0, 1]", "top_p")
        _check(1 <= self.n <= MAX_N, f"must be from 1 to {MAX_N}", "n")
        stops = self.stops()
        _check(len(stops) <= MAX_STOP and all(stops), f"at most {MAX_STOP} non-empty stop sequences", "stop")

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


@dataclass
class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: str | list[str] = ""
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    NEUTRAL = {**_Generation.NEUTRAL, "echo": False, "best_of": 1, "suffix": "", "logprobs": 0}

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        _check(bool(prompts) and all(prompts), "give a non-empty prompt (or list of prompts)", "prompt")
        return prompts


@dataclass
class TextPart:
    type: Literal["text"]
    text: str


@dataclass
class Message:
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


@dataclass
class ChatRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = field(default_factory=list)
    max_completion_tokens: int | None = None
    tools: list | None = None
    response_format: dict | None = None

    NEUTRAL = {
        **_Generation.NEUTRAL, "logprobs": False, "tools": [], "response_format": {"type": "text"},
    }  # fmt: skip

    def check(self) -> None:
        super().check()
        _check(bool(self.messages), "give at least one message", "messages")
        _check(
            self.max_completion_tokens is None or self.max_completion_tokens >= 1, "must be at least 1",
            "max_completion_tokens",
        )  # fmt: skip

    def conversation(self) -> list[dict]:
        # "developer" is OpenAI's newer name of the system role
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


@dataclass
class ClassifyRequest:
    """``POST /v1/classify``: texts, or text pairs ``[a, b]``, for a classification or regression side network."""

    model: str
    input: str | list[str | list[str]]

    def examples(self, pair: bool) -> list[dict]:
        items = [self.input] if isinstance(self.input, str) else list(self.input)
        _check(bool(items), "give a text or a list of texts", "input")
        _check(len(items) <= MAX_INPUTS, f"at most {MAX_INPUTS} texts per request", "input")
        out = []
        for i, item in enumerate(items):
            texts = [item] if isinstance(item, str) else item
            if len(texts) != (2 if pair else 1):
                want = "a pair of texts [a, b]" if pair else "one text"
                raise RequestError(f"input[{i}]: model {self.model!r} reads {want}", param="input")
            out.append({"text": texts[0], "text_pair": texts[1] if pair else None, "label": 0})
        return out


@dataclass
class LoadRequest:
    """``POST /v1/models/load``: a checkpoint folder under the server's ``--models-root``."""

    model: str
    path: str


@dataclass
class UnloadRequest:
    """``POST /v1/models/unload``."""

    model: str
