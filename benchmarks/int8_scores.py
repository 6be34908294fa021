"""int8 attention products on LiteRT's XNNPACK against float32: the encoder's Q.K^T and P.V of one 300-query chunk,
and whole encoders of two bundles (the default policy and `--quantize encoder=dynamic-int8+int8-qk`).

The int8 products are QUANTIZE -> int8 BATCH_MATMUL -> DEQUANTIZE as the converter writes them from a
representative dataset: Q, K and V with ranges of exactly [-128 s, 127 s] (zero-point 0, which XNNPACK needs on
the right-hand operand), P in [0, 1] (zero-point -128); "alone" is the int8 product without its QUANTIZE and
DEQUANTIZE (int8 inputs and output). Each model is checked to run as one XNNPACK node.
Times are interleaved, the median of REPS calls each: the CPU time of the calling thread with 1 thread (robust to
other processes on a shared machine) and the wall time with 2 threads.

With two bundles and --wer: the greedy WER of each on every clip of ../shared/audio with a reference (each clip
on its own; English only for an English-only model, the clip's language given to a multilingual one).

Run: .venv/bin/python benchmarks/int8_scores.py [REPS] [DEFAULT_BUNDLE INT8_QK_BUNDLE [--wer]]
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from run import machine  # noqa: E402

QUERIES, FRAMES, HEAD_DIM = 300, 1500, 64
MODELS = {6: "tiny.en", 8: "base"}  # heads
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


def products(heads: int) -> dict[str, bytes]:
    import tensorflow as tf

    warnings.filterwarnings("ignore", "Statistics for quantized inputs")  # the inputs stay float32 on purpose
    rng = np.random.default_rng(0)
    q, kv, p = [heads, QUERIES, HEAD_DIM], [heads, FRAMES, HEAD_DIM], [heads, QUERIES, FRAMES]

    def symmetric(shape):  # zero-point 0: the range is exactly [-128 s, 127 s]
        x = rng.uniform(-4, 4, shape).astype(np.float32)
        x.flat[:2] = -128 * 4 / 127, 4.0
        return x

    def weights(shape):
        x = rng.uniform(0, 1, shape).astype(np.float32)
        x.flat[:2] = 0, 1
        return x

    graphs = {"Q.K^T": (lambda a, b: tf.matmul(a, b, transpose_b=True), (q, kv), (symmetric, symmetric)),
              "P.V": (lambda a, b: tf.matmul(a, b), (p, kv), (weights, symmetric))}
    files = {}
    for name, (product, shapes, samples) in graphs.items():
        function = tf.function(product).get_concrete_function(*(tf.TensorSpec(s) for s in shapes))
        for kind in ("float32", "int8", "int8 alone"):
            converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
            if kind == "int8 alone":  # int8 inputs and output: the product without its QUANTIZE and DEQUANTIZE
                converter.inference_input_type = converter.inference_output_type = tf.int8
            if kind != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([f(s) for f, s in zip(samples, shapes)] for _ in range(4))
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            files[f"{name} {kind}"] = converter.convert()
    return files


def prepared(model: str | bytes, threads: int, feed=None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(**{"model_path" if isinstance(model, str) else "model_content": model},
                              num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(1)
    for detail in interpreter.get_input_details():
        value = feed if feed is not None else rng.uniform(0, 1, detail["shape"])
        if detail["dtype"] == np.int8:
            value = rng.integers(-128, 128, detail["shape"])
        interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
    interpreter.invoke()
    return interpreter


def delegation(interpreter) -> str:
    """What XNNPACK took: one DELEGATE node that reads the model's inputs and writes its outputs, and the types of
    the BATCH_MATMULs inside it."""
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    whole = len(delegates) == 1 and set(delegates[0]["outputs"]) == {
        d["index"] for d in interpreter.get_output_details()}
    types = sorted({tensors[op["inputs"][0]]["dtype"].__name__ for op in ops if op["op_name"] == "BATCH_MATMUL"})
    return f"{'one XNNPACK node' if whole else 'NOT one XNNPACK node'}, BATCH_MATMUL {'/'.join(types)}"


def timed(models: dict[str, tuple], reps: int) -> dict[str, tuple[float, float]]:
    """name -> (median CPU ms with 1 thread, median wall ms with 2 threads), the models' calls interleaved."""
    cpu = {name: [] for name in models}
    wall = {name: [] for name in models}
    for _ in range(reps):
        for name, (single, double) in models.items():
            start = time.thread_time()
            single.invoke()
            cpu[name].append(time.thread_time() - start)
            start = time.perf_counter()
            double.invoke()
            wall[name].append(time.perf_counter() - start)
    return {name: (1e3 * np.median(cpu[name]), 1e3 * np.median(wall[name])) for name in models}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    info = machine()
    print(f"{info['cpu']}, {' '.join(info['simd'])}; ai-edge-litert {info['versions']['ai-edge-litert']}; "
          f"load average {os.getloadavg()[0]:.1f}; median of {reps}")
    print("\n| product | float32: CPU 1 thread / wall 2 threads | int8 | int8 / float32 (CPU) | int8 alone / "
          "float32 (CPU) | int8 model |")
    print("|---|---|---|---|---|---|")
    for heads, model in MODELS.items():
        files = products(heads)
        runs = {name: (prepared(data, 1), prepared(data, 2)) for name, data in files.items()}
        times = timed(runs, reps)
        for product in ("Q.K^T", "P.V"):
            f, i, alone = (times[f"{product} {kind}"] for kind in ("float32", "int8", "int8 alone"))
            print(f"| {model} {product} [{heads}, {QUERIES}, ...] | {f[0]:.2f} / {f[1]:.2f} ms | "
                  f"{i[0]:.2f} / {i[1]:.2f} ms | {i[0] / f[0]:.2f} | {alone[0] / f[0]:.2f} | "
                  f"{delegation(runs[f'{product} int8'][1])} |")
    if len(sys.argv) > 3:
        from whisper_tflite.audio import load_audio
        from whisper_tflite.bundle import Bundle
        from whisper_tflite.reference import reference_features
        from whisper_tflite.sources import load_whisper

        bundles = [Bundle.load(path) for path in sys.argv[2:4]]
        checkpoint = load_whisper(bundles[0].manifest["source"])
        mel = reference_features(checkpoint, load_audio(AUDIO / "en_librispeech-test-clean_1320-122612-0008.flac"))
        runs = {}
        for bundle in bundles:
            path = str(bundle.path("encoder"))
            runs[bundle.models["encoder"]["quantization"]] = (prepared(path, 1, mel), prepared(path, 2, mel))
        times = timed(runs, max(reps // 4, 5))
        for name, (cpu, wall) in times.items():
            print(f"{bundles[0].manifest['source']} encoder, {name}: {cpu:.0f} ms CPU (1 thread), {wall:.0f} ms "
                  f"wall (2 threads); {delegation(runs[name][1])}")
        if "--wer" in sys.argv:
            word_error_rates(sys.argv[2:4])


def word_error_rates(bundles: list[str]) -> None:
    from whisper_tflite.audio import load_audio
    from whisper_tflite.evaluation import error_rate, read_manifest
    from whisper_tflite.runtime import Transcriber

    transcribers = [Transcriber(bundle, threads=2) for bundle in bundles]
    clips = [clip for clip in read_manifest(AUDIO) if clip.reference
             and (transcribers[0].multilingual or clip.language == "en")]
    print("\n| language | clips | " + " | ".join(bundles) + " |\n|---|---|" + "---|" * len(bundles))
    for language in dict.fromkeys(clip.language for clip in clips):
        chosen = [clip for clip in clips if clip.language == language]
        rates = []
        for transcriber in transcribers:
            given = {"language": language} if transcriber.multilingual else {}
            texts = [transcriber.transcribe(load_audio(clip.path), beam_size=1, best_of=1, **given).text
                     for clip in chosen]
            rates.append(error_rate([clip.reference for clip in chosen], texts, language))
        print(f"| {language} | {len(chosen)} | " + " | ".join(f"{rate:.2%}" for rate in rates) + " |")


if __name__ == "__main__":
    main()
