"""Shared fixtures: the speech manifest, the bundled checkpoints, and reference transcripts, loaded once a run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# CTranslate2's OpenMP threads (faster-whisper, the oracle) spin while they wait, taking the core the other xdist
# worker is using. The same 17 clips with faster-whisper float32, 2 threads, AMD EPYC with AVX2, 2 cores:
#
#   alone                                      14.9 s
#   beside a second such process               80.1 s (each)
#   beside it, both OMP_WAIT_POLICY=PASSIVE    24.0 s (each)
#
# Set before anything loads libgomp; it reaches the CLI and the workers the tests start, too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from whisper_tflite.audio import load_audio
from whisper_tflite.evaluation import read_manifest

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def pytest_report_header(config):
    return f"speech clips: {AUDIO_DIR}"


@pytest.fixture(scope="session")
def clips():
    if not (AUDIO_DIR / "manifest.tsv").is_file():
        pytest.fail(f"the test speech is missing: {AUDIO_DIR}/manifest.tsv (shared/ must sit beside the repo)")
    return read_manifest(AUDIO_DIR)


@pytest.fixture(scope="session")
def english_clips(clips):
    return [c for c in clips if c.language == "en"]


@pytest.fixture(scope="session")
def clip_named(clips):
    """The manifest's clip of a file name: tests choose clips by name, never by the manifest's row order."""
    by_name = {c.name: c for c in clips}

    def get(name):
        if name not in by_name:
            pytest.fail(f"{name} is not in {AUDIO_DIR}/manifest.tsv")
        return by_name[name]

    return get


@pytest.fixture(scope="session")
def read_speech_clips(english_clips):
    """The English clips of read speech (jfk, LibriSpeech, LJ Speech) up to 30 s: where greedy `generate` runs."""
    chosen = [c for c in english_clips if any(s in c.name for s in ("jfk", "librispeech", "ljspeech"))
              and c.duration <= 30]
    assert len(chosen) >= 10
    return chosen


@pytest.fixture(scope="session")
def audio_cache():
    """16 kHz mono samples of each clip, decoded once."""
    cache = {}

    def get(clip):
        if clip.path not in cache:
            cache[clip.path] = load_audio(clip.path)
        return cache[clip.path]

    return get


@pytest.fixture(scope="module")
def transcripts(audio_cache):
    """Clips' transcripts with a bundle and decoding options, each computed once a module (its tests read the
    same ones), by one `Transcriber` a bundle."""
    from whisper_tflite.runtime import Transcriber

    transcribers, texts = {}, {}

    def get(bundle, clips, **options) -> list[str]:
        decoding = tuple(sorted(options.items()))
        for clip in clips:
            if (bundle, clip.name, decoding) not in texts:
                if bundle not in transcribers:
                    transcribers[bundle] = Transcriber(bundle, threads=2)
                texts[bundle, clip.name, decoding] = transcribers[bundle].transcribe(audio_cache(clip), **options).text
        return [texts[bundle, clip.name, decoding] for clip in clips]

    return get


@pytest.fixture(scope="session")
def tiny_en():
    from whisper_tflite.sources import load_whisper

    return load_whisper("tiny.en")


@pytest.fixture(scope="session")
def tiny_en_ct2():
    """The bundled tiny.en as a CTranslate2 folder, for faster-whisper: the oracle of decoding behaviour."""
    from whisper_tflite.sources import bundled_ct2_folder

    return bundled_ct2_folder("tiny.en", REPO / ".cache" / "ct2")


@pytest.fixture(scope="session")
def base():
    from whisper_tflite.sources import load_whisper

    return load_whisper("base")


def _features_cache(checkpoint, audio_cache):
    from whisper_tflite.reference import reference_features

    cache = {}

    def get(clip):
        if clip.path not in cache:
            cache[clip.path] = reference_features(checkpoint, audio_cache(clip))
        return cache[clip.path]

    return get


@pytest.fixture(scope="session")
def tiny_en_features(tiny_en, audio_cache):
    """The reference's log-mel of each clip's first 30 s, for tiny.en, computed once a run."""
    return _features_cache(tiny_en, audio_cache)


@pytest.fixture(scope="session")
def base_features(base, audio_cache):
    return _features_cache(base, audio_cache)


def _greedy_cache(checkpoint, bundle, features_of, audio_cache):
    from whisper_tflite.runtime import Transcriber

    from .parity import assert_parity, bundle_greedy_tokens

    transcriber = Transcriber(bundle, threads=2)
    cache = {}

    def get(clip, language="en"):
        key = (clip.path, language)
        if key not in cache:
            tokens = bundle_greedy_tokens(transcriber, audio_cache(clip), language)
            prompt = transcriber.tokenizer.prompt(language, "transcribe", timestamps=False)
            assert_parity([(clip.name, tokens, features_of(clip), len(prompt))], checkpoint)
            cache[key] = tokens
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_en_greedy(tiny_en, tiny_bundle, tiny_en_features, audio_cache):
    """The reference's greedy tokens (first 30 s, no timestamps) per clip: the fp32 bundle's, each checked
    teacher-forced to be the reference's own choice at every position - one forward pass, where `generate`
    takes one eager call per token."""
    return _greedy_cache(tiny_en, tiny_bundle, tiny_en_features, audio_cache)


@pytest.fixture(scope="session")
def base_greedy(base, base_bundle, base_features, audio_cache):
    """As `tiny_en_greedy`, for base, per (clip, forced language)."""
    return _greedy_cache(base, base_bundle, base_features, audio_cache)


REPO = Path(__file__).resolve().parents[1]


def _xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_sessionstart(session):
    import whisper_tflite

    from .bundles import code_version, remove_stale

    package = Path(whisper_tflite.__file__).resolve()
    if not package.is_relative_to(REPO / "src"):
        pytest.exit(f"whisper_tflite is imported from {package}, not from this checkout ({REPO}/src)", returncode=3)
    if not _xdist_worker():  # once a run, before any worker starts converting
        remove_stale(code_version())


_background_conversions = None


def pytest_collection_finish(session):
    """Notes the bundles this run needs (see tests/bundles.py), and starts converting those after its first in the
    background. Not with xdist (`make test`): there, the other worker's tests fill the second core, and a worker
    that would wait for a bundle the other is converting converts the next one meanwhile."""
    global _background_conversions
    import subprocess
    import sys

    from . import bundles
    from .bundles import BUNDLES, LOG

    needed = list(dict.fromkeys(name for item in session.items for name in item.fixturenames if name in BUNDLES))
    bundles.NEEDED[:] = needed
    if len(needed) > 1 and not session.config.option.collectonly and not _xdist_worker():
        LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(LOG, "w") as log:
            _background_conversions = subprocess.Popen([sys.executable, "-m", "tests.bundles", *needed[1:]],
                                                       cwd=REPO, stdout=log, stderr=log)


def pytest_sessionfinish(session):
    if _background_conversions is not None and _background_conversions.poll() is None:
        _background_conversions.terminate()
        _background_conversions.wait(timeout=60)


@pytest.fixture(scope="session")
def code_version():
    from .bundles import code_version

    return code_version()


def _bundle_fixture(name):
    """A session fixture giving the cached bundle `name` of tests/bundles.py."""

    @pytest.fixture(scope="session", name=name)
    def fixture(code_version):
        from .bundles import BUNDLES, build

        return build(code_version, **BUNDLES[name])

    return fixture


def _define_bundle_fixtures():
    """One session fixture per entry of tests/bundles.py's BUNDLES, under its name (default_bundle, ...)."""
    from .bundles import BUNDLES

    globals().update({name: _bundle_fixture(name) for name in BUNDLES})


_define_bundle_fixtures()
