"""The HTTP service (``icd serve``): one process holding the models and one reference index, answering
``/match``, ``/score``, ``/references`` (add, remove), ``/health`` and ``/stats`` over FastAPI.

:mod:`~matcher.service.core` is the engine side (models, the index, locks, counters) and knows nothing of HTTP;
:mod:`~matcher.service.app` builds the FastAPI application on it (needs the ``serve`` extra:
``pip install "icd-matcher[serve]"``). Importing this package imports neither.
"""

__all__ = ["TOKEN_ENV"]

TOKEN_ENV = "ICD_SERVICE_TOKEN"  # environment variable holding the service's bearer token (``icd serve``)
