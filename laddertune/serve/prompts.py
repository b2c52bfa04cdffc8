"""Requests' prompts as token ids, rendered the way the checkpoint renders its prompt rows.

``/v1/completions``: ``prompt`` is a prompt row's prompt (:func:`laddertune.training.generative.encode` with
``generation=True``, exactly what ``laddertune predict`` does with ``{"prompt": ...}``): a one-turn conversation in the
checkpoint's chat template, or the plain prompt and its separator, as the run learned it. A checkpoint of plain text
(continued pre-training, layout ``text``) continues the prompt as it is.

``/v1/chat/completions``: the conversation in the checkpoint's chat template (its own, from ``task.json``, or the
tokenizer's), ending with the assistant's turn opened. A checkpoint that learned plain prompts (no template) takes a
conversation of one user message, as that prompt.

A prompt that does not fit ``max_context - max_tokens`` tokens is refused (400), never cut.
"""

from __future__ import annotations

from ..data.chat import has_chat_template
from ..errors import ConfigError, DataError
from ..training.generative import encode
from .protocol import RequestError

MIN_BUDGET = 8  # encode's smallest max_length


def _budget(max_tokens: int, max_context: int) -> int:
    budget = max_context - max_tokens
    if budget < MIN_BUDGET:
        raise RequestError(
            f"max_tokens {max_tokens} leaves no room for a prompt in the context of {max_context} tokens",
            param="max_tokens",
        )
    return budget


def _encode(side, tokenizer, example: dict, budget: int, max_context: int) -> list[int]:
    try:
        rows, stats = encode(side.task, [example], tokenizer, "causal_lm", max_length=budget, generation=True)
    except (ConfigError, DataError) as e:
        raise RequestError(str(e), param="messages" if "messages" in example else "prompt") from None
    if stats.cut or not rows:
        raise RequestError(
            f"the prompt is longer than {budget} tokens: the context is {max_context} tokens, less max_tokens "
            f"{max_context - budget}",
            param="messages" if "messages" in example else "prompt",
            code="context_length_exceeded",
        )
    return rows[0]["input_ids"]


def completion_prompt(side, tokenizer, prompt: str, max_tokens: int, max_context: int) -> list[int]:
    """``prompt`` rendered as the checkpoint's prompt rows, as token ids."""
    budget = _budget(max_tokens, max_context)
    if side.task.layout == "text":  # a plain-text model continues the text itself
        ids = tokenizer(prompt)["input_ids"]
        if tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]  # a tokenizer that closes every text (T5-style) would end it here
        if len(ids) > budget:
            raise RequestError(
                f"the prompt is {len(ids)} tokens; the context of {max_context} less max_tokens {max_tokens} "
                f"leaves {budget}",
                param="prompt",
                code="context_length_exceeded",
            )
        if not ids:
            raise RequestError("the prompt is empty", param="prompt")
        return ids
    return _encode(
        side, tokenizer, {"prompt": prompt, "completion": "", "location": "prompt"}, budget, max_context
    )


def chat_prompt(side, tokenizer, messages: list[dict], max_tokens: int, max_context: int) -> list[int]:
    """The conversation ``messages`` (``{"role", "content"}``) rendered for the assistant's next turn."""
    budget = _budget(max_tokens, max_context)
    if messages[-1]["role"] == "assistant":
        raise RequestError("the last message is the assistant's: end with a user message", param="messages")
    task = side.task
    chat = task.layout == "chat" or task.prompt_format == "chat"
    chat = chat or (task.prompt_format == "auto" and has_chat_template(tokenizer, task.chat_template))
    if chat:
        return _encode(side, tokenizer, {"messages": messages, "location": "messages"}, budget, max_context)
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise RequestError(
            f"model {side.name!r} learned plain prompts (no chat template): send one user message, or use "
            "/v1/completions",
            param="messages",
        )
    return completion_prompt(side, tokenizer, messages[0]["content"], max_tokens, max_context)
