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


class OutputError(LadderTuneError, OSError):
    """A file or folder could not be written (a full disk, a read-only place, no permission); also an ``OSError``
    (``errno`` and ``strerror`` are the system's), so code that catches ``OSError`` still does. What was there
    before is left as it was."""

    def __str__(self) -> str:  # the one-line message, not OSError's "[Errno n] ..." form
        return str(self.args[0]) if self.args else ""


def output_error(what, error: OSError, note: str = "") -> OutputError:
    """An :class:`OutputError` "cannot write <what>: <reason>[ (<note>)]" carrying ``error``'s errno and reason."""
    out = OutputError(f"cannot write {what}: {error.strerror or error}" + (f" ({note})" if note else ""))
    out.errno, out.strerror = error.errno, error.strerror
    return out
