"""The OpenAI-compatible server through the official `openai` client: each response format against
`Transcriber.transcribe` on the same file and options, subtitles read back with the real parsers, and the limits
(400, 413, 503), after each of which the server goes on serving."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import srt
import uvicorn
import webvtt

from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.formats import cues, render
from whisper_tflite.server import create_app

MAX_UPLOAD = 1024 * 1024  # the test server's limit: a 1 MB request is 33 s of 16 kHz 16-bit audio
QUEUE = 1  # one request may wait for the one worker
JFK = "en_jfk_whisper-cpp.wav"
SHORT = "en_ljspeech_LJ002-0020.wav"


@dataclass
class Served:
    url: str
    port: int
    transcriber: Transcriber
    client: openai.OpenAI

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/health", timeout=10) as answer:
            return json.load(answer)

    def wait_for(self, pending: int) -> None:
        deadline = time.monotonic() + 30
        while self.health()["pending"] != pending:
            assert time.monotonic() < deadline, f"the server never had {pending} requests pending"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(default_bundle):
    """The server on a free loopback port, in a thread of this process."""
    transcriber = Transcriber(default_bundle, threads=2)
    app = create_app(transcriber, max_upload_bytes=MAX_UPLOAD, queue=QUEUE)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
    yield Served(url, port, transcriber, client)
    server.should_exit = True
    thread.join(timeout=30)
    listener.close()


@pytest.fixture(scope="module")
def paths(english_clips):
    return {clip.path.name: clip.path for clip in english_clips}


def test_every_response_format_with_words_and_segments(served, paths):
    expected = served.transcriber.transcribe(paths[JFK], word_timestamps=True)
    assert "ask not what your country can do for you" in expected.text

    def create(response_format):
        return served.client.audio.transcriptions.create(
            model="whisper-1", file=paths[JFK], response_format=response_format,
            timestamp_granularities=["word", "segment"])

    assert create("json").text == expected.text
    assert create("text") == expected.text + "\n"

    subtitles = create("srt")
    assert subtitles == render(expected, "srt")
    parsed = list(srt.parse(subtitles))
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in parsed] == \
        [(round(start, 3), round(end, 3), text) for start, end, text in cues(expected)]
    assert " ".join(c.content for c in parsed).split() == expected.text.split()

    captions = create("vtt")
    assert captions == render(expected, "vtt")
    parsed = webvtt.from_buffer(io.StringIO(captions)).captions
    assert [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text) for c in parsed] == \
        [(round(start * 1000), round(end * 1000), text) for start, end, text in cues(expected)]

    verbose = create("verbose_json").to_dict()
    assert {key: verbose[key] for key in ("task", "language", "duration", "text")} == \
        {"task": "transcribe", "language": "english", "duration": 11.0, "text": expected.text}
    assert verbose["segments"] == [{k: v for k, v in s.items() if k != "words"} for s in expected.to_dict()["segments"]]
    assert {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
            "no_speech_prob"} == set(verbose["segments"][0])
    assert verbose["words"] == [{"word": w.word.strip(), "start": w.start, "end": w.end}
                                for s in expected.segments for w in s.words]


def test_verbose_json_gives_the_granularities_asked_with_the_options_asked(served, paths):
    prompt = "President Kennedy's inaugural address."
    expected = served.transcriber.transcribe(paths[JFK], language="en", initial_prompt=prompt)
    segments = served.client.audio.transcriptions.create(
        model="whisper-1", file=paths[JFK], response_format="verbose_json", language="en", prompt=prompt,
        temperature=0.0).to_dict()
    assert segments["text"] == expected.text
    assert [s["text"] for s in segments["segments"]] == [s.text for s in expected.segments]
    assert "words" not in segments

    expected = served.transcriber.transcribe(paths[SHORT], word_timestamps=True)
    words = served.client.audio.transcriptions.create(
        model="whisper-1", file=paths[SHORT], response_format="verbose_json",
        timestamp_granularities=["word"]).to_dict()
    assert words["text"] == expected.text
    assert [w["word"] for w in words["words"]] == [w.word.strip() for s in expected.segments for w in s.words]
    assert "segments" not in words


@pytest.mark.parametrize("upload", [("notes.txt", b"these are words, not sounds\n"), ("empty.wav", b"")])
def test_a_bad_upload_is_a_400_and_the_server_goes_on(served, paths, upload):
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.audio.transcriptions.create(model="whisper-1", file=upload)
    body = caught.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == "file"
    assert body["message"].startswith(f"{upload[0]}: ") and "\n" not in body["message"]
    _assert_serves(served, paths)


def test_a_translation_an_english_only_model_cannot_make_is_a_400(served, paths):
    with pytest.raises(openai.BadRequestError, match="English-only model: it cannot translate"):
        served.client.audio.translations.create(model="whisper-1", file=paths[SHORT])


def test_an_oversize_upload_is_a_413_with_or_without_its_length(served, paths):
    with pytest.raises(openai.APIStatusError) as caught:
        served.client.audio.transcriptions.create(model="whisper-1", file=("long.wav", bytes(MAX_UPLOAD)))
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"
    assert f"over this server's limit of {MAX_UPLOAD} bytes" in caught.value.body["message"]

    # Sent in chunks, the body has no Content-Length: the server counts what arrives
    boundary = "limit"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        connection.request("POST", "/v1/audio/transcriptions", encode_chunked=True,
                           body=iter([head] + [bytes(64 * 1024)] * (MAX_UPLOAD // (64 * 1024) + 1)),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = connection.getresponse()
        assert answer.status == 413
        assert json.load(answer)["error"]["code"] == "request_too_large"
    finally:
        connection.close()
    _assert_serves(served, paths)


def test_requests_past_the_queue_are_a_503(served, paths):
    """Uploads that never end hold the worker's place and the queue's; the next request is turned away at once."""
    stalled = []
    for _ in range(1 + QUEUE):
        connection = socket.create_connection(("127.0.0.1", served.port))
        connection.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
                           b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
        stalled.append(connection)
    try:
        served.wait_for(pending=1 + QUEUE)
        with pytest.raises(openai.InternalServerError) as caught:
            served.client.audio.transcriptions.create(model="whisper-1", file=paths[SHORT])
        assert caught.value.status_code == 503
        assert caught.value.body["type"] == "server_error" and caught.value.body["code"] == "server_busy"
    finally:
        for connection in stalled:
            connection.close()
    served.wait_for(pending=0)
    _assert_serves(served, paths)


def test_models_and_health(served, default_bundle):
    assert [model.id for model in served.client.models.list()] == [default_bundle.name]
    assert served.client.models.retrieve(default_bundle.name).owned_by == "whisper-tflite"
    with pytest.raises(openai.NotFoundError):
        served.client.models.retrieve("whisper-1")
    assert served.health()["status"] == "ok"


def _assert_serves(served: Served, paths: dict[str, Path]) -> None:
    answer = served.client.audio.transcriptions.create(model="whisper-1", file=paths[SHORT])
    assert answer.text == served.transcriber.transcribe(paths[SHORT]).text != ""


def test_the_server_side_never_imports_tensorflow_and_serve_names_a_missing_extra():
    """With TensorFlow unimportable the server module loads; with Starlette unimportable, `serve` says what to
    install in one line."""
    script = textwrap.dedent("""
        import sys
        class Block:
            def __init__(self, names):
                self.names = names
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.names:
                    raise ModuleNotFoundError("blocked: " + name, name=name.split(".")[0])
        sys.meta_path.insert(0, Block(("tensorflow", "transformers", "tf_keras", "keras")))
        import whisper_tflite.server
        assert not any(m.split(".")[0] in ("tensorflow", "transformers") for m in sys.modules)
        for name in list(sys.modules):
            if name.startswith(("whisper_tflite.server", "starlette")):
                del sys.modules[name]
        sys.meta_path.insert(0, Block(("starlette",)))
        from whisper_tflite.cli import main
        sys.exit(main(["serve", "--model", "nowhere"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == "whisper-tflite: error: serve needs starlette: pip install 'whisper-tflite[serve]'\n"


def test_serve_checks_its_options_first():
    done = subprocess.run([sys.executable, "-m", "whisper_tflite.cli", "serve", "--workers", "0"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, "whisper-tflite: error: --workers must be at least 1\n")
