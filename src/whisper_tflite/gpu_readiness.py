"""GPU delegate readiness: TensorFlow's model analyzer (`tf.lite.experimental.Analyzer`, gpu_compatibility=True)
over .tflite files, run by a Python given by the user.

Not the converter's own TensorFlow: the analyzers of the pinned TensorFlow (2.21) and of ai-edge-litert carry no
GPU compatibility rules (a model of TOPK_V2 and RFFT2D, which the GPU delegate does not take, "looks
compatible"). TensorFlow 2.16.1's analyzer still has them; `make gpu-analyzer` makes a virtualenv with it
(gpu-analyzer.txt). Every run checks such a control model first, so an analyzer without rules is refused
instead of passing everything.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .errors import UsageError

ANALYZE = r"""
import collections, contextlib, io, json, sys
import tensorflow as tf

def warnings(**model):
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        tf.lite.experimental.Analyzer.analyze(**model, gpu_compatibility=True)
    found = [line.split("WARNING: ", 1)[1].strip() for line in report.getvalue().splitlines()
             if "GPU COMPATIBILITY WARNING" in line and "Subgraph#" not in line]
    return dict(collections.Counter(found))

@tf.function(input_signature=[tf.TensorSpec([4, 8], tf.float32)])
def control(x):
    return {"top": tf.math.top_k(x, 3).values, "spectrum": tf.math.abs(tf.signal.rfft(x))}

converter = tf.lite.TFLiteConverter.from_concrete_functions([control.get_concrete_function()])
print(json.dumps({"tensorflow": tf.__version__, "control": warnings(model_content=converter.convert()),
                  "files": {path: warnings(model_path=path) for path in sys.argv[1:]}}))
"""


def gpu_verdicts(python: str, files: list[str]) -> tuple[str, dict[str, dict[str, int]]]:
    """(analyzer name, {file: {warning: count}}), an empty dict for a file the analyzer finds GPU-compatible.
    Refuses, in one line, a Python that cannot run the analyzer or whose analyzer has no GPU rules."""
    try:
        done = subprocess.run([python, "-c", ANALYZE, *files], capture_output=True, text=True,
                              env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    except OSError as error:
        raise UsageError(f"--gpu-analyzer {python}: {error.strerror}") from None
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        last = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UsageError(f"--gpu-analyzer {python} cannot run TensorFlow's analyzer: {last}") from None
    analyzer = f"TensorFlow {report['tensorflow']}"
    if not any("TOPK_V2" in warning for warning in report["control"]):
        raise UsageError(f"--gpu-analyzer {python}: the analyzer of {analyzer} has no GPU compatibility rules (it "
                         "passes TOPK_V2); give a Python with TensorFlow 2.16.1 (make gpu-analyzer)")
    return analyzer, report["files"]


def gpu_entries(python: str, folder: Path, models: dict[str, dict]) -> dict[str, dict]:
    """The manifest's `gpu` field ({analyzer, compatible, warnings}) of each model of `models` (manifest entries,
    their files in `folder`), from one run of the analyzer."""
    files = {role: str(Path(folder) / entry["file"]) for role, entry in models.items()}
    analyzer, found = gpu_verdicts(python, sorted(set(files.values())))  # roles may share a file
    return {role: {"analyzer": analyzer, "compatible": not found[file], "warnings": found[file]}
            for role, file in files.items()}
