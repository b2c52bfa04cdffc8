"""Prediction from a generative checkpoint: prompts, Alpaca rows or chat conversations in, generated text out.

A generative run's ``task.json`` records how its rows were rendered (:class:`~laddertune.data.generative_task.
GenerativeTask`: the layout, the prompt format, a chat template given by file) and its generation settings; new
rows are rendered the same way, as generation prompts (a conversation ends with the assistant's turn opened), and
the settings may be overridden per call (``max_new_tokens``, ``num_beams``, sampling).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import GenerativeCollator, normalize_rows
from ..data.generative_task import GenerativeTask
from ..errors import CheckpointError, ConfigError
from .config import GenerationSettings
from .generative import GenerativeData, encode, generate_answers


@dataclass
class GenerativePredictor:
    """A generative model rebuilt from a checkpoint, with how its prompts are rendered and how it generates."""

    model: torch.nn.Module
    tokenizer: object
    task: GenerativeTask
    head: str
    max_length: int
    settings: GenerationSettings
    checkpoint: Path

    def examples(self, rows: list[tuple[str, dict]]) -> list[dict]:
        """Rows of a prompts file (``prompt``, ``instruction``[+``input``], ``messages``, or the training
        layout's columns; answers not needed) as normalised examples."""
        _, examples = normalize_rows(rows, require_answer=False)
        return examples

    @torch.inference_mode()
    def predict(
        self, examples: list[dict], *, batch_size: int = 8, show_progress: bool = False
    ) -> list[dict]:
        """``{"generated": text}`` per example, in order."""
        budget = max(8, self.max_length - self.settings.max_new_tokens)
        prompts, stats = encode(
            self.task, examples, self.tokenizer, self.head, max_length=budget, generation=True
        )
        if len(prompts) != len(examples):
            raise ConfigError(
                f"{len(examples) - len(prompts)} prompt(s) could not be rendered: {stats.as_dict()}"
            )
        seq2seq = self.head == "seq2seq_lm"
        collate = GenerativeCollator(self.tokenizer.pad_token_id, generation=True, seq2seq=seq2seq)
        data = GenerativeData(self.task, self.head, [], [], prompts, None, collate)
        self.model.eval()
        answers = []
        starts = range(0, len(prompts), batch_size)
        total = math.ceil(len(prompts) / batch_size)
        for start in tqdm(starts, total=total, desc="generate", disable=not show_progress, leave=False):
            chunk = prompts[start : start + batch_size]
            answers += generate_answers(self.model, chunk, data, self.tokenizer, batch_size, self.settings)
        return [{"generated": a} for a in answers]

    def example(self, prompt: str, system: str | None = None) -> dict:
        """One prompt typed by a user as an example of this checkpoint's layout: a conversation (with an optional
        system turn) for a chat-trained checkpoint, a prompt otherwise."""
        if self.task.layout == "chat":
            turns = [{"role": "system", "content": system}] if system else []
            row = {"messages": [*turns, {"role": "user", "content": prompt}]}
        elif system:
            raise ConfigError("a system prompt needs a checkpoint trained on chat conversations")
        else:
            row = {"prompt": prompt}
        return self.examples([("prompt", row)])[0]

    @torch.inference_mode()
    def stream(self, example: dict, streamer) -> str:
        """Generate the answer to one example, handing each new piece of text to ``streamer`` as it is decoded
        (transformers' ``TextStreamer`` or ``TextIteratorStreamer``, ``skip_prompt=True``); returns the answer.

        Raises:
            ConfigError: beam search (transformers streams greedy decoding and sampling only), or a prompt that
                cannot be rendered.
        """
        if self.settings.num_beams > 1:
            raise ConfigError("streaming generates one sequence: num_beams must be 1")
        budget = max(8, self.max_length - self.settings.max_new_tokens)
        prompts, stats = encode(
            self.task, [example], self.tokenizer, self.head, max_length=budget, generation=True
        )
        if not prompts:
            raise ConfigError(f"the prompt could not be rendered: {stats.as_dict()}")
        seq2seq = self.head == "seq2seq_lm"
        collate = GenerativeCollator(self.tokenizer.pad_token_id, generation=True, seq2seq=seq2seq)
        batch, _ = collate(prompts)
        self.model.eval()
        out = self.model.generate(
            **batch, **self.settings.kwargs(), pad_token_id=self.tokenizer.pad_token_id, streamer=streamer
        )
        if not seq2seq:
            out = out[:, batch["input_ids"].shape[1] :]  # the generated tokens follow the prompt
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()


def generation_settings(task: dict, overrides: dict) -> GenerationSettings:
    """The checkpoint's generation settings with ``overrides`` (None values left out) applied."""
    recorded = task.get("generation") or {}
    known = {f.name for f in dataclasses.fields(GenerationSettings)}
    values = {k: v for k, v in recorded.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationSettings(**values)


def generative_task(task: dict, path: Path) -> GenerativeTask:
    """The :class:`GenerativeTask` a checkpoint's ``task.json`` recorded."""
    try:
        return GenerativeTask.from_dict(task["generative"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: task.json's generative task is malformed: {e}") from None
