"""Which TFLite/LiteRT runtimes run a bundle: the manifest says what each file needs, `--min-runtime` makes files
an older runtime loads, and tflite-runtime 2.14.0 (the oldest interpreter on PyPI for this Python), in a
virtualenv of its own, transcribes such a bundle as ai-edge-litert does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ai_edge_litert import schema_py_generated as schema

from whisper_tflite import Transcriber
from whisper_tflite.evaluation import error_rate

from .conftest import REPO
from .test_faults import _bundle_copy, error_lines, run_cli

OLD_RUNTIME = "2.14.0"


def recorded_runtime(path: Path) -> str:
    """The file's own `min_runtime_version` metadata, read with LiteRT's flatbuffer schema (the converter's
    side reads it with TensorFlow's)."""
    data = path.read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"min_runtime_version":
            return bytes(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()).rstrip(b"\0").decode()
    raise AssertionError(f"{path} records no min_runtime_version")


def as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_manifest_records_what_each_file_needs(default_bundle):
    """The default bundle's files need what docs/deployment.md's runtime table says."""
    manifest = json.loads((default_bundle / "manifest.json").read_text())
    needs = {role: entry["min_runtime_version"] for role, entry in manifest["models"].items()}
    assert needs == {role: recorded_runtime(default_bundle / entry["file"])
                     for role, entry in manifest["models"].items()}
    assert needs == {"features": "1.14.0", "encoder": "2.17.0", "decoder_step": "2.17.0", "prefill": "2.17.0",
                     "decoder_batch": "2.17.0", "decoder_batch_short": "2.17.0", "decoder_chunks": "2.17.0",
                     "alignment": "2.17.0", "vad": "2.0.0"}


@pytest.fixture(scope="module")
def old_runtime_python(tmp_path_factory) -> Path:
    """A virtualenv with tflite-runtime 2.14.0 instead of ai-edge-litert (and numpy 1.26, which it was built
    for); the other runtime dependencies at constraints.txt's versions; whisper_tflite from this checkout."""
    venv = tmp_path_factory.mktemp("tflite-runtime-2.14")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in (REPO / "constraints.txt").read_text().splitlines()
                                   if not line.startswith("numpy==")))
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(constraints),
                           f"tflite-runtime=={OLD_RUNTIME}", "numpy==1.26.4", "tokenizers", "soundfile", "soxr",
                           "av", "tqdm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv / "bin" / "python"


