"""Dynamic batching: requests that arrive within a few milliseconds share one model call.

A request for one sentence costs the model almost as much as a request for
thirty-two: at batch 1 the time goes into per-call overhead and
matrix-vector products, and a batch turns those into matrix-matrix products
over the length-bucketed, packed encoder. So instead of running each request
on its own, the :class:`Batcher` queues them; one worker task takes what is
waiting (once the batch is full, or ``max_wait_ms`` after the first request
came), makes one call of ``predict`` for all their texts on a single worker
thread (the event loop keeps accepting requests meanwhile), and hands each
request back its own slice of the results.

``max_batch_size=1`` and ``max_wait_ms=0`` run each request alone: batching off,
through the same code path.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Sequence


@dataclass
class Pending:
    texts: List[str]
    future: "asyncio.Future[List[Any]]"
    arrived: float  # the event loop's clock when the request was queued


@dataclass
class BatchStats:
    batches: int = 0          # model calls made
    texts: int = 0            # texts they read
    sizes: List[int] = field(default_factory=list)  # texts per call, the last 1,000 calls

    def record(self, size: int) -> None:
        self.batches += 1
        self.texts += size
        self.sizes = self.sizes[-999:] + [size]


class Batcher:
    """Queue texts from many requests; run them as one call of ``predict`` on ``executor``.

    ``predict(texts) -> results`` must return one result per text, in order
    (``Run.predict``). A request is never split: a batch is whole requests,
    up to ``max_batch_size`` texts (or one request, if that alone is bigger).
    """

    def __init__(self, predict: Callable[[List[str]], Sequence[Any]], executor: Executor, max_batch_size: int = 64, max_wait_ms: float = 2.0) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.predict = predict
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._waiting: Deque[Pending] = deque()
        self._queued = 0                   # texts in _waiting
        self._arrived = asyncio.Event()    # something is waiting
        self._full = asyncio.Event()       # enough is waiting for a full batch
        self._closing = False
        self._worker: Optional[asyncio.Task] = None

    @property
    def queued(self) -> int:
        """Texts waiting for the model (not counting the batch it is running)."""
        return self._queued

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def hurry(self) -> None:
        """Stop waiting for company (the server is shutting down): run what is queued now."""
        self.max_wait = 0.0
        self._full.set()

    async def close(self) -> None:
        """Stop taking requests and finish the ones already queued."""
        self._closing = True
        self._arrived.set()
        self._full.set()
        if self._worker is not None:
            await self._worker

    async def submit(self, texts: List[str]) -> List[Any]:
        """The results for ``texts``, once the batch they joined has run."""
        if self._closing:
            raise RuntimeError("the batcher is shutting down")
        loop = asyncio.get_running_loop()
        pending = Pending(texts, loop.create_future(), loop.time())
        self._waiting.append(pending)
        self._queued += len(texts)
        self._arrived.set()
        if self._queued >= self.max_batch_size:
            self._full.set()
        return await pending.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            # Wait for company only until the first request has waited max_wait in all.
            # Requests that queued while the model ran the previous batch have waited
            # already: they run as soon as the model thread is free, so that the HTTP
            # work of one batch overlaps the model work of the next.
            left = self._waiting[0].arrived + self.max_wait - loop.time()
            if left > 0 and self._queued < self.max_batch_size and not self._closing:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), left)
                except asyncio.TimeoutError:
                    pass
            await self._run(self._take())

    def _take(self) -> List[Pending]:
        """Whole requests from the front of the queue, up to max_batch_size texts (at least one request)."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].texts)
        while self._waiting and size + len(self._waiting[0].texts) <= self.max_batch_size:
            batch.append(self._waiting.popleft())
            size += len(batch[-1].texts)
        self._queued -= size
        return batch

    async def _run(self, batch: List[Pending]) -> None:
        texts = [t for pending in batch for t in pending.texts]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.predict, texts)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the worker carries on
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.stats.record(len(texts))
        start = 0
        for pending in batch:
            end = start + len(pending.texts)
            if not pending.future.done():  # done: the client went away (cancelled)
                pending.future.set_result(list(results[start:end]))
            start = end
