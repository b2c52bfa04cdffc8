"""User-facing errors: one clear line each, exit code 2 at the command line."""

import importlib
from types import ModuleType


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


_DISTRIBUTIONS = {
    "PIL": "pillow",
    "prometheus_client": "prometheus-client",
}  # import name -> the name pip installs it by, where they differ


def import_optional(module: str, extra: str, feature: str) -> ModuleType:
    """Import an optional dependency where a feature first needs it.

    Args:
        module: the module to import (``"h5py"``, ``"matplotlib.figure"``...).
        extra: the ``laddertune`` extra that installs it (``"vision"``, ``"report"``...).
        feature: what needs it, for the message (``"laddertune features"``).

    Raises:
        ConfigError: ``module`` is not installed; one line naming the feature and the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise  # the package is there but something it imports is missing: not ours to explain
        package = _DISTRIBUTIONS.get(e.name.split(".")[0], e.name.split(".")[0])
        raise ConfigError(
            f"{feature} needs {package}, which is not installed: pip install 'laddertune[{extra}]'"
        ) from None


def listing(items, limit: int = 20) -> str:
    """``a, b, c`` for an error message, cut after ``limit`` items with a count (``..., t and 280 more``), so that
    a label error on 300 classes stays one readable line."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} \u2026 and {len(items) - limit} more"
