"""The HTTP API of a run, as a FastAPI application.

    POST /predict   {"texts": ["...", ...]}  ->  what Run.predict returns: one JSON object per text
    POST /generate  {"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0.8, "top_k": null, "seed": null}
                    ->  the text, streamed as it is made (language models)
    GET  /health    {"status": "ok", "queued": ..., "batches": ..., "texts": ...}
    GET  /info      the task, its labels, the recipe, the limits and the batching settings

All model work runs on one worker thread, in turn: /predict through the
:class:`~nlptoolkit.serve.batcher.Batcher`, /generate one stream at a time.
A client mistake is a 4xx with ``{"error": "one line"}``, never a 5xx.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import nlptoolkit
from nlptoolkit.api import Run
from nlptoolkit.serve.batcher import Batcher
from nlptoolkit.serve.requests import BadRequest, Limits, read_generate, read_predict
from nlptoolkit.task import Task


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it accepts (`nlptk serve --help` lists each)."""

    max_batch_size: int = 64     # texts per model call
    max_wait_ms: float = 2.0     # how long the first request of a batch may wait for company
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def unbatched(cls, limits: Limits = Limits()) -> "ServeSettings":
        """Every request on its own: the baseline that dynamic batching is measured against."""
        return cls(max_batch_size=1, max_wait_ms=0.0, limits=limits)


def create_app(run: Run, settings: ServeSettings = ServeSettings(), on_ready: Optional[Callable[[], None]] = None) -> FastAPI:
    """The application serving ``run``. ``on_ready`` is called once it takes requests."""
    can_predict = type(run.task).predict is not Task.predict and run.task.input_kind != "features"
    can_generate = type(run.task).generate is not Task.generate
    if can_generate:
        run.generation_weights()  # the recipe's weight storage checked (and measured, the first time) before serving, not in a request
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlptk-model")  # the one thread that touches the model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(run.predict, executor, settings.max_batch_size, settings.max_wait_ms)
        app.state.batcher.start()
        if on_ready is not None:
            on_ready()
        yield
        await app.state.batcher.close()  # uvicorn has already let the requests in flight finish; this empties the queue
        executor.shutdown(wait=True)

    app = FastAPI(title=f"nlptk: {run.path.name} ({run.recipe.task})", version=nlptoolkit.__version__, lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # 404, 405: the same shape of error
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    app.router.routes.append(Route("/predict", PredictEndpoint(run, app.state, settings.limits, can_predict, can_generate), methods=["POST"]))
    document_predict(app)

    @app.post("/generate", openapi_extra=GENERATE_SCHEMA)
    async def generate(request: Request) -> StreamingResponse:
        """The prompt and the generated text, streamed piece by piece (text/plain)."""
        if not can_generate:
            raise BadRequest(404, f"this '{run.recipe.task}' run does not generate text" + ("; POST /predict" if can_predict else ""))
        options = read_generate(await receive_body(request.receive, settings.limits.max_body_bytes), settings.limits)
        return StreamingResponse(stream_on(executor, lambda: run.generate_stream(**options)), media_type="text/plain; charset=utf-8")

    @app.get("/health")
    async def health(request: Request) -> Dict[str, Any]:
        batcher: Batcher = request.app.state.batcher
        return {"status": "ok", "queued": batcher.queued, "batches": batcher.stats.batches, "texts": batcher.stats.texts}

    app.state.info = describe(run, settings, can_predict, can_generate)

    @app.get("/info")
    async def info(request: Request) -> Dict[str, Any]:
        return request.app.state.info

    return app


class PredictEndpoint:
    """POST /predict as a plain ASGI application on a Starlette route: the server's hot path.

    One result per text, in order: exactly what ``Run.predict`` returns. A
    FastAPI route would parse parameters, solve dependencies and build a
    Response object for every request: with the model stubbed out, that took
    about 125 us of CPU per request on this path, against about 55 us here.
    Under load the event loop's time per request is what limits a batching
    server (the model's share shrinks with the batch), so it matters. The
    route still sits inside FastAPI's routing and exception handlers: a
    :class:`BadRequest` becomes the same 4xx JSON error as on any endpoint,
    and a wrong method the same 405.
    """

    def __init__(self, run: Run, state: State, limits: Limits, can_predict: bool, can_generate: bool) -> None:
        self.run, self.state, self.limits = run, state, limits
        self.can_predict, self.can_generate = can_predict, can_generate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.can_predict:
            raise BadRequest(404, f"this '{self.run.recipe.task}' run does not predict from text" + ("; POST /generate" if self.can_generate else ""))
        texts = read_predict(await receive_body(receive, self.limits.max_body_bytes), self.limits)
        results = await self.state.batcher.submit(texts)
        body = json.dumps(results, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")  # as JSONResponse writes it
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body})


