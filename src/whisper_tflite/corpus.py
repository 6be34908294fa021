"""Transcribe a corpus: many files in worker processes on this machine, or as Ray tasks on a cluster.

Results go to a JSON Lines file, one object a file (`transcribe --format json`'s object plus `duration`, `wall_s`
and `error`), written by this process alone: each line is appended and fsync'ed as its file finishes, so a crash
or Ctrl-C loses nothing finished, and a rerun skips every file that already has a line (its transcript or its
error) and does the rest. A file that cannot be read gets its one-line error and the run goes on.

Each worker loads the bundle once. On one machine, one single-threaded worker a core by default (more files
per second than half as many workers of two threads: `benchmarks/corpus.py`); a worker that dies (killed, out of
memory) is replaced and its file given to another, and a file that two workers died on gets an error line. On
Ray, the bundle travels through the object store (only the driver needs it on disk); the audio paths must be
readable on every node (shared storage), as for any Ray job that reads files; Ray runs a task again when its
worker dies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path

from .errors import UsageError, WhisperTfliteError
from .native_log import LOG

# What libsndfile or FFmpeg reads, as files are found in folders; a file given by name is taken whatever its name.
AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .ogg .oga .opus .m4a .mp4 .aac .webm .mkv .mov .wma .aiff .aif .caf .amr .3gp".split())
LIST_EXTENSIONS = frozenset((".txt", ".lst", ".list"))
ATTEMPTS = 2  # workers a file may take down before it is recorded as failed


@dataclass
class CorpusSummary:
    files: int  # in the corpus
    skipped: int  # already in the output
    transcribed: int
    failed: int
    audio_seconds: float  # of this run's transcribed files
    wall_seconds: float


def clock(seconds: float) -> str:
    """H:MM:SS, as audio durations are read."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def collect_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Audio files from files, folders (recursively, by extension, sorted) and list files (.txt/.lst/.list: a
    path a line, relative to the list's folder; # starts a comment), in order, each once, as absolute paths."""
    found: dict[Path, None] = {}
    for given in map(Path, inputs):
        if given.is_dir():
            found.update((_absolute(p), None) for p in sorted(given.rglob("*"))
                         if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        elif given.suffix.lower() in LIST_EXTENSIONS and given.is_file():
            try:
                lines = given.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise UsageError(f"{given}: a list file must be UTF-8 text, a path a line") from None
            paths = (line.split("#", 1)[0].strip() for line in lines)
            found.update((_absolute(given.parent / path), None) for path in paths if path)
        elif given.exists():
            found[_absolute(given)] = None
        else:
            raise UsageError(f"{given}: no such file or folder")
    return list(found)


def _absolute(path: Path) -> Path:
    """Absolute and without `..`, but links kept: two names of one file are two files, as the user named them."""
    return Path(os.path.abspath(path))


def finished_files(output: Path) -> set[str]:
    """The files that have a line in `output`. A last line cut short by a crash is removed, so that the next
    line appended starts on a line of its own."""
    if not output.exists():
        return set()
    with open(output, "rb+") as f:
        data = f.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            f.truncate(complete)
    done = set()
    for line in data[:complete].splitlines():
        try:
            done.add(json.loads(line)["file"])
        except (ValueError, KeyError, TypeError):
            continue  # not one of ours: its file is transcribed again
    return done


def transcribe_corpus(inputs: Iterable[str | Path], model: str | Path, output: str | Path, *,
                      workers: int | None = None, threads: int | None = None, ray_address: str | None = None,
                      progress: bool = True, language: str | None = None, task: str = "transcribe",
                      **options) -> CorpusSummary:
    """Transcribes every audio file of `inputs` (see `collect_files`) with the bundle `model` into the JSON Lines
    file `output`, skipping the files it already holds. `options` are `Transcriber.transcribe`'s decoding options
    (`TranscriptionOptions`).

    Local: `workers` processes (default: one a core) with `threads` interpreter threads each (default:
    cores / workers). With `ray_address` ("auto", "ray://host:10001", or "local" for a Ray started on this
    machine), Ray tasks of `threads` CPUs each (default 1), as many at once as the cluster has CPUs for."""
    from tqdm import tqdm

    from .runtime import Transcriber, TranscriptionOptions

    started = time.perf_counter()
    output = Path(output)
    files = collect_files(inputs)
    # Every check before any work: the options, the bundle and what it can do, the output file.
    try:
        decoding = TranscriptionOptions(**options)
    except TypeError as e:
        raise UsageError(f"unknown transcription option: {e}") from None
    checker = Transcriber(model, threads=1)
    language = checker.check_request(language, task, decoding.word_timestamps, decoding.vad_filter,
                                     decoding.batch_size)
    checker.decoder.check(decoding)
    del checker
    output.parent.mkdir(parents=True, exist_ok=True)
    done = finished_files(output)
    todo = [f for f in files if str(f) not in done]
    summary = CorpusSummary(len(files), len(files) - len(todo), 0, 0, 0.0, 0.0)
    request = {"language": language, "task": task, **dataclasses.asdict(decoding)}
    if ray_address is not None:
        results = _ray_results(todo, Path(model), threads or 1, request, ray_address)
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = workers or cores
        results = _local_results(todo, Path(model), workers, threads or max(1, cores // workers), request)
    bar = tqdm(total=len(todo), unit="file", desc="corpus", disable=not progress, smoothing=0)
    try:
        with open(output, "a", encoding="utf-8") as out:
            for record in results:
                # ASCII: a file name that is not valid UTF-8 round-trips as escaped surrogates
                out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                if record["error"] is None:
                    summary.transcribed += 1
                    summary.audio_seconds += record["duration"]
                else:
                    summary.failed += 1
                bar.update(1)
                if summary.audio_seconds:
                    factor = (time.perf_counter() - started) / summary.audio_seconds
                    bar.set_postfix_str(f"audio {clock(summary.audio_seconds)}, real-time factor {factor:.3f}",
                                        refresh=False)
    finally:
        bar.close()
        results.close()  # stops the workers, also on Ctrl-C
    summary.wall_seconds = time.perf_counter() - started
    return summary


# ---------------------------------------------------------------- in each worker

_transcriber = None
_loaded_key = None  # which bundle and threads a Ray worker's `_transcriber` was loaded with
_bundle_folder: tempfile.TemporaryDirectory | None = None  # a Ray worker's copy of the bundle


def _transcribe_file(path: Path, request: dict) -> dict:
    """The output line of one file; a file that cannot be transcribed gets its error instead of a transcript."""
    start = time.perf_counter()
    try:
        result = _transcriber.transcribe(path, **request)
    except Exception as e:  # noqa: BLE001 - one file's failure must not end the corpus; it is recorded
        message = str(e) if isinstance(e, WhisperTfliteError) else f"{type(e).__name__}: {e}"
        return _failure(path, message.splitlines()[0] if message else type(e).__name__, time.perf_counter() - start)
    return {"file": str(path), **result.to_dict(), "duration": result.duration,
            "wall_s": time.perf_counter() - start, "error": None}


def _failure(path: Path, message: str, wall_s: float = 0.0) -> dict:
    return {"file": str(path), "duration": None, "wall_s": wall_s, "error": message}


def _local_worker(model: Path, threads: int, connection, log_level: int) -> None:
    """A worker process: loads the bundle, then transcribes each path it is sent until it is sent None."""
    global _transcriber
    from .runtime import Transcriber

    LOG.setLevel(log_level)  # --verbose: LiteRT's own lines from the workers too
    _transcriber = Transcriber(model, threads=threads)
    try:
        while (task := connection.recv()) is not None:
            connection.send(_transcribe_file(*task))
    except (EOFError, BrokenPipeError):  # the main process is gone: so is the point of going on
        pass


def _ray_transcribe_file(path: Path, request: dict, threads: int, bundle: list) -> dict:
    """A Ray task: the bundle is written to a folder of this worker process at its first task (`bundle` holds
    the object reference in a list, so that Ray fetches the files only then)."""
    global _transcriber, _loaded_key, _bundle_folder
    key = (bundle[0].hex(), threads)
    if _loaded_key != key:
        import ray

        from .runtime import Transcriber

        _bundle_folder = tempfile.TemporaryDirectory(prefix="whisper-tflite-bundle-")
        for name, data in ray.get(bundle[0]).items():
            Path(_bundle_folder.name, name).write_bytes(data)
        _transcriber, _loaded_key = Transcriber(_bundle_folder.name, threads=threads), key
    return _transcribe_file(path, request)


# ---------------------------------------------------------------- schedulers

@contextmanager
def _sigint_ignored():
    """Processes started in here ignore Ctrl-C (the disposition survives exec): the main process alone answers
    it, and stops them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_results(files: list[Path], model: Path, workers: int, threads: int, request: dict) -> Iterator[dict]:
    """Records as files finish, from `workers` spawned processes, each fed one path at a time through a pipe of
    its own: a worker that dies breaks only its pipe, and its file goes to another worker."""
    context = get_context("spawn")
    queue = deque(files)
    attempts = dict.fromkeys(files, 0)
    running = {}  # connection -> [process, path or None]

    def start_worker():
        mine, theirs = context.Pipe()
        process = context.Process(target=_local_worker, args=(model, threads, theirs, LOG.level), daemon=True)
        with _sigint_ignored():
            process.start()
        theirs.close()
        running[mine] = [process, None]
        feed(mine)

    def feed(connection):
        """Sends the next path, or None (stop) when none is left; a worker found dead hands its path on."""
        path = queue.popleft() if queue else None
        try:
            connection.send(None if path is None else (path, request))
        except OSError:  # it died after its last answer
            retire(connection)
            if path is not None:
                queue.appendleft(path)
                start_worker()
            return
        if path is None:
            retire(connection)  # it returns on None
        else:
            attempts[path] += 1
            running[connection][1] = path

    def retire(connection):
        process, _ = running.pop(connection)
        process.join()
        connection.close()

    try:
        for _ in range(min(workers, len(files))):
            start_worker()
        while running:
            ready = wait(list(running) + [process.sentinel for process, _ in running.values()])
            for connection, (process, path) in list(running.items()):
                if connection in ready:
                    try:
                        record = connection.recv()
                    except (EOFError, OSError):  # died while sending: handled below with the dead
                        pass
                    else:
                        yield record
                        feed(connection)
                        continue
                if process.sentinel in ready or connection in ready:
                    retire(connection)
                    if attempts[path] >= ATTEMPTS:
                        yield _failure(path, f"{ATTEMPTS} worker processes died on it (killed, or out of memory)")
                    else:
                        queue.appendleft(path)
                    if queue:
                        start_worker()
    finally:
        for connection, (process, _) in running.items():
            process.terminate()
            process.join()
            connection.close()


def _ray_results(files: list[Path], model: Path, threads: int, request: dict, address: str) -> Iterator[dict]:
    """Records as Ray tasks finish; at most twice as many tasks in flight as the cluster has room for."""
    if not files:
        return
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'whisper-tflite[cluster]'") from None
    from .bundle import Bundle

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        bundle = Bundle.load(model)
        bundle_ref = ray.put({p.name: p.read_bytes() for p in bundle.folder.iterdir() if p.is_file()})
        task = ray.remote(_ray_transcribe_file).options(num_cpus=threads, max_retries=3)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        queue, pending = iter(files), []
        for path in queue:
            pending.append(task.remote(path, request, threads, [bundle_ref]))
            if len(pending) >= 2 * slots:
                break
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(finished[0])
            except ray.exceptions.RayError as e:
                raise WhisperTfliteError(f"Ray gave up on a task ({type(e).__name__}); the files finished are "
                                         "saved: run the same command again to do the rest") from None
            for path in queue:
                pending.append(task.remote(path, request, threads, [bundle_ref]))
                break
    finally:
        if started_here:
            ray.shutdown()
