"""The command line as a new user meets it: version, help, quiet by default."""

from __future__ import annotations

from whisper_tflite import __version__

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