def document_predict(app: FastAPI) -> None:
    """Put POST /predict in the OpenAPI schema (/docs): FastAPI lists only its own routes."""
    make_schema = app.openapi

    def openapi() -> Dict[str, Any]:
        schema = make_schema()
        schema["paths"].setdefault("/predict", {"post": {
            "summary": "Predict", "description": "One result per text, in order: exactly what `Run.predict` returns.",
            "responses": {"200": {"description": "A JSON list, one object per text"}, "4XX": {"description": '{"error": "one line"}'}},
            **PREDICT_SCHEMA,
        }})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def receive_body(receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "the client closed the connection before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over {limit:,} bytes, more than any request within this server's limits can be")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def stream_on(executor: ThreadPoolExecutor, make: Callable[[], Any]) -> AsyncIterator[str]:
    """Run the iterator ``make()`` on the model thread, passing its pieces to the event loop as they come.

    The whole stream holds the model thread (generation is sequential and
    seeded); when the client goes away the thread stops at the next piece.
    """
    loop = asyncio.get_running_loop()
    pieces: "asyncio.Queue[Any]" = asyncio.Queue()
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for piece in make():
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
        except Exception as exc:  # noqa: BLE001 - the headers are sent; all we can do is end the stream and say why
            print(f"error: /generate stopped: {exc}", file=sys.stderr)
        finally:
            loop.call_soon_threadsafe(pieces.put_nowait, done)

    loop.run_in_executor(executor, produce)
    try:
        while True:
            piece = await pieces.get()
            if piece is done:
                return
            yield piece
    finally:
        stop.set()


def output_labels(run: Run) -> Optional[List[str]]:
    """The classes a classifier picks from, or the tags of a tagger (None for tasks without a fixed set)."""
    for name in ("labels", "tags"):
        vocabulary = getattr(run.task, name, None)
        if vocabulary is not None and hasattr(vocabulary, "itos"):
            return list(vocabulary.itos)
    return None


def describe(run: Run, settings: ServeSettings, can_predict: bool, can_generate: bool) -> Dict[str, Any]:
    """The body of GET /info."""
    recipe = yaml.safe_load((run.path / "recipe.yaml").read_text(encoding="utf-8"))
    return {
        "run": str(run.path), "task": run.recipe.task, "labels": output_labels(run),
        "endpoints": [e for e, ok in (("/predict", can_predict), ("/generate", can_generate)) if ok] + ["/health", "/info"],
        "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms},
        "limits": {**asdict(settings.limits), "max_body_bytes": settings.limits.max_body_bytes},
        "version": nlptoolkit.__version__, "recipe": recipe,
    }


PREDICT_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["texts"], "additionalProperties": False,
    "properties": {"texts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}},
}}}}}
GENERATE_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string", "default": ""}, "max_tokens": {"type": "integer", "minimum": 0, "default": 200},
        "temperature": {"type": "number", "minimum": 0, "default": 1.0}, "top_k": {"type": ["integer", "null"], "minimum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0},
    },
}}}}}