def run_old(python: Path, script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", script, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=600)


TRANSCRIBE = """
import json, sys
import whisper_tflite.runtime.models as models
from whisper_tflite import Transcriber
transcriber = Transcriber(sys.argv[1], threads=2)
texts = [transcriber.transcribe(path, beam_size=1).text for path in sys.argv[2:]]
print(json.dumps({"interpreter": models.Interpreter.__module__, "texts": texts}))
"""


def transcribe_on_old_runtime(python: Path, bundle: Path, clips) -> list[str]:
    done = run_old(python, TRANSCRIBE, bundle, *(c.path for c in clips))
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["interpreter"] == "tflite_runtime.interpreter"
    return answer["texts"]


def greedy_texts(bundle: Path, clips) -> list[str]:
    transcriber = Transcriber(bundle, threads=2)
    return [transcriber.transcribe(c.path, beam_size=1).text for c in clips]


def test_tflite_runtime_2_14_transcribes_as_litert(tiny_bundle, older_bundle, default_bundle, old_runtime_python,
                                                   clip_named):
    """The fp32 bundle (it needs no newer runtime) gives the same transcripts on both runtimes (4 clips). The
    `--min-runtime 2.14` bundle loads and transcribes there; its dynamic-range int8 layers run other kernels in
    each runtime, so a near tie may fall the other way: its error rate is held to the default bundle's."""
    clips = [clip_named(name) for name in ("en_jfk_openai-whisper.flac", "en_jfk_whisper-cpp.wav",
                                           "en_librispeech-test-clean_121-127105-0000.flac",
                                           "en_librispeech-test-clean_1320-122612-0008.flac")]
    for bundle in (tiny_bundle, older_bundle):
        for role, entry in json.loads((bundle / "manifest.json").read_text())["models"].items():
            assert as_tuple(entry["min_runtime_version"]) <= as_tuple(OLD_RUNTIME), (bundle, role)
            assert entry["min_runtime_version"] == recorded_runtime(bundle / entry["file"])
    assert transcribe_on_old_runtime(old_runtime_python, tiny_bundle, clips) == greedy_texts(tiny_bundle, clips)

    on_old = transcribe_on_old_runtime(old_runtime_python, older_bundle, clips)
    on_litert, default = greedy_texts(older_bundle, clips), greedy_texts(default_bundle, clips)
    references = [c.reference for c in clips]
    rates = [error_rate(references, texts, "en") for texts in (on_old, on_litert, default)]
    print(f"greedy WER, {len(clips)} clips: --min-runtime 2.14 bundle on tflite-runtime 2.14 {rates[0]:.2%}, on "
          f"ai-edge-litert {rates[1]:.2%} ({sum(a == b for a, b in zip(on_old, on_litert))} transcripts the same); "
          f"default bundle {rates[2]:.2%}")
    assert max(rates[:2]) <= rates[2] + 0.015


DEFAULT_ON_OLD = """
import sys
from whisper_tflite import Transcriber
from whisper_tflite.errors import BundleError
try:
    Transcriber(sys.argv[1])
except BundleError as e:
    print(e)
"""


def test_default_bundle_on_tflite_runtime_2_14_says_what_it_needs(default_bundle, old_runtime_python):
    done = run_old(old_runtime_python, DEFAULT_ON_OLD, default_bundle)
    assert done.returncode == 0, done.stderr[-2000:]
    message = done.stdout.strip()
    assert "\n" not in message and "needs TFLite/LiteRT 2.17.0 or newer" in message, message
    assert "--min-runtime" in message


def test_min_runtime_refuses_what_cannot_be_had(tmp_path):
    out = tmp_path / "bundle"
    done = run_cli("convert", "tiny.en", "--out", out, "--models", "features,encoder", "--min-runtime", "2.5",
                   "--quiet")
    assert done.returncode == 2 and len(error_lines(done)) == 1, done.stderr
    assert "encoder (dynamic-int8) needs TFLite/LiteRT 2.9.0, newer than --min-runtime 2.5" in done.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    done = run_cli("convert", "tiny.en", "--out", out, "--min-runtime", "two", "--quiet")
    assert done.returncode == 2 and "'two' is not a version such as 2.16" in done.stderr


def inspect_rows(stdout: str) -> dict[str, list[str]]:
    """`inspect`'s table: {role: [role, file, MB, quantization, runtime, GPU]}."""
    lines = stdout.splitlines()
    return {line.split()[0]: line.split() for line in lines[2:lines.index(next(l for l in lines
                                                                             if l.startswith("runtime:")))]}


def test_inspect_shows_what_a_folder_holds(default_bundle, s4y_tiny_en, tmp_path):
    """Per role: file, size, quantization and the runtime the file itself records; a folder whose file was edited
    is refused in one line."""
    done = run_cli("inspect", default_bundle)
    assert done.returncode == 0, done.stderr
    rows = inspect_rows(done.stdout)
    for role in ("features", "encoder", "decoder_step", "prefill", "decoder_batch", "decoder_batch_short",
                 "decoder_chunks", "alignment"):
        path = default_bundle / ("text_decoder.tflite" if role not in ("features", "encoder") else f"{role}.tflite")
        assert rows[role] == [role, path.name, f"{path.stat().st_size / 1e6:.1f}",
                              "none" if role == "features" else "dynamic-int8", recorded_runtime(path), "-"], rows
    assert "GPU: not analyzed" in done.stdout and "languages (1): en" in done.stdout

    done = run_cli("inspect", s4y_tiny_en)
    assert done.returncode == 0 and "whisper-s4y layout of tiny.en: transcribes en" in done.stdout, done.stderr
    assert set(inspect_rows(done.stdout)) == {"features-extractor", "encoder", "pcm-encoder", "decoder",
                                              "encoder_decoder", "generator"}

    edited = _bundle_copy(s4y_tiny_en, tmp_path / "edited")
    (edited / "tokenizer.json").write_text("{}")
    done = run_cli("inspect", edited)
    assert done.returncode == 2 and len(error_lines(done)) == 1 and "does not match its sha256" in done.stderr


@pytest.fixture(scope="module")
def gpu_analyzer() -> str:
    """TensorFlow 2.16.1's Python, from `make gpu-analyzer` (43 s the first time; kept in .cache)."""
    done = subprocess.run(["make", "--no-print-directory", "gpu-analyzer", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(REPO / ".cache" / "tensorflow-2.16.1" / "bin" / "python")


def gpu_column(folder: Path, analyzer: str) -> tuple[dict[str, str], str]:
    done = run_cli("inspect", folder, "--gpu-analyzer", analyzer)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    return {role: row[-1] for role, row in inspect_rows(done.stdout).items()}, done.stdout


def test_gpu_analyzer_verdicts(default_bundle, tiny_combined, gpu_analyzer):
    """TensorFlow 2.16.1's analyzer finds the default bundle's encoder GPU-compatible, and `inspect` says what
    keeps the others' ops on the CPU: the text decoder's look-up of the int8 token rows (one row a token; the
    verdict is the file's, shared by its six roles); the pinned TensorFlow's analyzer, which has no GPU rules,
    is refused."""
    verdicts, report = gpu_column(default_bundle, gpu_analyzer)
    assert verdicts == {"features": "no", "encoder": "yes", "decoder_step": "no", "prefill": "no",
                        "decoder_batch": "no", "decoder_batch_short": "no", "decoder_chunks": "no", "alignment": "no",
                        "vad": "no"}
    reasons = dict(line.strip().split(": ", 1) for line in report.splitlines() if line.startswith("  "))
    assert "Not supported op REVERSE_V2" in reasons["features"]
    assert all(set(reasons[role].split("; ")) == {"6 x Does not accept INT32 input.", "6 x Not supported op BITCAST",
                                                  "6 x Not supported Cast case. Input type: INT8 and output type: "
                                                  "FLOAT32"}
               for role in ("decoder_step", "prefill", "decoder_batch", "decoder_batch_short", "decoder_chunks",
                            "alignment"))
    verdicts, report = gpu_column(tiny_combined, gpu_analyzer)
    assert verdicts["decoder"] == verdicts["whisper"] == "no" and report.count("Not supported op WHILE") >= 2

    done = run_cli("inspect", default_bundle, "--gpu-analyzer", sys.executable)
    assert done.returncode == 2 and len(error_lines(done)) == 1, done.stderr
    assert "has no GPU compatibility rules (it passes TOPK_V2)" in done.stderr


def test_convert_records_gpu_verdicts(gpu_analyzer, tmp_path):
    """`convert --gpu-analyzer` writes each model's verdict into the manifest, and `inspect` shows it."""
    out = tmp_path / "bundle"
    done = run_cli("convert", "tiny.en", "--out", out, "--models", "features,encoder", "--gpu-analyzer",
                   gpu_analyzer, "--quiet")
    assert done.returncode == 0, done.stderr
    models = json.loads((out / "manifest.json").read_text())["models"]
    assert models["encoder"]["gpu"] == {"analyzer": "TensorFlow 2.16.1", "compatible": True, "warnings": {}}
    assert models["features"]["gpu"]["compatible"] is False
    assert models["features"]["gpu"]["warnings"]["Not supported op REVERSE_V2"] >= 1
    done = run_cli("inspect", out)
    assert done.returncode == 0, done.stderr
    assert {role: row[-1] for role, row in inspect_rows(done.stdout).items()} == {"features": "no", "encoder": "yes"}
    assert "  features: " in done.stdout and "GPU: the GPU delegate verdict of TensorFlow 2.16.1's" in done.stdout
