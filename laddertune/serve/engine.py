"""The server's scheduler: one thread that owns the models and batches every request it is given.

Requests arrive as :class:`Ticket` objects from the HTTP handlers (:meth:`Engine.submit`) into a bounded queue (a full
queue is a 429, at once). Between two decoding steps the thread

1. drops rows whose client went away (cancelled), whose request failed, or that are past their timeout (504);
2. answers every waiting classification request in one backbone pass (:mod:`.classify`);
3. admits waiting generation requests, first come first served, while their rows (``n`` choices per prompt) fit in
   ``max_batch`` and prefills them together (:meth:`MixedBatch.add`);
4. runs one decoding step for every row in the batch, whatever side network each belongs to (:meth:`MixedBatch.step`),
   picks each row's next token (:mod:`.sampling`) and streams the new text to its request.

All model work happens on this one thread: the backbone's forward hooks, caches and weights are never touched by
two passes at once. A row that fails inside the model fails its request alone (500); the rest of the batch goes on.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .batching import MixedBatch, groups
from .classify import classify
from .protocol import RequestError
from .sampling import Sampler, Sampling

logger = logging.getLogger(__name__)
_ids = itertools.count(1)


class Ticket:
    """One request in the engine: what to run, and where its events go (``emit``, called on the engine thread).

    Events are dicts: ``{"type": "delta", "index", "text"}``, ``{"type": "finish", "index", "reason", "tokens"}``,
    ``{"type": "result", "data"}`` (classification), then exactly one ``{"type": "done", "prompt_tokens",
    "completion_tokens"}`` or ``{"type": "error", "error": RequestError}``.

    Args:
        side: the served side network.
        emit: called with each event.
        prompts: generation: the prompts' token ids; ``n`` choices of each become rows (choice ``p * n + j``).
        sampling: generation: how choice j picks tokens (one :class:`Sampling` per j).
        max_tokens, stop: generation: the longest answer, the stop sequences.
        examples: classification: the inputs.
        timeout: seconds from submission; past it the request fails with 504.
    """

    def __init__(
        self,
        side,
        emit: Callable[[dict], None],
        *,
        prompts: list[list[int]] | None = None,
        n: int = 1,
        sampling: list[Sampling] | None = None,
        max_tokens: int = 16,
        stop: tuple[str, ...] = (),
        examples: list[dict] | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.id, self.side, self.emit = next(_ids), side, emit
        self.prompts, self.n, self.max_tokens, self.stop = prompts or [], n, max_tokens, stop
        self.sampling = sampling or [Sampling()] * n
        self.examples = examples
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.cancelled = self.closed = False
        self.open_rows = 0
        self.completion_tokens = 0
        self.engine: Engine | None = None

    @property
    def rows(self) -> int:
        return len(self.examples) if self.examples is not None else len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    def cancel(self) -> None:
        """The client went away: drop the request's rows at the next step."""
        if not self.closed:
            self.cancelled = True
            if self.engine is not None:
                self.engine.wake()

    def _finish(self, event: dict) -> None:
        if not self.closed:
            self.closed = True
            self.emit(event)


@dataclass(eq=False)
class Row:
    """One choice of one generation request, in the batch."""

    ticket: Ticket
    index: int
    side: object
    prompt: list[int]
    sampler: Sampler
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the answer streamed so far
    next: int | None = None  # the token the next step feeds
    done: bool = False


