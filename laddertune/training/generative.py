"""Generative runs (instructions, chat, completions, plain text): their batches, and their evaluation.

:func:`prepare_generative` tokenises a generative task's splits for the model's LM head (decoder-only: prompt and
answer in one sequence, the loss on the answers; encoder-decoder: source -> target), packs the training rows when
asked, and keeps the validation rows twice: with their answers for the loss, and as prompts to generate from.

:func:`evaluate_generative` always gives the validation loss (the mean over every learned token) and its
perplexity; with generation on it also generates an answer for every validation prompt and scores it against the
reference (exact match, token F1, ROUGE-L: :func:`laddertune.data.compute_generation_metrics`), and writes a few
of them to ``samples.jsonl``. The ``score`` that picks the best epoch is the exact match when generating, else the
negated loss (higher is better either way).
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import GenerativeCollator, compute_generation_metrics, encode_causal, encode_seq2seq, pack_rows
from ..data.generative_task import GenerativeTask
from ..errors import DataError
from ..io import atomic_write_text
from .config import GenerationSettings
from .device import move_batch
from .step import loss_terms

SAMPLES_NAME = "samples.jsonl"  # a few generated answers of the last evaluation, next to metrics.jsonl
SAMPLES = 5


@dataclass
class GenerativeData:
    """A generative task's encoded splits and batchers."""

    task: GenerativeTask
    head: str
    train: list[dict]
    validation: list[dict]
    prompts: list[dict]
    collate: GenerativeCollator
    prompt_collate: GenerativeCollator
    stats: dict = field(default_factory=dict)


def encode(
    task: GenerativeTask, examples: list[dict], tokenizer, head: str, *, max_length: int, generation=False
):
    """``examples`` tokenised for ``head`` (``causal_lm`` or ``seq2seq_lm``) as ``task`` renders them."""
    if head == "seq2seq_lm":
        return encode_seq2seq(
            examples, tokenizer, max_length=max_length, max_target_length=max_length, generation=generation
        )
    return encode_causal(
        examples,
        tokenizer,
        max_length=max_length,
        prompt_format=task.prompt_format,
        chat_template=task.chat_template,
        train_on_prompt=task.train_on_prompt,
        generation=generation,
    )


def prepare_generative(
    task: GenerativeTask, splits, tokenizer, head: str, *, max_length: int, max_new_tokens: int, packing: bool
) -> GenerativeData:
    """Tokenise ``splits`` (from :func:`laddertune.data.load_generative_splits`) for the run.

    Raises:
        DataError: no training or validation row left after truncation (every answer too long).
    """
    train, train_stats = encode(task, splits.train, tokenizer, head, max_length=max_length)
    validation, val_stats = encode(task, splits.validation, tokenizer, head, max_length=max_length)
    budget = max(8, max_length - max_new_tokens) if head == "causal_lm" else max_length  # prompt + answer fit
    prompts = []
    if task.layout != "text":  # plain text has no prompt to answer
        prompts, _ = encode(task, splits.validation, tokenizer, head, max_length=budget, generation=True)
    for name, rows in (("training", train), ("validation", validation)):
        if not rows:
            raise DataError(
                f"no {name} row fits max_length {max_length}: every answer is longer; raise --max-length"
            )
    if packing:
        train = pack_rows(train, max_length)
    seq2seq = head == "seq2seq_lm"
    return GenerativeData(
        task,
        head,
        train,
        validation,
        prompts,
        GenerativeCollator(tokenizer.pad_token_id, seq2seq=seq2seq),
        GenerativeCollator(tokenizer.pad_token_id, generation=True, seq2seq=seq2seq),
        {"train": train_stats.as_dict(), "validation": val_stats.as_dict(), "packed": packing},
    )


@torch.inference_mode()
def evaluate_generative(
    model,
    data: GenerativeData,
    tokenizer,
    *,
    batch_size: int,
    settings: GenerationSettings,
    generate: bool,
    show_progress: bool = False,
    desc: str = "validation",
    meter=None,
    memory_batches: int = 0,
    distributed=None,
    samples_path: Path | None = None,
    custom_metric=None,
) -> dict:
    """The validation loss and perplexity; with ``generate``, also the generated answers' scores (x100).

    With ``distributed``, each rank takes its share of the rows and every rank scores them all; with ``meter``,
    the first ``memory_batches`` loss batches are measured under the phase ``eval``.
    """
    was_training = model.training
    model.eval()
    device = _input_device(model)
    rows = data.validation if distributed is None else distributed.shard(data.validation)
    total = torch.zeros(2, dtype=torch.float64)  # (sum of token losses, learned tokens)
    batches = range(0, len(rows), batch_size)
    for k, start in enumerate(tqdm(batches, desc=f"{desc} loss", disable=not show_progress, leave=False)):
        batch = move_batch(data.collate(rows[start : start + batch_size]), device)
        with meter.phase("eval") if meter is not None and k < memory_batches else nullcontext():
            loss = model(**batch).loss
        terms = loss_terms(batch["labels"], data.head).double().cpu()
        total += torch.stack([loss.double().cpu() * terms, terms])
    if distributed is not None:
        total = torch.tensor(distributed.gather([total.tolist()])).sum(0)
    mean = float(total[0] / total[1].clamp(min=1))
    metrics = {"loss": mean, "perplexity": math.exp(min(mean, 50.0))}
    if generate and data.prompts:
        prompts = data.prompts if distributed is None else distributed.shard(data.prompts)
        answers = generate_answers(model, prompts, data, tokenizer, batch_size, settings, show_progress, desc)
        if distributed is not None:
            answers = distributed.gather(answers)
        references = [r["reference"] for r in data.prompts]
        metrics.update(compute_generation_metrics(answers, references, custom=custom_metric))
        if samples_path is not None and (distributed is None or distributed.is_main):
            samples = [
                {"location": r.get("location"), "reference": r["reference"], "generated": a}
                for r, a in zip(data.prompts[:SAMPLES], answers[:SAMPLES], strict=False)
            ]
            atomic_write_text(samples_path, "".join(json.dumps(s) + "\n" for s in samples))
    else:
        metrics["score"] = -mean
    model.train(was_training)
    return metrics


def generate_answers(
    model, prompts, data, tokenizer, batch_size, settings, show_progress=False, desc="generate"
):
    """The decoded answer generated for each encoded prompt (special tokens and surrounding spaces removed)."""
    device = _input_device(model)
    answers: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=f"{desc} generation", disable=not show_progress, leave=False):
        batch, _ = data.prompt_collate(prompts[start : start + batch_size])
        batch = move_batch(batch, device)
        out = _generate(model, batch, tokenizer, settings)
        if data.head == "causal_lm":
            out = out[:, batch["input_ids"].shape[1] :]  # the prompt is left-padded to one width
        answers += [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return answers


def _generate(model, batch: dict, tokenizer, settings: GenerationSettings) -> torch.Tensor:
    """transformers' ``generate`` (a LadderModel's, PEFT's or the backbone's), with every setting explicit."""
    return model.generate(**batch, **settings.kwargs(), pad_token_id=tokenizer.pad_token_id)


def _input_device(model) -> torch.device:
    for p in model.parameters():
        if p.requires_grad:
            return p.device
    return torch.device("cpu")
