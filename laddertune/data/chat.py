"""Render conversations with a tokenizer's chat template and find the assistant turns in the rendered text.

Most chat templates carry no ``{% generation %}`` markers, so transformers cannot say which tokens the assistant
wrote. We find them by rendering the conversation prefix by prefix: assistant turn ``k`` starts where the rendering
of the turns before it with the generation prompt (``<|im_start|>assistant\\n`` in ChatML) ends, and ends where the
rendering of the turns up to and including it ends, less trailing whitespace. So the span holds the reply and the
template's end-of-turn token (``<|im_end|>``), but not the header before it nor a newline after it. This needs
the *prefix property*: each shorter rendering is a prefix of the longer one. A template that breaks it (one that
rewrites earlier turns, e.g. drops past reasoning) raises a one-line :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["assistant_spans", "has_chat_template", "render_chat"]


def has_chat_template(tokenizer: Any, chat_template: str | None = None) -> bool:
    """Whether a chat template is at hand: ``chat_template`` or the tokenizer's own."""
    return bool(chat_template or getattr(tokenizer, "chat_template", None))


def render_chat(
    messages: list[dict],
    tokenizer: Any,
    chat_template: str | None = None,
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The conversation as text, through ``chat_template`` or else the tokenizer's own template.

    Raises:
        ConfigError: no template at all, or the template fails on the conversation (e.g. it insists on roles
            alternating).
    """
    if not has_chat_template(tokenizer, chat_template):
        raise ConfigError(
            "the tokenizer has no chat template; give one (a Jinja file: --chat-template FILE), or use "
            "prompt/completion data with the plain prompt format"
        )
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as e:  # noqa: BLE001 - jinja raises its own types (TemplateError, exceptions it raises itself)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"the chat template fails on a conversation of {len(messages)} turn(s): {first}"
        ) from None
    if not isinstance(text, str):  # a batch of one, with some tokenizers
        text = text[0]
    return text


def assistant_spans(
    messages: list[dict], tokenizer: Any, chat_template: str | None = None, *, where: str = "conversation"
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and locate each assistant turn in the text.

    Args:
        messages (list[dict]): ``{"role", "content"}`` dicts (normalised, see :mod:`laddertune.data.layouts`).
        tokenizer (Any): a Hugging Face tokenizer.
        chat_template (str | None): a Jinja template used instead of the tokenizer's own.
        where (str): the row's location, for errors.

    Returns:
        tuple[str, list[tuple[int, int]]]: the full rendering and, per assistant turn in order, its character
        span ``[start, end)``: the reply and the end-of-turn token, without trailing whitespace.

    Raises:
        ConfigError: no template, a template that fails, or one without the prefix property.
    """
    full = render_chat(messages, tokenizer, chat_template)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _generation_prefix(messages[:k], tokenizer, chat_template)
        through = render_chat(messages[: k + 1], tokenizer, chat_template)
        if not (through.startswith(before) and full.startswith(through)):
            raise ConfigError(
                f"{where}: the chat template is not prefix-stable at turn {k} (rendering the turns up to an "
                "assistant reply is not a prefix of the whole conversation), so the assistant tokens cannot be "
                "found; use a template that renders earlier turns unchanged"
            )
        end = len(through.rstrip())
        if end <= len(before):
            raise ConfigError(f"{where}: the chat template renders assistant turn {k} as nothing")
        spans.append((len(before), end))
    return full, spans


def _generation_prefix(messages: list[dict], tokenizer: Any, chat_template: str | None) -> str:
    """The turns before an assistant reply, with the generation prompt; for a reply that opens the conversation,
    the template's rendering of no turns (a template may refuse that: then nothing)."""
    try:
        return render_chat(messages, tokenizer, chat_template, add_generation_prompt=True)
    except ConfigError:
        if messages:
            raise
        return ""
