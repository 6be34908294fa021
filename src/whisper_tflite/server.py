"""An OpenAI-compatible speech-to-text server on a bundle: an OpenAI client uses the local model once its base URL
points here.

`POST /v1/audio/transcriptions` and `/v1/audio/translations` take OpenAI's multipart form (file, model, language,
prompt, response_format, temperature, timestamp_granularities[]) and answer in OpenAI's shapes; `GET /v1/models`
lists the bundle; `GET /health`. Transcriptions run in a thread pool of the Transcriber's workers, so the event
loop only reads uploads and writes answers. Request bodies and waiting requests are bounded (413, 503), and every
error has OpenAI's JSON body. The upload is decoded from memory; Starlette spools a large one to an unnamed
temporary file, closed (and so gone) with the form.

Needs the `serve` extra (Starlette, uvicorn, python-multipart); never imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import python_multipart  # noqa: F401  Starlette parses forms with it: missing, `serve` says so before it starts
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .errors import AudioError, BundleError, UsageError
from .runtime import Transcriber, TranscriptionOptions, TranscriptionResult
from .runtime.formats import render
from .tokens import LANGUAGES

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
MAX_UPLOAD_MB = 25  # OpenAI's limit for an audio file
QUEUE = 16  # requests that may wait for a worker


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    """OpenAI's error body."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class _TooLarge(Exception):
    pass


def _limited(receive, limit: int):
    """`receive` that refuses a body growing past `limit` bytes (one sent in chunks has no Content-Length)."""
    received = 0

    async def receive_limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
        return message

    return receive_limited


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclasses.dataclass(frozen=True)
class _Request:
    """What one transcription request asks for."""

    audio: io.BytesIO
    language: str | None
    response_format: str
    granularities: tuple[str, ...]
    options: TranscriptionOptions


