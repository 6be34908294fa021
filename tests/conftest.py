"""Shared fixtures: the speech manifest, the bundled checkpoints, and reference transcripts, loaded once a run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from whisper_tflite.audio import load_audio
from whisper_tflite.evaluation import read_manifest

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
BASE_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "ar")


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


def _reference_cache(checkpoint, features_of):
    from whisper_tflite.reference import reference_transcribe

    cache = {}

    def get(clip, language=None):
        key = (clip.path, language)
        if key not in cache:
            features = features_of(clip)
            cache[key] = (features, reference_transcribe(checkpoint, language=language, features=features))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_en_features(tiny_en, audio_cache):
    """The reference's log-mel of each clip's first 30 s, for tiny.en, computed once a run."""
    return _features_cache(tiny_en, audio_cache)


@pytest.fixture(scope="session")
def base_features(base, audio_cache):
    return _features_cache(base, audio_cache)


@pytest.fixture(scope="session")
def base_reference(base, base_features):
    """(features, ReferenceResult of greedy `generate`) per (clip, forced language) for base. `generate` is slow
    (one eager call per token): only the test of `reference_transcribe` itself uses it."""
    return _reference_cache(base, base_features)


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


@pytest.fixture(scope="session")
def base_clips(clips):
    return [c for c in clips if c.language in BASE_LANGUAGES]


REPO = Path(__file__).resolve().parents[1]
BUNDLE_CACHE = REPO / ".cache" / "bundles"


CONVERSION_STACK = ("tensorflow", "tf-keras", "keras", "flatbuffers", "ml-dtypes", "transformers", "numpy",
                    "ai-edge-litert")


def _code_version() -> str:
    """Changes whenever anything that shapes a converted model changes: the package's source and pins, the
    installed conversion stack and the Python that runs it."""
    import hashlib
    import sys
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "whisper_tflite").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    digest.update(" ".join([sys.version, *(f"{name}={version(name)}" for name in CONVERSION_STACK)]).encode())
    return digest.hexdigest()[:12]


def pytest_sessionstart(session):
    import whisper_tflite

    package = Path(whisper_tflite.__file__).resolve()
    if not package.is_relative_to(REPO / "src"):
        pytest.exit(f"whisper_tflite is imported from {package}, not from this checkout ({REPO}/src)", returncode=3)


@pytest.fixture(scope="session")
def bundle_for():
    """Converts each (source, per-role quantization plan, oldest runtime) once, into an on-disk cache keyed by the
    code version; stale entries go. Two requests with the same plan (e.g. `dynamic-int8` and the default policy)
    share one."""
    import hashlib
    import shutil

    from whisper_tflite.conversion import DEFAULT_MODELS, convert, quantization_plan

    version = _code_version()
    if BUNDLE_CACHE.is_dir():
        for stale in BUNDLE_CACHE.iterdir():
            if not stale.name.endswith(version):
                shutil.rmtree(stale, ignore_errors=True)

    def get(source: str, quantize: str | None = "none", models: tuple[str, ...] = DEFAULT_MODELS,
            min_runtime: str | None = None) -> Path:
        plan = quantization_plan(quantize, models)
        key = hashlib.sha256(repr((sorted(plan.items()), min_runtime)).encode()).hexdigest()[:8]
        path = BUNDLE_CACHE / f"{source}-{key}-{version}"
        if not (path / "manifest.json").is_file():
            convert(source, path, quantize=plan, models=models, force=True, progress=False, min_runtime=min_runtime)
        return path

    return get


@pytest.fixture(scope="session")
def default_bundle(bundle_for):
    """tiny.en with the default quantization policy: what `convert` makes and users run."""
    return bundle_for("tiny.en", None)


@pytest.fixture(scope="session")
def tiny_bundle(bundle_for):
    return bundle_for("tiny.en", "none")


@pytest.fixture(scope="session")
def base_bundle(bundle_for):
    """base, fp32, the greedy roles only (no decoder_batch, alignment: a minute of conversion): its tests decode
    with beam_size=1."""
    from whisper_tflite.bundle import GREEDY_MODELS

    return bundle_for("base", "none", GREEDY_MODELS)
