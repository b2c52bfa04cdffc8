"""Truncation policy of generative rows, and its counts.

An answer is never cut silently: a causal row loses, in order, the unlearned tokens after its last learned token,
then prompt tokens from the left (after its leading special tokens); a row whose answer alone does not fit is
dropped. :class:`EncodeStats` counts cut and dropped rows and logs them once.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)

IGNORE_INDEX = (
    -100
)  # the label of a token with no loss (transformers' and torch's cross-entropy ignore_index)
CHARS_PER_TOKEN = 8  # field cap before tokenising: max_length * 8 characters (few tokenizers average more)

__all__ = ["CHARS_PER_TOKEN", "IGNORE_INDEX", "EncodeStats", "fit_causal"]


@dataclass
class EncodeStats:
    """What truncation did to a set of rows.

    Attributes:
        total (int): rows given.
        kept (int): rows encoded (cut ones included).
        cut (int): rows shortened (a prompt cut from the left, a text at the right, or a field at its character cap).
        dropped (int): rows left out because their answer alone does not fit.
        dropped_locations (list[str]): the first few dropped rows' locations.
    """

    total: int = 0
    kept: int = 0
    cut: int = 0
    dropped: int = 0
    dropped_locations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The counts as a plain dict (for a results JSON)."""
        return asdict(self)

    def count(self, status: str, location: str) -> None:
        """Count one row: ``status`` is ``ok``, ``cut`` or ``dropped``."""
        self.total += 1
        if status == "dropped":
            self.dropped += 1
            if len(self.dropped_locations) < 5:
                self.dropped_locations.append(location)
            return
        self.kept += 1
        self.cut += status == "cut"

    def log(self, what: str) -> None:
        """Log the counts once: a warning when rows were cut or dropped."""
        if not (self.cut or self.dropped):
            logger.info("%s: %d rows encoded, none cut", what, self.kept)
            return
        logger.warning(
            "%s: %d of %d rows cut to fit (prompt shortened from the left, text at the right), %d dropped "
            "(answer longer than the limit)%s",
            what,
            self.cut,
            self.total,
            self.dropped,
            f", e.g. {self.dropped_locations[0]}" if self.dropped_locations else "",
        )


def fit_causal(ids: list[int], labels: list[int] | None, start: int, head: int, max_length: int) -> tuple:
    """Cut a causal row to ``max_length``: first the unlearned tokens after the last learned one, then the prompt
    from the left after its ``head`` leading tokens. Returns ``(ids, labels, start, status)``; ``ids`` is None when
    the answer alone (``ids[start:]`` up to its last learned token) does not fit."""
    if len(ids) <= max_length:
        return ids, labels, start, "ok"
    if labels is not None:
        learned_end = max((i + 1 for i, lab in enumerate(labels) if lab != IGNORE_INDEX), default=0)
        keep = max(learned_end, start, max_length)
        ids, labels = ids[:keep], labels[:keep]
    excess = len(ids) - max_length
    if excess > 0:
        if start - head < excess:
            return None, None, start, "dropped"
        ids = ids[:head] + ids[head + excess :]
        labels = None if labels is None else labels[:head] + labels[head + excess :]
        start -= excess
    return ids, labels, start, "cut"