class Engine:
    """The batching thread (see the module docstring).

    Args:
        served: the :class:`~laddertune.serve.registry.ServedModels`.
        metrics: the server's :class:`~laddertune.serve.metrics.Metrics`.
        max_batch: rows decoded together at most (a request with more rows is refused).
        max_queue: requests waiting at most; one more is refused with 429.
    """

    def __init__(self, served, metrics, *, max_batch: int = 32, max_queue: int = 256) -> None:
        self.served, self.metrics = served, metrics
        self.tokenizer = served.tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batch = MixedBatch()
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="laddertune-engine", daemon=True)

    # -- the handlers' side ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued and running, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def submit(self, ticket: Ticket) -> None:
        """Queue ``ticket``. Raises RequestError: 429 when the queue is full, 503 while stopping, 400 when it has
        more rows than a batch holds."""
        if ticket.examples is None and ticket.rows > self.max_batch:
            raise RequestError(
                f"{ticket.rows} choices (prompts x n) are more than the server batches ({self.max_batch})",
                param="n",
            )
        with self._cond:
            if self._stopping:
                raise RequestError("the server is shutting down", status=503, type="server_error")
            if len(self._waiting) >= self.max_queue:
                self.metrics.rejected.inc()
                raise RequestError(
                    f"the server is busy: {len(self._waiting)} requests are waiting; retry later",
                    status=429, type="rate_limit_exceeded", code="queue_full",
                )  # fmt: skip
            ticket.engine = self
            self._waiting.append(ticket)
            self.metrics.queue.set(len(self._waiting))
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    # -- the thread ----------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or len(self.batch) or self._stopping):
                    self._cond.wait()
                if self._stopping and not self._waiting and not len(self.batch):
                    return
                classify_now, generate_now = self._admit()
                self.metrics.queue.set(len(self._waiting))
            try:
                self._sweep()
                if classify_now:
                    self._classify(classify_now)
                if generate_now:
                    self._join(generate_now)
                if len(self.batch):
                    self._step()
            except Exception:  # noqa: BLE001 (a fault of the engine itself: fail what is in flight, keep serving)
                logger.exception("engine step failed; failing the requests in the batch")
                for row in self.batch.rows:
                    self._fail(row.ticket, "internal error in the batching engine")
                self.batch = MixedBatch()
            self.metrics.running.set(len(self.batch))

    def _admit(self) -> tuple[list[Ticket], list[Ticket]]:
        """Take the waiting requests that can start now (under the lock)."""
        classify_now, generate_now = [], []
        room, inputs = self.max_batch - len(self.batch), 0
        kept: collections.deque[Ticket] = collections.deque()
        blocked = False
        while self._waiting:
            t = self._waiting.popleft()
            if t.cancelled:
                self.metrics.cancelled.inc()
                continue
            if time.monotonic() > t.deadline:
                self._timeout(t)
                continue
            if t.examples is not None:
                if inputs and inputs + t.rows > self.max_batch:
                    kept.append(t)
                    continue
                classify_now.append(t)
                inputs += t.rows
            elif not blocked and t.rows <= room:
                generate_now.append(t)
                room -= t.rows
            else:
                blocked = True  # first come first served: no later request overtakes one that waits for room
                kept.append(t)
        self._waiting = kept
        return classify_now, generate_now

    def _sweep(self) -> None:
        """Drop rows of cancelled, failed or late requests."""
        now, gone = time.monotonic(), []
        for row in self.batch.rows:
            t = row.ticket
            if t.cancelled and not t.closed:
                t.closed = True
                self.metrics.cancelled.inc()
            elif now > t.deadline and not t.closed:
                self._timeout(t)
            if t.closed or t.cancelled:
                gone.append(row)
        self.batch.remove(gone)

    # -- classification --------------------------------------------------------------------------------------------
    def _classify(self, tickets: list[Ticket]) -> None:
        items = [(t.side, e) for t in tickets for e in t.examples]
        self.metrics.classify_rows.observe(len(items))
        try:
            answers = classify(items, self.tokenizer)
        except Exception:  # noqa: BLE001 (find the request that fails; the others are answered)
            answers = None
        start = 0
        for t in tickets:
            if answers is not None:
                data = answers[start : start + t.rows]
            else:
                try:
                    data = classify([(t.side, e) for e in t.examples], self.tokenizer)
                except Exception as e:  # noqa: BLE001
                    self._fail(t, f"the model failed on this request: {type(e).__name__}: {e}")
                    continue
            start += t.rows
            t.emit({"type": "result", "data": data})
            t._finish({"type": "done", "prompt_tokens": 0, "completion_tokens": 0})

    # -- generation ------------------------------------------------------------------------------------------------
    def _join(self, tickets: list[Ticket]) -> None:
        rows = []
        for t in tickets:
            t.open_rows = t.rows
            self.metrics.prompt_tokens.labels(t.side.name).inc(t.prompt_tokens * t.n)
            for p, prompt in enumerate(t.prompts):
                for j in range(t.n):
                    rows.append(Row(t, p * t.n + j, t.side, prompt, Sampler(t.sampling[j])))
        self.metrics.prefill_rows.observe(len(rows))
        added, logits, failures = self.batch.add(rows)
        self._failed(failures)
        self._advance(added, logits)

    def _step(self) -> None:
        rows = self.batch.rows
        self.metrics.step_rows.observe(len(rows))
        self.metrics.step_sides.observe(len(groups(rows)))
        logits, failures = self.batch.step([r.next for r in rows])
        self._failed(failures)
        self._advance(self.batch.rows, logits)

    def _failed(self, failures: list) -> None:
        for row, error in failures:
            logger.warning(
                "request %d failed inside the model: %s: %s", row.ticket.id, type(error).__name__, error
            )
            self._fail(row.ticket, f"the model failed on this request: {type(error).__name__}: {error}")

    def _advance(self, rows: list[Row], logits) -> None:
        """Pick each row's next token from its logits row, stream its text, finish it when it ends."""
        finished = []
        for row, row_logits in zip(rows, logits if logits is not None else [], strict=True):
            t = row.ticket
            if t.closed:
                finished.append(row)
                continue
            try:
                token = row.sampler(row_logits, row.prompt + row.generated)
                self._take(row, token)
            except Exception as e:  # noqa: BLE001 (this row's own failure)
                self._fail(t, f"generation failed on this request: {type(e).__name__}: {e}")
            if row.done or t.closed:
                finished.append(row)
        self.batch.remove(finished)

    def _take(self, row: Row, token: int) -> None:
        t = row.ticket
        if token in row.side.eos:
            return self._end(row, self._text(row), "stop")
        row.generated.append(token)
        t.completion_tokens += 1
        self.metrics.count_generated(row.side.name, 1)
        text = self._text(row)
        if t.stop:
            hits = [i for i in (text.find(s) for s in t.stop) if i >= 0]
            if hits:
                return self._end(row, text[: min(hits)], "stop")
        if len(row.generated) >= t.max_tokens:
            return self._end(row, text, "length")
        # hold back what could still turn out to be a stop sequence, and a character not complete yet
        safe = len(text) - max((len(s) - 1 for s in t.stop), default=0)
        if text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        if safe > row.sent:
            t.emit({"type": "delta", "index": row.index, "text": text[row.sent : safe]})
            row.sent = safe
        row.next = token

    def _text(self, row: Row) -> str:
        return self.tokenizer.decode(row.generated, skip_special_tokens=True)

    def _end(self, row: Row, text: str, reason: str) -> None:
        t = row.ticket
        row.done = True
        if len(text) > row.sent:
            t.emit({"type": "delta", "index": row.index, "text": text[row.sent :]})
            row.sent = len(text)
        t.emit({"type": "finish", "index": row.index, "reason": reason, "tokens": len(row.generated)})
        t.open_rows -= 1
        if t.open_rows == 0:
            t._finish(
                {"type": "done", "prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens}
            )

    # -- endings ---------------------------------------------------------------------------------------------------
    def _fail(self, t: Ticket, message: str) -> None:
        if not t.closed:
            self.metrics.failures.inc()
            t._finish({"type": "error", "error": RequestError(message, status=500, type="server_error")})

    def _timeout(self, t: Ticket) -> None:
        if not t.closed:
            self.metrics.timeouts.inc()
            error = RequestError(
                f"the request timed out after {t.timeout:g} s", status=504, type="timeout", code="timeout"
            )
            t._finish({"type": "error", "error": error})
