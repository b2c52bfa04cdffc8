"""The PEFT multi-adapter baseline of the serving benchmark, served through laddertune's own HTTP routes.

    python benchmarks/serve_peft_baseline.py --port 8100 [--threads 2] [--max-batch-size 32]

One SmolLM2 backbone with the four LoRA adapters of ``benchmarks/serve_prepare.py`` loaded (``PeftModel``,
``load_adapter``), served as PEFT serves several adapters: a batch is the waiting requests of ONE adapter (the oldest
request's), run by ``set_adapter`` and transformers' ``generate()`` from its first token to the last of its longest
answer; the next batch waits for it. Prompts are rendered as the LST checkpoints' ``task.json`` says (the same chat
template and format), the routes, queue, timeouts and metrics are ``laddertune serve``'s
(:func:`laddertune.serve.create_app` with this scheduler), so the two servers differ in how they batch (and in their models), nothing else.
It answers what the benchmark sends: greedy, one choice, no stop sequences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from laddertune.serve.engine import Engine  # noqa: E402

OUT = ROOT / "runs" / "serve_bench"
TASKS = ("capital", "plural", "opposite", "arithmetic")


class AdapterBatches(Engine):
    """``Engine``'s queue and endings; batches of one adapter each, run to the end by ``generate()``."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._stopping):
                    self._cond.wait()
                if self._stopping and not self._waiting:
                    return
                batch = self._next_batch()
                self.metrics.queue.set(len(self._waiting))
            if batch:
                try:
                    self._generate(batch)
                except Exception as e:  # noqa: BLE001
                    for t in batch:
                        self._fail(t, f"{type(e).__name__}: {e}")

    def _next_batch(self) -> list:
        """The oldest waiting request's adapter: every waiting request of it that fits (under the lock)."""
        while self._waiting and (self._waiting[0].cancelled or self._waiting[0].closed):
            self._waiting.popleft()
        if not self._waiting:
            return []
        name, rows, batch, kept = self._waiting[0].side.name, 0, [], []
        for t in self._waiting:
            if t.side.name == name and not t.cancelled and rows + t.rows <= self.max_batch:
                batch.append(t)
                rows += t.rows
            elif not t.cancelled:
                kept.append(t)
        self._waiting.clear()
        self._waiting.extend(kept)
        return batch

    @torch.inference_mode()
    def _generate(self, tickets: list) -> None:
        side = tickets[0].side
        model, pad = side.model, self.tokenizer.pad_token_id
        model.set_adapter(side.name)
        prompts = [p for t in tickets for p in t.prompts]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T), left-padded
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
        longest = max(t.max_tokens for t in tickets)
        self.metrics.step_rows.observe(len(prompts))
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=longest, do_sample=False, pad_token_id=pad
        )[:, width:]
        for i, t in enumerate(tickets):
            row = out[i].tolist()
            answer = []
            for token in row[: t.max_tokens]:
                if token in side.eos:
                    break
                answer.append(token)
            text = self.tokenizer.decode(answer, skip_special_tokens=True)
            reason = "length" if len(answer) == t.max_tokens else "stop"
            t.completion_tokens = len(answer)
            self.metrics.count_generated(side.name, len(answer))
            t.emit({"type": "delta", "index": 0, "text": text})
            t.emit({"type": "finish", "index": 0, "reason": reason, "tokens": len(answer)})
            t._finish({"type": "done", "prompt_tokens": t.prompt_tokens, "completion_tokens": len(answer)})


def served_adapters():
    """A ``ServedModels`` whose four sides are the adapters of one ``PeftModel``."""
    from peft import PeftModel

    from laddertune.core.backbones import load_backbone, load_tokenizer
    from laddertune.serve.registry import ServedModels, ServedSide
    from laddertune.training.generative_prediction import generation_settings
    from laddertune.training.prediction import read_task

    backbone = load_backbone("smollm2", "causal_lm")
    tokenizer = load_tokenizer("smollm2")
    model = PeftModel.from_pretrained(backbone, OUT / f"peft-{TASKS[0]}", adapter_name=TASKS[0])
    for task in TASKS[1:]:
        model.load_adapter(OUT / f"peft-{task}", adapter_name=task)
    model.eval()
    served = ServedModels(backbone, tokenizer, max_context=2048)
    eos = frozenset({backbone.generation_config.eos_token_id, tokenizer.eos_token_id} - {None})
    for task in TASKS:
        path = OUT / f"lst-{task}" / "checkpoint-best"  # the task's prompt format, as the LST server reads it
        record, spec = read_task(path)
        settings = generation_settings(record, {})
        served.sides[task] = ServedSide(task, model, "generation", path, spec, 96, settings, eos)
    return served


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import uvicorn

    from laddertune.serve import create_app

    app = create_app(served_adapters(), max_batch=args.max_batch_size, engine_class=AdapterBatches)
    print(f"serving the PEFT baseline on {args.port}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")).run()


if __name__ == "__main__":
    main()
