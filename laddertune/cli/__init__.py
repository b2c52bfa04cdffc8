"""The ``laddertune`` command line: a thin layer over typed library functions.

One module per command group (``train``/``evaluate`` in :mod:`.train`, ``memory`` in :mod:`.memory`), each with
``register(subparsers)`` and its ``run`` functions; :mod:`.main` is the dispatcher. User errors print one line and
exit 2; progress bars and summary lines live here, never in the library.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
