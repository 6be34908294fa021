"""A corpus transcribed by worker processes and by Ray: the same texts as one file at a time, nothing lost or
written twice when a worker is killed, bad files recorded, and a rerun that only finishes what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from whisper_tflite import Transcriber
from whisper_tflite.corpus import collect_files, finished_files

from .test_faults import CLI, default_sigint, run_cli

BROKEN = {"not-audio.wav": b"this is not audio\n", "empty.flac": b""}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, english_clips):
    """A folder tree of the English clips up to 30 s (links, half of them two folders down) and two files no
    decoder reads."""
    folder = tmp_path_factory.mktemp("corpus")
    for sub in ("a", "b/c"):
        (folder / sub).mkdir(parents=True)
    for i, clip in enumerate(c for c in english_clips if c.duration <= 30):
        (folder / ("a" if i % 2 else "b/c") / clip.path.name).symlink_to(clip.path)
    for name, data in BROKEN.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def sequential(default_bundle, corpus):
    """Each file's text from `Transcriber.transcribe`, one after another, default options."""
    transcriber = Transcriber(default_bundle, threads=2)
    return {str(p): transcriber.transcribe(p).text for p in collect_files([corpus]) if p.name not in BROKEN}


def lines_of(output: Path) -> list[dict]:
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def assert_complete(output: Path, corpus: Path, sequential: dict) -> None:
    """One line a file, the same text as sequential transcription, the bad files with their one-line error."""
    lines = lines_of(output)
    files = [line["file"] for line in lines]
    assert len(files) == len(set(files)), "a file was written twice"
    by_file = {line["file"]: line for line in lines}
    assert set(by_file) == set(sequential) | {str(corpus / name) for name in BROKEN}
    for file, text in sequential.items():
        line = by_file[file]
        assert line["error"] is None and line["text"] == text, file
        assert line["duration"] > 0 and line["wall_s"] > 0 and line["segments"] and line["language"] == "en"
    for name in BROKEN:
        line = by_file[str(corpus / name)]
        assert line["error"] and "\n" not in line["error"] and "Traceback" not in line["error"]
        assert "text" not in line


def test_collect_files(corpus, english_clips, tmp_path):
    files = collect_files([corpus])
    assert len(files) == sum(c.duration <= 30 for c in english_clips) + len(BROKEN)
    assert all(p.is_absolute() for p in files) and files == sorted(files)
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n{files[0]}\n\n{os.path.relpath(files[1], tmp_path)}  # another\n")
    assert collect_files([listed, files[0]]) == files[:2]  # each once, in order, relative to the list's folder
    done = run_cli("transcribe-corpus", tmp_path / "missing", "--output", tmp_path / "out.jsonl")
    assert done.returncode == 2 and done.stderr.strip().endswith("missing: no such file or folder")


def test_a_cut_last_line_is_dropped(tmp_path):
    output = tmp_path / "out.jsonl"
    output.write_text('{"file": "/a.wav", "error": null}\n{"file": "/b.wa')
    assert finished_files(output) == {"/a.wav"}
    assert output.read_text() == '{"file": "/a.wav", "error": null}\n'


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([str(CLI), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, preexec_fn=default_sigint)


def wait_for_lines(output: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (output.exists() and output.read_text().count("\n") >= count):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process under `pid`."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found += [(int(child), command), *descendants(int(child))]
    return found


def corpus_args(default_bundle, corpus, output, *extra):
    return ("transcribe-corpus", corpus, "--model", default_bundle, "--output", output, "--quiet", *extra)


def test_local_worker_killed_mid_run(default_bundle, corpus, sequential, tmp_path):
    """A worker killed mid-file is replaced and its file done by another: the run completes by itself."""
    output = tmp_path / "out.jsonl"
    process = start(*corpus_args(default_bundle, corpus, output, "--workers", "2", "--threads", "1"))
    wait_for_lines(output, 3, process)
    workers = [pid for pid, command in descendants(process.pid) if "spawn_main" in command]
    assert len(workers) == 2, descendants(process.pid)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    assert_complete(output, corpus, sequential)


def test_a_file_that_kills_two_workers_is_recorded(default_bundle, clip_named, audio_cache, tmp_path):
    """The file in hand when its worker dies goes to a new worker; after two deaths it gets its error line and
    the run goes on with the rest (one worker, killed twice while on the first file: a minute of speech)."""
    import numpy as np
    import soundfile

    folder = tmp_path / "corpus"
    folder.mkdir()
    long_clips = ("en_jfk_openai-whisper.flac", "en_jfk_whisper-cpp.wav",
                  "en_librispeech-test-clean_121-127105-0000.flac", "en_librispeech-test-clean_1320-122612-0008.flac",
                  "en_librispeech-test-clean_1320-122617-0001.flac", "en_librispeech-test-clean_2300-131720-0008.flac")
    soundfile.write(folder / "a-long.wav", np.concatenate([audio_cache(clip_named(n)) for n in long_clips]), 16000)
    short = clip_named("en_jfk_openai-whisper.flac")
    (folder / "b-short.flac").symlink_to(short.path)
    output = tmp_path / "out.jsonl"
    process = start("transcribe-corpus", folder, "--model", default_bundle, "--output", output, "--quiet",
                    "--workers", "1", "--threads", "1", "--beam-size", "1")
    killed = set()
    deadline = time.monotonic() + 120
    while len(killed) < 2:
        assert time.monotonic() < deadline and process.poll() is None, "no worker to kill"
        for pid, command in descendants(process.pid):
            if "spawn_main" in command and pid not in killed:
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    by_name = {Path(line["file"]).name: line for line in lines_of(output)}
    assert by_name["a-long.wav"]["error"] == "2 worker processes died on it (killed, or out of memory)"
    assert by_name["b-short.flac"]["error"] is None and by_name["b-short.flac"]["text"]


def test_interrupted_run_resumes(default_bundle, corpus, sequential, tmp_path):
    """Ctrl-C: one line, exit 130, the workers gone, every finished file saved; the rerun does only the rest."""
    output = tmp_path / "out.jsonl"
    args = corpus_args(default_bundle, corpus, output, "--workers", "2", "--threads", "1")
    process = start(*args)
    wait_for_lines(output, 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and stderr.strip() == "whisper-tflite: error: interrupted", stderr
    saved = len(lines_of(output))
    assert 3 <= saved < len(sequential) + len(BROKEN)

    done = run_cli(*args, timeout=600)
    assert done.returncode == 0 and f"{saved} already in" in done.stderr, done.stderr
    assert_complete(output, corpus, sequential)
    again = run_cli(*args, timeout=600)  # nothing left to do
    assert again.returncode == 0 and f"{len(sequential) + len(BROKEN)} already in" in again.stderr
    assert len(lines_of(output)) == len(sequential) + len(BROKEN)


def test_ray_worker_killed_mid_run(default_bundle, corpus, sequential, tmp_path):
    """A local Ray started by the run; a task's worker killed: Ray runs the task again, the run completes."""
    output = tmp_path / "out.jsonl"
    process = start(*corpus_args(default_bundle, corpus, output, "--ray", "local"))
    wait_for_lines(output, 2, process)
    busy = []
    deadline = time.monotonic() + 60
    while not busy and time.monotonic() < deadline:
        busy = [pid for pid, command in descendants(process.pid) if "_ray_transcribe_file" in command]
        time.sleep(0.05)
    assert busy, descendants(process.pid)
    os.kill(busy[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert_complete(output, corpus, sequential)
