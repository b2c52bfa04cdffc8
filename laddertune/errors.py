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
