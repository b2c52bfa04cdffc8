"""Serving many fine-tuned tasks from one backbone: ``laddertune serve``, an OpenAI-compatible HTTP server.

One process holds one frozen backbone and any number of named side networks on it (:mod:`.registry`), LM and
classification heads mixed. Requests for different side networks that arrive together share each backbone pass, the
prefill and every decoding step (:mod:`.batching`: a decoding loop over a batch whose rows use different side
networks, which transformers' ``generate()`` cannot run), scheduled by one engine thread (:mod:`.engine`) behind
FastAPI routes (:mod:`.app`). FastAPI and uvicorn are the ``serve`` extra.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "create_app": ".app",
    "Engine": ".engine",
    "MixedBatch": ".batching",
    "ServedModels": ".registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