class TranscriptionService:
    """The routes' state: the Transcriber, its thread pool, and the count of requests taken in."""

    def __init__(self, transcriber: Transcriber, options: TranscriptionOptions = TranscriptionOptions(),
                 max_upload_bytes: int = MAX_UPLOAD_MB * 1024 * 1024, queue: int = QUEUE):
        self.transcriber = transcriber
        self.options = options
        self.model_id = transcriber.bundle.folder.name
        self.created = int((transcriber.bundle.folder / "manifest.json").stat().st_mtime)
        self.max_upload_bytes = max_upload_bytes
        self.max_pending = transcriber.num_workers + queue
        self.pending = 0  # requests between being taken in and answered; touched by the event loop only
        self.pool = ThreadPoolExecutor(transcriber.num_workers, thread_name_prefix="transcribe")

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_app):
            yield
            self.pool.shutdown(wait=False, cancel_futures=True)

        routes = [
            Route("/v1/audio/transcriptions", functools.partial(self.audio, task="transcribe"), methods=["POST"]),
            Route("/v1/audio/translations", functools.partial(self.audio, task="translate"), methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=lifespan,
                         exception_handlers={HTTPException: self.http_error, Exception: self.internal_error})

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail))

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        """A bug's answer; the traceback goes to the server's log, and the server goes on."""
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    def _model_entry(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "whisper-tflite"}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_entry()]})

    async def model(self, request: Request) -> Response:
        if request.path_params["model_id"] != self.model_id:
            return error(404, f"no model {request.path_params['model_id']!r} here; this server runs "
                              f"{self.model_id!r}", "model", "model_not_found")
        return JSONResponse(self._model_entry())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.model_id, "workers": self.transcriber.num_workers,
                             "pending": self.pending, "max_pending": self.max_pending})

    async def audio(self, request: Request, task: str) -> Response:
        """Taken in only while fewer than workers + queue requests are: the uploads held and the work waiting
        stay bounded."""
        if self.pending >= self.max_pending:
            return error(503, f"the server is busy ({self.pending} requests in progress or waiting); retry later",
                         code="server_busy")
        self.pending += 1
        try:
            return await self._transcribe(request, task)
        finally:
            self.pending -= 1

    async def _transcribe(self, request: Request, task: str) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_upload_bytes:
            return self._too_large(int(length))
        request = Request(request.scope, _limited(request.receive, self.max_upload_bytes))
        try:
            async with request.form(max_files=1, max_fields=32) as form:
                asked = await self._read(form)
        except _TooLarge:
            return self._too_large()
        except ClientDisconnect:  # gone before its upload ended: no one to answer
            return Response(status_code=400)
        except _BadRequest as e:
            return error(400, str(e), e.param)
        call = functools.partial(self.transcriber.transcribe, asked.audio, language=asked.language, task=task,
                                 **dataclasses.asdict(asked.options))
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except (AudioError, UsageError, BundleError) as e:
            return error(400, str(e), "file" if isinstance(e, AudioError) else None)
        return response(result, task, asked.response_format, asked.granularities)

    def _too_large(self, size: int | None = None) -> Response:
        """`size`: the Content-Length, where the request gave one."""
        request = "the request" if size is None else f"the request ({size} bytes)"
        return error(413, f"{request} is over this server's limit of {self.max_upload_bytes} bytes", "file",
                     "request_too_large")

    async def _read(self, form: FormData) -> _Request:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _BadRequest("attach the audio as the multipart field 'file'", "file")
        audio = io.BytesIO(await upload.read())
        audio.name = upload.filename or "upload"  # how an error message names it
        response_format = str(form.get("response_format") or "json")
        if response_format not in RESPONSE_FORMATS:
            raise _BadRequest(f"response_format {response_format!r}: choose one of {', '.join(RESPONSE_FORMATS)}",
                              "response_format")
        granularities = tuple(str(g) for g in [*form.getlist("timestamp_granularities[]"),
                                               *form.getlist("timestamp_granularities")])
        for granularity in granularities:
            if granularity not in GRANULARITIES:
                raise _BadRequest(f"timestamp_granularities {granularity!r}: choose word, segment or both",
                                  "timestamp_granularities")
        options = dataclasses.replace(self.options, word_timestamps="word" in granularities)
        prompt = str(form.get("prompt") or "").strip()
        if prompt:
            options = dataclasses.replace(options, initial_prompt=prompt)
        temperature = str(form.get("temperature") or "").strip()
        if temperature:
            try:
                value = float(temperature)
            except ValueError:
                raise _BadRequest(f"temperature {temperature!r}: give a number from 0 to 1", "temperature") from None
            if not 0 <= value <= 1:
                raise _BadRequest(f"temperature {value:g}: give a number from 0 to 1", "temperature")
            # As OpenAI: 0 is the fallback to higher temperatures while the text is a loop or unsure
            if value > 0:
                options = dataclasses.replace(options, temperature=(value,))
        language = str(form.get("language") or "").strip() or None
        return _Request(audio, language, response_format, granularities or ("segment",), options)


def response(result: TranscriptionResult, task: str, response_format: str, granularities: tuple[str, ...]) -> Response:
    """OpenAI's answer in each format: json {"text"}; text, srt, vtt as text; verbose_json with the language's
    name, the duration, and segments and/or words as asked."""
    if response_format == "json":
        return JSONResponse({"text": result.text})
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(render(result, response_format))
    body = {"task": task, "language": LANGUAGES.get(result.language, result.language),
            "duration": round(result.duration, 3), "text": result.text}
    if "segment" in granularities:
        body["segments"] = [{k: v for k, v in segment.items() if k != "words"}
                            for segment in result.to_dict()["segments"]]
    if "word" in granularities:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                         for s in result.segments for w in s.words or []]
    return JSONResponse(body)


def create_app(transcriber: Transcriber, options: TranscriptionOptions = TranscriptionOptions(),
               max_upload_bytes: int = MAX_UPLOAD_MB * 1024 * 1024, queue: int = QUEUE) -> Starlette:
    """The ASGI app serving `transcriber`; `options` are the decoding defaults a request's own fields change."""
    return TranscriptionService(transcriber, options, max_upload_bytes, queue).app()


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, threads: int | None = None,
          queue: int = QUEUE, max_upload_mb: float = MAX_UPLOAD_MB,
          options: TranscriptionOptions = TranscriptionOptions()) -> None:
    """Loads the bundle (`workers` interpreter sets) and serves it until interrupted."""
    transcriber = Transcriber(model, threads=threads, num_workers=workers)
    app = create_app(transcriber, options, max_upload_bytes=int(max_upload_mb * 1024 * 1024), queue=queue)
    uvicorn.run(app, host=host, port=port, log_level="info")
