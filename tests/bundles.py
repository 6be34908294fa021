"""The bundles the tests convert: each distinct plan once per code version, in an on-disk cache.

Every process takes a bundle under a per-bundle file lock: whichever comes first converts it; another that needs
it meanwhile converts the run's next bundles that no one has started, then waits for it and finds it done. So two
xdist workers (`make test`) share each bundle, and a run without xdist can hand the bundles it needs after its
first one to a background process (`python -m tests.bundles NAME...`): a conversion keeps about one core busy,
the tests about one and a half.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import signal
import sys
from pathlib import Path

from whisper_tflite.bundle import CHUNKS_MODEL, DEFAULT_MODELS, GREEDY_MODELS, S4Y_MODELS

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bundles"
LOG = CACHE.parent / "background-conversions.log"
COMBINED = ("decoder", "pcm_encoder", "encoder_decoder", "whisper", "generator")

# fixture name: `convert`'s arguments
BUNDLES = {
    # what `convert` makes and users run; `--quantize dynamic-int8` is the same plan
    "default_bundle": dict(source="tiny.en", quantize=None, models=DEFAULT_MODELS),
    # without decoder_chunks, batched transcription's graph, and the vad model (float32 in every policy), which the
    # default bundle runs: less to convert
    "tiny_bundle": dict(source="tiny.en", quantize="none",
                        models=tuple(role for role in DEFAULT_MODELS if role not in (CHUNKS_MODEL, "vad"))),
    # the greedy roles only: its beam and alignment models are the same graphs as the checked fp32 and int8 ones
    "fp16_bundle": dict(source="tiny.en", quantize="fp16", models=GREEDY_MODELS),
    "older_bundle": dict(source="tiny.en", quantize=None, models=GREEDY_MODELS, min_runtime="2.14"),
    "tiny_combined": dict(source="tiny.en", quantize="none", models=("features", "encoder", *COMBINED)),
    # base decodes greedily in its tests (no decoder_batch, alignment: a minute of conversion)
    "base_bundle": dict(source="base", quantize="none", models=GREEDY_MODELS),
    # the one-file model only: its parts are the same graphs, checked on tiny.en
    "base_combined": dict(source="base", quantize="none", models=("features", "whisper")),
    # --quantize int4 (docs/quantization.md), without the float32 vad model: the one bundle of that policy tested
    "int4_bundle": dict(source="tiny.en", quantize="int4", models=tuple(r for r in DEFAULT_MODELS if r != "vad")),
    "s4y_tiny_en": dict(source="tiny.en", quantize="none", models=tuple(S4Y_MODELS), layout="s4y"),
    # a multilingual model with its language fixed: the one file whisper-s4y's demo app runs on the mel
    "s4y_base_de": dict(source="base", quantize="none", models=("features-extractor", "encoder_decoder"),
                        layout="s4y", language="de"),
}

CONVERSION_STACK = ("tensorflow", "tf-keras", "keras", "flatbuffers", "ml-dtypes", "transformers", "numpy",
                    "ai-edge-litert", "ai-edge-quantizer")


def code_version() -> str:
    """Changes whenever anything that shapes a converted model changes: the package's source and pins, the
    installed conversion stack and the Python that runs it."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # ai-edge-quantizer: only --quantize int4 needs it
            return "absent"

    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "whisper_tflite").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    digest.update(" ".join([sys.version, *(f"{name}={installed(name)}" for name in CONVERSION_STACK)]).encode())
    return digest.hexdigest()[:12]


def remove_stale(version: str) -> None:
    """Bundles of other code versions, and what an interrupted conversion of them left."""
    if CACHE.is_dir():
        for entry in CACHE.iterdir():
            if version not in entry.name:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


NEEDED: list[str] = []  # the bundles this run's tests use, in the order they come (conftest.py fills it)


def _folder(version: str, source: str, quantize: str | None, models: tuple[str, ...], min_runtime: str | None = None,
            layout: str = "bundle", language: str | None = None) -> Path:
    """Where the bundle of this plan is cached: two plans that quantize each role alike (e.g. `dynamic-int8` and
    the default policy) share one."""
    from whisper_tflite.conversion import quantization_plan

    plan = quantization_plan(quantize, models)
    key = hashlib.sha256(repr((sorted(plan.items()), min_runtime, layout, language)).encode()).hexdigest()[:8]
    return CACHE / f"{source}-{key}-{version}"


def build(version: str, **plan) -> Path:
    """The cached bundle of `plan` (`convert`'s arguments), converted first if no one has. While another process
    converts it, this one converts the run's other bundles that no one has started, rather than wait idle."""
    path = _folder(version, **plan)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".lock-{path.name}", "w") as lock:
        if not _convert_if_free(lock, path, plan):
            for name in NEEDED:
                other = _folder(version, **BUNDLES[name])
                if other != path and not (other / "manifest.json").is_file():
                    with open(CACHE / f".lock-{other.name}", "w") as other_lock:
                        _convert_if_free(other_lock, other, BUNDLES[name])
                if _convert_if_free(lock, path, plan):
                    return path
            fcntl.flock(lock, fcntl.LOCK_EX)
            _convert(path, plan)
    return path


def _convert_if_free(lock, path: Path, plan: dict) -> bool:
    """Converts the bundle unless it is done or another process holds its lock; False if one does."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    _convert(path, plan)
    return True


def _convert(path: Path, plan: dict) -> None:
    """With the bundle's lock held."""
    from whisper_tflite.conversion import convert

    if not (path / "manifest.json").is_file():
        convert(plan["source"], path, **{key: value for key, value in plan.items() if key != "source"}, force=True,
                progress=False)


def _background(names: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a run that ends early: `convert` removes its staging
    version = code_version()
    for name in names:
        print(f"converting {name}", file=sys.stderr, flush=True)
        build(version, **BUNDLES[name])


if __name__ == "__main__":
    _background(sys.argv[1:])
