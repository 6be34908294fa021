"""The command line and the API as a new user meets them: version, help, quiet by default, forgiving inputs."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from whisper_tflite import Segment, Transcriber, TranscriptionResult, __version__
from whisper_tflite.cli import _parser
from whisper_tflite.errors import UsageError

from .bundles import REPO
from .test_faults import run_cli


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"whisper-tflite {__version__}"


# The jfk sentence, which `make demo` prints. Its punctuation and its segments (one a line) vary with the CPU's int8
# kernels (the default bundle's int8 layers round as they do): with commas, in one segment, on an AMD EPYC with
# AVX-512 and VNNI; "And so, my fellow Americans ask not ... for you" and the rest on a second line on an AMD EPYC
# with AVX2 only (family 25, model 1). Its words do not.
DEMO_SENTENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def test_quick_start_prints_the_demo_transcript(default_bundle, clip_named):
    """`make demo` (the Makefile's sample, the default bundle of tiny.en, default options) prints the jfk
    sentence's words. The sample in the repository is the manifest's jfk clip, sample for sample, so `make demo`
    needs nothing beside the repository."""
    import soundfile

    from whisper_tflite.evaluation import error_rate

    sample = REPO / next(line.split(":=")[1].strip() for line in (REPO / "Makefile").read_text().splitlines()
                         if line.startswith("SAMPLE :="))
    assert sample.is_relative_to(REPO) and sample.is_file(), sample
    shared, rate = soundfile.read(clip_named("en_jfk_whisper-cpp.wav").path, dtype="int16")
    ours, our_rate = soundfile.read(sample, dtype="int16")
    assert rate == our_rate == 16000 and np.array_equal(ours, shared)
    done = run_cli("transcribe", sample, "--model", default_bundle)
    assert done.returncode == 0, done.stderr
    assert 1 <= len(done.stdout.strip().splitlines()) <= 3, done.stdout
    assert error_rate([DEMO_SENTENCE], [" ".join(done.stdout.split())], "en") == 0, done.stdout


def test_litert_log_only_when_verbose(default_bundle, clip_named):
    clip = clip_named("en_jfk_whisper-cpp.wav").path
    quiet = run_cli("transcribe", clip, "--model", default_bundle, "--threads", "0")  # 0: the default
    verbose = run_cli("transcribe", clip, "--model", default_bundle, "--verbose")
    assert quiet.returncode == verbose.returncode == 0
    assert quiet.stderr == "", quiet.stderr
    assert "XNNPACK" in verbose.stderr and quiet.stdout == verbose.stdout


def test_api_takes_what_the_cli_takes(default_bundle, clip_named, audio_cache):
    samples = audio_cache(clip_named("en_jfk_whisper-cpp.wav"))
    transcriber = Transcriber(default_bundle, threads=0)  # 0: the default, as in the CLI
    for language in ("auto", "English", "en", None):
        result = transcriber.transcribe(samples, language=language)
        assert isinstance(result, TranscriptionResult) and all(isinstance(s, Segment) for s in result.segments)
        assert result.language == "en" and "ask not what your country" in result.text.lower().replace(",", "")
    for threads in (-1, 1.5):
        with pytest.raises(UsageError, match="threads must be a positive number"):
            Transcriber(default_bundle, threads=threads)
    with pytest.raises(UsageError, match="unknown language 'Klingon'"):
        transcriber.transcribe(samples, language="Klingon")


def test_help_explains_every_argument():
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        silent = [a.dest for a in command._actions if not a.help]
        assert not silent, f"{name}: {silent} have no help"
    done = run_cli("--help")
    assert done.returncode == 0 and "examples:" in done.stdout and "transcribe -" in done.stdout


def test_output_files_are_readable_by_others(tmp_path, default_bundle, clip_named):
    clip = clip_named("en_jfk_whisper-cpp.wav").path
    done = run_cli("transcribe", clip, "--model", default_bundle, "--format", "srt", "--output-dir", tmp_path,
                   "--quiet")
    assert done.returncode == 0, done.stderr
    written = tmp_path / f"{clip.stem}.srt"
    assert written.stat().st_mode & 0o044 == 0o044 and list(tmp_path.iterdir()) == [written]


@pytest.mark.parametrize("case, message", [
    ("same stem", "would both be written to"),
    ("dir is a file", "is a file, not a folder"),
    ("cannot create", "cannot create it"),
    ("srt to stdout", "give --output-dir"),
])
def test_output_problems_are_usage_errors_before_any_work(case, message, tmp_path, default_bundle, clip_named):
    clip = clip_named("en_jfk_whisper-cpp.wav").path
    twin = tmp_path / "other" / clip.name
    twin.parent.mkdir()
    twin.symlink_to(clip)
    (tmp_path / "a-file").write_text("")
    args = {"same stem": [clip, twin, "--output-dir", tmp_path / "out"],
            "dir is a file": [clip, "--output-dir", tmp_path / "a-file"],
            "cannot create": [clip, "--output-dir", "/proc/no-such-folder"],
            "srt to stdout": [clip, twin, "--format", "srt"]}[case]
    done = run_cli("transcribe", *args, "--model", default_bundle, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_native_log_redirection_nests_and_restores_stderr(capfd):
    """fd 2 is the process's: nested and concurrent blocks share one redirection, and the outermost restores it."""
    import os
    import threading

    from whisper_tflite.native_log import native_stderr_hidden

    def hidden_write():
        with native_stderr_hidden():
            os.write(2, b"hidden\n")

    with native_stderr_hidden() as terminal:
        threads = [threading.Thread(target=hidden_write) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        os.write(2, b"hidden too\n")
        terminal.write("shown\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "hidden" not in err and "shown" in err and "after" in err


def test_language_codes_in_any_case():
    from whisper_tflite.tokens import WhisperTokenizer

    assert [WhisperTokenizer.language_code(x) for x in ("DE", "German", "castilian", "en")] == ["de", "de", "es", "en"]
