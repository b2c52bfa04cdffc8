"""User-facing errors: one clear line each, exit code 2 at the command line."""


class LadderTuneError(Exception):
    """An error caused by the user's input (config, data, checkpoint, arguments).

    The CLI prints ``error: <message>`` on one line and exits with code 2, without a traceback.
    """


class ConfigError(LadderTuneError, ValueError):
    """A configuration value is invalid or does not fit the backbone."""


class DataError(LadderTuneError, ValueError):
    """A data file or column is missing, unreadable or malformed."""


class CheckpointError(LadderTuneError):
    """A checkpoint is missing, corrupt, or was made for another backbone."""


def listing(items, limit: int = 20) -> str:
    """``a, b, c`` for an error message, cut after ``limit`` items with a count (``..., t and 280 more``), so that
    a label error on 300 classes stays one readable line."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} \u2026 and {len(items) - limit} more"
