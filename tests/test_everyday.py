"""The command line and the API as a new user meets them: version, help, quiet by default, forgiving inputs."""

from __future__ import annotations

import pytest

from whisper_tflite import Segment, Transcriber, TranscriptionResult, __version__
from whisper_tflite.errors import UsageError

from .test_faults import run_cli


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"whisper-tflite {__version__}"


def test_litert_log_only_when_verbose(default_bundle, english_clips):
    clip = english_clips[1].path
    quiet = run_cli("transcribe", clip, "--model", default_bundle)
    verbose = run_cli("transcribe", clip, "--model", default_bundle, "--verbose")
    assert quiet.returncode == verbose.returncode == 0
    assert quiet.stderr == "", quiet.stderr
    assert "XNNPACK delegate" in verbose.stderr and quiet.stdout == verbose.stdout


def test_api_takes_what_the_cli_takes(default_bundle, english_clips, audio_cache):
    samples = audio_cache(english_clips[1])
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
