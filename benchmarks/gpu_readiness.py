"""GPU delegate readiness: TensorFlow's model analyzer (`tf.lite.experimental.Analyzer`, gpu_compatibility=True)
over every .tflite file of the given folders, per file: "compatible" or its warnings, counted.

The analyzer of the pinned TensorFlow (2.21) and of ai-edge-litert passes every operator: their builds carry no
GPU compatibility rules (a model of TOPK_V2 and RFFT2D, which the GPU delegate does not take, "looks
compatible"; the control column shows it). TensorFlow 2.16.1's analyzer still has the rules, so this script
runs it from its own virtualenv (.cache/tensorflow-2.16.1, created at the first run with tensorflow-cpu 2.16.1
and numpy 1.26.4). The manifest records no verdict for the same reason: no analyzer that conversion can import
gives one.

Run: .venv/bin/python benchmarks/gpu_readiness.py FOLDER...   (e.g. bundles/tiny.en)
tests/test_runtime_versions.py holds the default bundle's and the combined models' verdicts to what the README says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parents[1] / ".cache" / "tensorflow-2.16.1"

ANALYZE = r"""
import collections, contextlib, io, json, sys
import tensorflow as tf

def verdict(**model):
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        tf.lite.experimental.Analyzer.analyze(**model, gpu_compatibility=True)
    warnings = [line.split("WARNING: ", 1)[1].strip() for line in report.getvalue().splitlines()
                if "GPU COMPATIBILITY WARNING" in line and "Subgraph#" not in line]
    return dict(collections.Counter(warnings))

@tf.function(input_signature=[tf.TensorSpec([4, 8], tf.float32)])
def control(x):
    return {"top": tf.math.top_k(x, 3).values, "spectrum": tf.math.abs(tf.signal.rfft(x))}

converter = tf.lite.TFLiteConverter.from_concrete_functions([control.get_concrete_function()])
print(json.dumps({"tensorflow": tf.__version__, "control": verdict(model_content=converter.convert()),
                  "files": {path: verdict(model_path=path) for path in sys.argv[1:]}}))
"""


def python_with_rules() -> str:
    """The Python of the TensorFlow 2.16.1 virtualenv, created at the first call."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "tensorflow-cpu==2.16.1", "numpy==1.26.4"],
                       check=True, capture_output=True)
    return str(VENV / "bin" / "python")


def analyze(python: str, files: list[str]) -> dict:
    """{"tensorflow": version, "control": warnings, "files": {path: warnings}}; warnings: {text: count}, empty
    when the analyzer finds the model GPU-compatible."""
    done = subprocess.run([python, "-c", ANALYZE, *files], capture_output=True, text=True,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"the analyzer failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    files = sorted(str(path) for folder in sys.argv[1:] for path in Path(folder).glob("*.tflite"))
    if not files:
        sys.exit("usage: gpu_readiness.py FOLDER... (folders holding .tflite files)")
    pinned, rules = analyze(sys.executable, files), analyze(python_with_rules(), files)

    def show(warnings: dict) -> str:
        return "; ".join(f"{count} x {text}" for text, count in warnings.items()) or "compatible"

    print(f"control (TOPK_V2, RFFT2D): TF {pinned['tensorflow']}: {show(pinned['control'])} | "
          f"TF {rules['tensorflow']}: {show(rules['control'])}")
    for path in files:
        print(f"{path}: TF {pinned['tensorflow']}: {show(pinned['files'][path])} | "
              f"TF {rules['tensorflow']}: {show(rules['files'][path])}")


if __name__ == "__main__":
    main()
