"""Run the application under uvicorn on a socket we bind ourselves.

Binding first turns "address in use" into a one-line error and lets
``port=0`` pick a free port (the ready line says which). SIGTERM and Ctrl-C
stop the server gracefully: uvicorn stops accepting connections, lets the
requests in flight finish, then the application empties its batch queue; the
process then exits 0.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Union

import torch
import uvicorn

from nlptoolkit.api import PathLike, Run, load
from nlptoolkit.errors import NlptkError
from nlptoolkit.serve.app import ServeSettings, create_app


def serve(
    run: Union[Run, PathLike], host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings = ServeSettings(),
    access_log: bool = True, checkpoint: str = "best", threads: Optional[int] = 1,
) -> None:
    """Serve ``run`` (a :class:`Run` or a run folder) on ``host:port`` until SIGTERM or Ctrl-C.

    ``threads``: torch's intra-op threads for the model (None: torch's default).
    One by default: the event loop needs a core too, and OpenMP threads that
    spin-wait for a descheduled partner make small batches many times slower
    on shared cores.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    bound_primitive_cache()
    run = run if isinstance(run, Run) else load(run, checkpoint)
    sock = bind(host, port)
    where = sock.getsockname()
    url = f"http://{where[0] if ':' not in where[0] else f'[{where[0]}]'}:{where[1]}"

    def ready() -> None:
        endpoints = ", ".join(app.state.info["endpoints"])
        print(f"serving {run.path} ({run.recipe.task}) on {url}: {endpoints}; SIGTERM or Ctrl-C stops it", file=sys.stderr, flush=True)

    app = create_app(run, settings, on_ready=ready)
    config = uvicorn.Config(app, log_level="info", access_log=access_log, timeout_graceful_shutdown=None)
    with signals_end_quietly():
        GracefulServer(config, on_shutdown=lambda: app.state.batcher.hurry()).run(sockets=[sock])


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which lets the batcher know as soon as shutdown starts.

    uvicorn then waits for the requests in flight; those in the batch queue
    should not sit out their --max-wait-ms first.
    """

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: Optional[List[socket.socket]] = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def bound_primitive_cache(capacity: int = 256) -> None:
    """Bound oneDNN's cache of compiled kernels, unless the user chose a size.

    oneDNN compiles a kernel for every input shape it meets (texts x longest
    text) and keeps up to 1,024 of them, and a batching server meets a new
    shape with many batches. Too big a cache grows the server's memory: with
    1,024, by a fifth over a 10,000-request soak (308 -> 373 MB), still
    climbing. Too small, and the batches miss it: recompiling costs about
    0.8 ms a batch, and in-process on batches of 10-22 sentences the model
    took 0.43 ms a text with 256 against 0.52 with 64 (medians of 4 runs; 128
    was no better than 64). With 256 the soak's memory levels off (313 ->
    336 MB, +7%, flat over the last 3,000 requests). Read when oneDNN first
    runs: it must be set before the model does.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or a one-line error naming the option to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise NlptkError(f"--host {host}: not an address of this machine ({exc.strerror}); use 127.0.0.1, or 0.0.0.0 for every interface") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = "another process is using it; pick another --port (0: any free port)" if exc.errno == 98 else "check --host and --port"
        raise NlptkError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); {hint}") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def signals_end_quietly() -> Iterator[None]:
    """After uvicorn's graceful shutdown, end with exit code 0 rather than dying of the signal it caught.

    uvicorn raises the signal again once it has shut down, so that the
    previous handler runs; this makes that handler a no-op while it serves.
    """
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
