"""Tokenise generative examples into ``input_ids`` and ``labels`` with loss masks (``-100`` = no loss).

Examples are the plain dicts of :func:`laddertune.data.normalize_rows`. Decoder-only models
(:func:`encode_causal`):

- prompt/completion and alpaca rows learn the completion only (``train_on_prompt=True``: every token). The
  completion ends with the end of the answer, which is learned, so generation stops. How prompt and completion
  are joined is ``prompt_format``:

  - ``chat``: a one-turn conversation ``[user: prompt, assistant: completion]`` rendered with the chat template;
    the answer is the assistant turn with the template's end-of-turn token (no extra EOS).
  - ``plain``: ``prompt + separator`` and ``completion + EOS``, each tokenised on its own and concatenated (as TRL
    does), so the prompt's ids are the same in training and at generation. The tokenizer's leading special tokens
    (a BOS) open the prompt. ``separator`` defaults to ``"\\n"``.
  - ``auto`` (default): ``chat`` when a chat template is at hand (the tokenizer's or ``chat_template``), else
    ``plain``.

- chat rows are rendered with the chat template (the tokenizer's, or ``chat_template`` for one without); every
  assistant turn is learned with its end-of-turn token, no system or user token is (see
  :mod:`laddertune.data.chat`). Turns after the last assistant turn carry no loss and are left out.
- text rows learn every token (continued pre-training), EOS appended when the tokenizer has one; a long text is
  cut at the right (and so has no EOS).

Encoder-decoder models (:func:`encode_seq2seq`, T5, BART): source = the prompt, labels = the completion's ids
(the tokenizer's special tokens included); text and chat rows are refused (no source / no template).

Truncation never silently removes an answer (:mod:`laddertune.data.truncation`): a prompt is cut from the LEFT
(keeping the leading special tokens); a row whose answer alone does not fit is dropped. Before tokenising, fields
are bounded to ``max_length * CHARS_PER_TOKEN`` characters (a prompt keeps its right end, a text its left end; an
answer longer than that is dropped, as it could not fit). Counts come back in :class:`EncodeStats`, logged once.

Each encoded row: ``input_ids`` (list[int]), ``labels`` (list[int]; not with ``generation=True``),
``prompt_length`` (int: the ids before the final answer; a generation prompt is ``input_ids[:prompt_length]``),
``reference`` (str: the final answer, for generation metrics), ``location`` (str).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .chat import assistant_spans, has_chat_template, render_chat
from .truncation import CHARS_PER_TOKEN, IGNORE_INDEX, EncodeStats, fit_causal

PROMPT_FORMATS = ("auto", "chat", "plain")
_CHUNK = 1024  # rows tokenised in one call

__all__ = ["PROMPT_FORMATS", "encode_causal", "encode_seq2seq"]


def _edges(tokenizer: Any, *, target: bool = False) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. ``[bos]``, ``[]``; T5: ``[]``,
    ``[eos]``); with ``target``, around a target text (``text_target``: BART ``<s>``, ``</s>``)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer(text_target="x")["input_ids"] if target else tokenizer("x")["input_ids"]
    for lead in range(len(full) - len(plain) + 1):
        if full[lead : lead + len(plain)] == plain:
            return full[:lead], full[lead + len(plain) :]
    return [], []


def _batched(tokenizer: Any, texts: list[str], **kw) -> list:
    """Tokenise in chunks (fast tokenizers work in parallel over a list); ``input_ids`` or whole encodings."""
    out = []
    for i in range(0, len(texts), _CHUNK):
        enc = tokenizer(texts[i : i + _CHUNK], add_special_tokens=False, **kw)
        out.extend(
            zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            if kw.get("return_offsets_mapping")
            else enc["input_ids"]
        )
    return out


def encode_causal(
    examples: list[dict],
    tokenizer: Any,
    *,
    max_length: int,
    prompt_format: str = "auto",
    chat_template: str | None = None,
    separator: str = "\n",
    train_on_prompt: bool = False,
    generation: bool = False,
) -> tuple[list[dict], EncodeStats]:
    """Tokenise examples for a decoder-only model (see the module docstring).

    Args:
        examples (list[dict]): normalised examples (prompt/completion, messages or text).
        tokenizer (Any): a Hugging Face tokenizer (chat rows need a fast one: offsets map text to tokens).
        max_length (int): the longest row, in tokens.
        prompt_format (str): ``auto``, ``chat`` or ``plain``: how a prompt/completion row is joined.
        chat_template (str | None): a Jinja chat template, used instead of the tokenizer's own.
        separator (str): plain format: the text between prompt and completion.
        train_on_prompt (bool): learn every token, not only the answers.
        generation (bool): encode the prompts alone (no labels), each cut from the left to ``max_length`` (pass
            the prompt budget: the model's limit less the new tokens to generate).

    Returns:
        tuple[list[dict], EncodeStats]: the encoded rows (dropped ones left out) and the counts.

    Raises:
        ConfigError: bad lengths or format; chat rows (or ``prompt_format="chat"``) with no chat template; plain
            rows with a tokenizer that has no EOS token; text rows in generation mode; a template without the
            prefix property; a tokenizer that gives no offsets for chat rows.
    """
    if max_length < 8:
        raise ConfigError(f"max_length must be >= 8, got {max_length}")
    if prompt_format not in PROMPT_FORMATS:
        raise ConfigError(
            f"unknown prompt format {prompt_format!r}; choose one of {', '.join(PROMPT_FORMATS)}"
        )
    use_chat = prompt_format == "chat" or (
        prompt_format == "auto" and has_chat_template(tokenizer, chat_template)
    )
    lead = _edges(tokenizer)[0]
    cap = max_length * CHARS_PER_TOKEN
    for e in examples:
        if not ("prompt" in e or "messages" in e or "text" in e):
            raise ValueError(f"{e.get('location', '?')}: not a normalised example (see normalize_rows)")
    plain = [e for e in examples if "prompt" in e and not use_chat]
    chats = [e for e in examples if "messages" in e or ("prompt" in e and use_chat)]
    texts = [e for e in examples if "text" in e]
    if texts and generation:
        raise ConfigError(
            "text rows have no prompt to generate from; generation needs prompt/completion or chat rows"
        )
    encoded: dict[int, tuple] = {}  # id(example) -> (ids, labels, start, head, status, reference)
    if plain:
        rows = _encode_plain(plain, tokenizer, lead, cap, separator, train_on_prompt, generation)
        encoded.update(zip(map(id, plain), rows, strict=True))
    if chats:
        for e, row in zip(
            chats, _encode_chats(chats, tokenizer, chat_template, cap, generation), strict=True
        ):
            ids, labels, start, status, reference = row
            head = len(lead) if lead and ids[: len(lead)] == lead else 0
            if train_on_prompt and labels is not None:
                labels = list(ids)
            encoded[id(e)] = (ids, labels, start, head, status, reference)
    if texts:
        end = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        for e, ids in zip(texts, _batched(tokenizer, [e["text"][:cap] for e in texts]), strict=True):
            ids = lead + ids + end
            status = "cut" if len(e["text"]) > cap or len(ids) > max_length else "ok"
            ids = ids[
                :max_length
            ]  # continued pre-training keeps the start of a text (a cut one loses its EOS)
            encoded[id(e)] = (ids, list(ids), 0, len(lead), status, "")
    stats, out = EncodeStats(), []
    for e in examples:
        ids, labels, start, head, status, reference = encoded[id(e)]
        if status != "dropped":
            ids, labels, start, fit = fit_causal(ids, labels, start, head, max_length)
            status = fit if fit != "ok" else status
        stats.count(status, e.get("location", "?"))
        if status == "dropped":
            continue
        row = {
            "input_ids": ids,
            "prompt_length": start,
            "reference": reference,
            "location": e.get("location", "?"),
        }
        if labels is not None:
            row["labels"] = labels
        out.append(row)
    stats.log("causal LM data" + (" (prompts)" if generation else ""))
    return out, stats


def _encode_plain(
    rows: list[dict],
    tokenizer: Any,
    lead: list[int],
    cap: int,
    separator: str,
    train_on_prompt: bool,
    generation: bool,
) -> list[tuple]:
    """Plain prompt/completion rows -> ``(ids, labels, start, head, status, reference)``: ``lead + prompt +
    separator`` and ``completion + EOS``, tokenised apart so the prompt's ids match a generation prompt's."""
    eos = tokenizer.eos_token_id
    if eos is None and not generation:
        raise ConfigError(
            "the tokenizer has no EOS token, which ends each completion; set tokenizer.eos_token"
        )
    prompts = _batched(tokenizer, [e["prompt"][-cap:] + separator for e in rows])
    answers = [] if generation else _batched(tokenizer, [e["completion"][:cap] for e in rows])
    out = []
    for i, e in enumerate(rows):
        p_ids = lead + prompts[i]
        status = "cut" if len(e["prompt"]) > cap else "ok"
        if generation:
            out.append((p_ids, None, len(p_ids), len(lead), status, e["completion"]))
            continue
        if len(e["completion"]) > cap:  # it could not fit in max_length tokens
            status = "dropped"
        a_ids = answers[i] + [eos]
        labels = (p_ids if train_on_prompt else [IGNORE_INDEX] * len(p_ids)) + a_ids
        out.append((p_ids + a_ids, labels, len(p_ids), len(lead), status, e["completion"]))
    return out


def _encode_chats(
    chats: list[dict], tokenizer: Any, chat_template: str | None, cap: int, generation: bool
) -> list:
    """Chat rows (and prompt/completion rows as one-turn chats) -> ``(ids, labels, start, status, reference)``."""
    rendered = []  # (text, spans, status, reference)
    for e in chats:
        messages = e.get("messages") or [
            {"role": "user", "content": e["prompt"]},
            {"role": "assistant", "content": e["completion"]},
        ]
        where = e.get("location", "conversation")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if generation:
            final = last is not None and last == len(messages) - 1
            reference = messages[-1]["content"] if final else ""
            turns = messages[:-1] if final else messages
            status = "cut" if any(len(m["content"]) > cap for m in turns) else "ok"
            turns = [{**m, "content": m["content"][-cap:]} for m in turns]
            text = render_chat(turns, tokenizer, chat_template, add_generation_prompt=True)
            rendered.append((text, None, status, reference))
            continue
        if last is None:
            raise ConfigError(f"{where}: a conversation without an assistant turn has nothing to learn")
        turns, reference = messages[: last + 1], messages[last]["content"]
        status = "cut" if any(len(m["content"]) > cap for m in turns[:last]) else "ok"
        if len(reference) > cap:
            rendered.append(("", [], "dropped", reference))
            continue
        turns = [{**m, "content": m["content"][-cap:]} for m in turns[:last]] + [turns[last]]
        text, spans = assistant_spans(turns, tokenizer, chat_template, where=where)
        rendered.append((text, spans, status, reference))
    if generation:
        ids = _batched(tokenizer, [r[0] for r in rendered])
        return [(i, None, len(i), r[2], r[3]) for i, r in zip(ids, rendered, strict=True)]
    try:
        encodings = _batched(tokenizer, [r[0] for r in rendered], return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as e:
        raise ConfigError(
            f"chat rows need a fast tokenizer (offsets map the rendered text to tokens): {type(e).__name__}"
        ) from None
    out = []
    for (_, spans, status, reference), (ids, offsets) in zip(rendered, encodings, strict=True):
        if status == "dropped":
            out.append(([], [], 0, status, reference))
            continue
        # a token is learned when it starts inside an assistant span (reply + end-of-turn token)
        labels = [
            t if any(s <= a < e for s, e in spans) else IGNORE_INDEX
            for t, (a, _) in zip(ids, offsets, strict=True)
        ]
        start = next((i for i, (a, _) in enumerate(offsets) if a >= spans[-1][0]), len(ids))
        out.append((list(ids), labels, start, status, reference))
    return out


def encode_seq2seq(
    examples: list[dict],
    tokenizer: Any,
    *,
    max_length: int,
    max_target_length: int,
    generation: bool = False,
) -> tuple[list[dict], EncodeStats]:
    """Tokenise prompt/completion (and alpaca) examples for an encoder-decoder model (T5, BART).

    The source is the prompt with the tokenizer's special tokens (T5 appends ``</s>``); a source longer than
    ``max_length`` is cut from the left, its special tokens kept. ``labels`` are the completion's ids
    (``tokenizer(text_target=...)``, special tokens included); a target longer than ``max_target_length`` drops the
    row.

    Args:
        examples (list[dict]): normalised prompt/completion examples.
        tokenizer (Any): the model's tokenizer.
        max_length (int): the longest source, in tokens.
        max_target_length (int): the longest target, in tokens.
        generation (bool): sources alone, no labels.

    Returns:
        tuple[list[dict], EncodeStats]: rows ``{"input_ids", "labels", "prompt_length" (= len(input_ids)),
        "reference", "location"}`` and the counts.

    Raises:
        ConfigError: bad lengths; text or chat rows (an encoder-decoder needs a source and a target: use
            prompt/completion rows, or a decoder-only backbone).
    """
    if max_length < 8 or max_target_length < 1:
        raise ConfigError(
            f"max_length must be >= 8 and max_target_length >= 1, got {max_length}, {max_target_length}"
        )
    for e in examples:
        if "prompt" not in e:
            kind = "text" if "text" in e else "chat"
            raise ConfigError(
                f"{e.get('location', '?')}: {kind} rows need a decoder-only backbone; an encoder-decoder learns "
                "from prompt/completion (or alpaca) rows"
            )
    lead, trail = _edges(tokenizer)
    cap, body_room = max_length * CHARS_PER_TOKEN, max_length - len(lead) - len(trail)
    sources = _batched(tokenizer, [e["prompt"][-cap:] for e in examples])
    targets = [] if generation else _batched(tokenizer, [e["completion"][:cap] for e in examples])
    if targets:  # text_target: the special tokens a target gets (BART: <s> ... </s>; T5: ... </s>)
        t_lead, t_trail = _edges(tokenizer, target=True)
        targets = [t_lead + t + t_trail for t in targets]
    stats, out = EncodeStats(), []
    for i, e in enumerate(examples):
        loc, body = e.get("location", "?"), sources[i]
        status = "cut" if len(e["prompt"]) > cap or len(body) > body_room else "ok"
        if not generation and (len(e["completion"]) > cap or len(targets[i]) > max_target_length):
            stats.count("dropped", loc)
            continue
        ids = lead + body[max(0, len(body) - body_room) :] + trail  # a long source loses its left end
        row = {"input_ids": ids, "prompt_length": len(ids), "reference": e["completion"], "location": loc}
        if not generation:
            row["labels"] = targets[i]
        stats.count(status, loc)
        out.append(row)
    stats.log("seq2seq data" + (" (sources)" if generation else ""))
    return out, stats
