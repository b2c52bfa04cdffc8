"""The name transformers gives a model's key/value cache, which changed within the supported releases.

transformers up to 5.23 passes the cache to ``forward`` as ``past_key_values`` and returns it in an output's
``past_key_values`` field; from 5.24 both are ``cache`` (the old name still works on models and outputs, with a
deprecation warning, and ``generate()`` passes and reads only the new one). A LadderModel is called by
``generate()`` with the installed release's name and calls its two stacks with it, so the name is read once here,
from the output classes themselves, and every use goes through :data:`CACHE` and :func:`output_cache`.
"""

from __future__ import annotations

from transformers.modeling_outputs import BaseModelOutputWithPast

CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The installed transformers' name of the cache: the ``forward`` keyword and the output field."""


def output_cache(output):
    """The cache an output (a ``ModelOutput``) holds, read under the installed release's field name."""
    return getattr(output, CACHE, None)


def pop_cache(kwargs: dict):
    """Take the cache out of ``kwargs`` under either name (``cache`` or ``past_key_values``); None when absent.

    Raises:
        ValueError: both names given.
    """
    new, old = kwargs.pop("cache", None), kwargs.pop("past_key_values", None)
    if new is not None and old is not None:
        raise ValueError("give the cache as `cache` or as `past_key_values`, not both")
    return new if new is not None else old
