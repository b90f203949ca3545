"""`nlptk serve`: a trained run behind an HTTP JSON API (FastAPI on uvicorn).

    from nlptoolkit.serve import serve
    serve("runs/sentiment", port=8000)          # what `nlptk serve runs/sentiment` does

One file per idea:

* ``requests.py``  reads and checks a request body (every mistake is a 4xx with a one-line JSON error);
* ``batcher.py``   groups requests that arrive together into one call of ``Run.predict``,
                   on a single worker thread, off the event loop;
* ``app.py``       the FastAPI application: ``/predict``, ``/generate``, ``/health``, ``/info``;
* ``server.py``    binds the socket and runs uvicorn, shutting down cleanly on SIGTERM.

FastAPI and uvicorn are the optional extra ``[serve]``; nothing here imports
them until a server is made, so the rest of nlptoolkit works without them.
"""
from __future__ import annotations

from typing import Any

from nlptoolkit.errors import NlptkError

INSTALL_HINT = 'pip install "nlptoolkit[serve]"'


def require_extra() -> None:
    """A one-line error, not an ImportError traceback, when the ``[serve]`` extra is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise NlptkError(f"serving needs FastAPI and uvicorn ({exc.name} is not installed): {INSTALL_HINT}") from None


def serve(*args: Any, **kwargs: Any) -> None:
    """Serve a run folder over HTTP until SIGTERM or Ctrl-C; see :func:`nlptoolkit.serve.server.serve`."""
    require_extra()
    from nlptoolkit.serve.server import serve as run_server

    run_server(*args, **kwargs)
