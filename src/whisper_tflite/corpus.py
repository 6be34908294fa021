"""Transcribe a corpus: many files in worker processes on this machine, or as Ray tasks on a cluster.

Results go to a JSON Lines file, one object a file (`transcribe --format json`'s object plus `duration`, `wall_s`
and `error`), written by this process alone: each line is appended and fsync'ed as its file finishes, so a crash,
a killed worker or Ctrl-C loses nothing finished, and a rerun skips every file that already has a line (its
transcript or its error) and does the rest. A file that cannot be read gets its one-line error and the run goes on.

Each worker loads the bundle once. On one machine, one single-threaded worker a core by default (more files
per second than half as many workers of two threads: `benchmarks/corpus.py`). On Ray, the bundle
travels through the object store (only the driver needs it on disk); the audio paths must be readable on every
node (shared storage), as for any Ray job that reads files; a task whose worker dies is run again by Ray.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from .bundle import Bundle
from .errors import UsageError, WhisperTfliteError

# What libsndfile or FFmpeg reads, as files are found in folders; a file given by name is taken whatever its name.
AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .ogg .oga .opus .m4a .mp4 .aac .webm .mkv .mov .wma .aiff .aif .caf .amr .3gp".split())
LIST_EXTENSIONS = frozenset((".txt", ".lst", ".list"))


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
            lines = (line.split("#", 1)[0].strip() for line in given.read_text(encoding="utf-8").splitlines())
            found.update((_absolute(given.parent / line), None) for line in lines if line)
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
    file `output`, skipping the files it already holds. `options` are `Transcriber.transcribe`'s decoding options.

    Local: `workers` processes (default: one a core) with `threads` interpreter threads each (default:
    cores / workers). With `ray_address` ("auto", "ray://host:10001", or "local" for a Ray started here), Ray
    tasks of `threads` CPUs each (default 1), as many at once as the cluster has CPUs for."""
    from tqdm import tqdm

    from .runtime import Transcriber

    started = time.perf_counter()
    output = Path(output)
    files = collect_files(inputs)
    # Every check before any work: the bundle, the language and options, the output file.
    checker = Transcriber(model, threads=1)
    language = checker.check_request(language, task, options.get("word_timestamps", False))
    del checker
    output.parent.mkdir(parents=True, exist_ok=True)
    done = finished_files(output)
    todo = [f for f in files if str(f) not in done]
    summary = CorpusSummary(len(files), len(files) - len(todo), 0, 0, 0.0, 0.0)
    request = {"language": language, "task": task, **options}
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
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
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

_transcriber = None  # the worker's, loaded at its first file
_bundle_folder: tempfile.TemporaryDirectory | None = None  # a Ray worker's copy of the bundle


def _start_local_worker(model: Path, threads: int) -> None:
    global _transcriber
    from .runtime import Transcriber

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a worker quietly; the main process reports it
    _transcriber = Transcriber(model, threads=threads)


def _transcribe_file(path: Path, request: dict) -> dict:
    """The output line of one file; a file that cannot be transcribed gets its error instead of a transcript."""
    from .errors import AudioError

    start = time.perf_counter()
    try:
        result = _transcriber.transcribe(path, **request)
    except AudioError as e:
        return {"file": str(path), "duration": None, "wall_s": time.perf_counter() - start, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one file's failure must not end the corpus; it is recorded
        return {"file": str(path), "duration": None, "wall_s": time.perf_counter() - start,
                "error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return {"file": str(path), **result.to_dict(), "duration": result.duration,
            "wall_s": time.perf_counter() - start, "error": None}


def _ray_transcribe_file(path: Path, request: dict, threads: int, bundle: list) -> dict:
    """A Ray task: the bundle is written to a folder of this worker process at its first task (`bundle` holds
    the object reference in a list, so that Ray fetches the files only then)."""
    global _transcriber, _bundle_folder
    if _transcriber is None:
        import ray

        from .runtime import Transcriber

        _bundle_folder = tempfile.TemporaryDirectory(prefix="whisper-tflite-bundle-")
        for name, data in ray.get(bundle[0]).items():
            Path(_bundle_folder.name, name).write_bytes(data)
        _transcriber = Transcriber(_bundle_folder.name, threads=threads)
    return _transcribe_file(path, request)


# ---------------------------------------------------------------- schedulers

def _local_results(files: list[Path], model: Path, workers: int, threads: int, request: dict) -> Iterator[dict]:
    """Records as files finish, from `workers` processes (spawned: no interpreter state is forked)."""
    if not files:
        return
    pool = ProcessPoolExecutor(workers, get_context("spawn"), initializer=_start_local_worker,
                               initargs=(model, threads))
    try:
        pending = {pool.submit(_transcribe_file, path, request) for path in files}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    except BrokenProcessPool:
        raise WhisperTfliteError("a worker process died (killed, or out of memory); the files finished are "
                                 "saved: run the same command again to do the rest") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_results(files: list[Path], model: Path, threads: int, request: dict, address: str) -> Iterator[dict]:
    """Records as Ray tasks finish; at most twice as many tasks in flight as the cluster has room for."""
    if not files:
        return
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'whisper-tflite[cluster]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, log_to_driver=False,
                 include_dashboard=False, configure_logging=False)
    try:
        bundle = Bundle.load(model)
        files_of_bundle = {p.name: p.read_bytes() for p in bundle.folder.iterdir() if p.is_file()}
        bundle_ref = ray.put(files_of_bundle)
        del files_of_bundle
        task = ray.remote(_ray_transcribe_file).options(num_cpus=threads, max_retries=3)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        queue, pending = iter(files), []
        for path in queue:
            pending.append(task.remote(path, request, threads, [bundle_ref]))
            if len(pending) >= 2 * slots:
                break
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            yield ray.get(finished[0])
            for path in queue:
                pending.append(task.remote(path, request, threads, [bundle_ref]))
                break
    finally:
        if started_here:
            ray.shutdown()
