"""Roofline of a bundle's stages: the arithmetic each must do and the bytes it must move, its measured time, and
how close that is to this CPU's peak, so the next cut is chosen from data.

Peaks are measured on the same machine, with the same runtime and thread count, as the fastest of several calls: a
[1500, 1024] x [1024, 4096] FULLY_CONNECTED in float32 and in dynamic-range int8 (through XNNPACK, as the
encoder's layers run), and memory bandwidth as a numpy copy of 512 MB (bytes read + written). Each stage's model is invoked on fixed inputs
(static shapes: the time does not depend on the values), median of the runs. The encoder is also split, with
models of one layer's parts at its true shapes: attention (BATCH_MATMUL, SOFTMAX; float32, since dynamic-range
quantization leaves products of two activations alone) and the projections and MLP (int8 weights).

Bytes are what a stage cannot avoid reading or writing: weights (the file), inputs, outputs, and for attention
the scores [heads, 1500, 1500] written, read by the softmax, written again and read by the values' product.
Both yardsticks are practical, not datasheet, peaks: a stage whose bytes stay in the CPU's caches between calls
(the decoder step's ~50 MB in a large L3), or whose products run faster than the big FULLY_CONNECTED, shows
more than 100 %.

Run: .venv/bin/python benchmarks/roofline.py [BUNDLE...]   (default bundles/tiny.en; bundles of the default
policy). Prints the tables and writes the "Roofline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from run import KEPT_SECTIONS, machine, write_report  # noqa: E402

THREADS = 2
SECTION = KEPT_SECTIONS[1]


def interpreter(model: str | bytes):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(**({"model_path": model} if isinstance(model, str) else {"model_content": model}),
                         num_threads=THREADS)
    runner.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in runner.get_input_details():
        if detail["dtype"] == np.float32:
            value = rng.standard_normal(detail["shape"]).astype(np.float32) * 0.1
        else:
            value = np.full(detail["shape"], 100, detail["dtype"])  # token ids, a cache offset of 100
        runner.set_tensor(detail["index"], value)
    return runner


def median_ms(model: str | bytes, seconds: float = 3.0, best: bool = False) -> float:
    """The median time of a call (`best`: the fastest, for a peak)."""
    runner = interpreter(model)
    runner.invoke()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * float(min(times) if best else np.median(times))


def tflite(function, shapes: list[list[int]], int8: bool = False) -> bytes:
    import tensorflow as tf

    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(function, input_signature=specs).get_concrete_function()])
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def peaks() -> dict[str, float]:
    """GFLOP/s of float32 and dynamic-range int8 GEMM, GB/s of memory copy."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    m, k, n = 1500, 1024, 4096
    weights = tf.constant(rng.standard_normal([k, n]).astype(np.float32) * 0.05)
    flops = 2 * m * k * n
    result = {f"{kind} GFLOP/s": flops / median_ms(tflite(lambda x: tf.matmul(x, weights), [[m, k]], kind == "int8"),
                                                   best=True) / 1e6 for kind in ("fp32", "int8")}
    source = np.ones(512 << 18, np.float32)  # 512 MB
    target = np.empty_like(source)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    result["GB/s"] = 2 * source.nbytes / min(times) / 1e9
    return result


def encoder_parts(d: int, heads: int) -> dict[str, float]:
    """ms of one encoder layer's attention (float32) and of its projections and MLP (int8 weights)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    t, hd = 1500, d // heads

    def attention(q, k, v):
        return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1), v)

    def constant(shape):
        return tf.constant(rng.standard_normal(shape).astype(np.float32) * 0.05)

    qkvo, fc1, fc2 = constant([d, 4 * d]), constant([d, 4 * d]), constant([4 * d, d])

    def dense_part(x):  # q, k, v and out projections as one [d, 4d] product, then the MLP
        return tf.matmul(tf.nn.gelu(tf.matmul(x, fc1), approximate=False), fc2) + tf.matmul(x, qkvo)[:, :d]

    return {"attention": median_ms(tflite(attention, [[heads, t, hd]] * 3)),
            "dense": median_ms(tflite(dense_part, [[t, d]], int8=True))}


def stage_rows(bundle: Path, peak: dict[str, float]) -> list[tuple]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    dims, models = manifest["dims"], manifest["models"]
    d, t, ctx, vocab = dims["d_model"], dims["n_audio_ctx"], dims["n_text_ctx"], dims["n_vocab"]
    enc_layers, dec_layers, heads, mels = dims["encoder_layers"], dims["decoder_layers"], dims["decoder_heads"], \
        dims["n_mels"]
    cross_bytes = 2 * dec_layers * t * d * 4
    scores_bytes = 4 * heads * t * t * 4  # written, read by the softmax, written, read
    prompt = ctx // 2
    work = {  # stage: (int8-weight MACs, float32 MACs, bytes)
        "features": (0, 3000 * 400 * 402 + 3000 * 201 * mels, 4 * (480000 + 400 * 402 + 2 * mels * 3000)),
        "encoder": (3000 * mels * d * 3 + t * d * d * 3 + enc_layers * 12 * t * d * d + dec_layers * 2 * t * d * d,
                    enc_layers * 2 * t * t * d,
                    models["encoder"]["bytes"] + 4 * mels * 3000 + 4 * t * d + cross_bytes
                    + enc_layers * scores_bytes),
        # Less the int8 token table that the embedding gathers from (a copy of the logits' table of its own in
        # dynamic-range files): a call reads only its tokens' rows of it.
        "decoder_step": (dec_layers * 14 * d * d + vocab * d, dec_layers * 2 * (ctx + t) * d,
                         models["decoder_step"]["bytes"] - vocab * d + cross_bytes + 2 * dec_layers * ctx * d * 4
                         + vocab * 4),
        "prefill": (prompt * dec_layers * 14 * d * d, dec_layers * 2 * prompt * (prompt + t) * d,
                    models["prefill"]["bytes"] - vocab * d + cross_bytes + 2 * dec_layers * prompt * d * 4),
    }

    def row(name: str, int8_macs: float, fp32_macs: float, moved: float, measured: float) -> tuple:
        compute = 2e-6 * (int8_macs / peak["int8 GFLOP/s"] + fp32_macs / peak["fp32 GFLOP/s"])
        memory = moved / peak["GB/s"] / 1e6
        return (name, 2 * int8_macs / 1e9, 2 * fp32_macs / 1e9, moved / 1e6, measured, compute, memory,
                max(compute, memory) / measured)

    rows = [row(stage, *counts, median_ms(str(bundle / models[stage]["file"]), 5.0 if stage == "encoder" else 2.0))
            for stage, counts in work.items()]
    parts = encoder_parts(d, heads)
    rows.append(row(f"encoder: attention x {enc_layers}", 0, enc_layers * 2 * t * t * d, enc_layers * scores_bytes,
                    enc_layers * parts["attention"]))
    rows.append(row(f"encoder: projections + MLP x {enc_layers}", enc_layers * 12 * t * d * d, 0,
                    enc_layers * 12 * d * d, enc_layers * parts["dense"]))
    return rows


def main() -> None:
    bundles = [Path(arg) for arg in sys.argv[1:]] or [Path("bundles/tiny.en")]
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores ({', '.join(info['simd'])}), {THREADS} threads", flush=True)
    peak = peaks()
    lines = [SECTION, "", f"`benchmarks/roofline.py` on {info['cpu']}, {info['cores']} cores "
             f"({', '.join(info['simd'])}), {THREADS} threads, ai-edge-litert {info['versions']['ai-edge-litert']}. "
             f"Peaks measured the same way: float32 GEMM {peak['fp32 GFLOP/s']:.0f} GFLOP/s, dynamic-range int8 "
             f"GEMM {peak['int8 GFLOP/s']:.0f} GFLOP/s ([1500, 1024] x [1024, 4096] FULLY_CONNECTED), memory "
             f"copy {peak['GB/s']:.1f} GB/s (read + written). 'at peak' is the time the stage's arithmetic takes "
             "at those peaks (int8-weight products at the int8 one), 'at bandwidth' the time its bytes take; "
             "'of roofline' is the larger of the two over the measured time.", ""]
    print("\n".join(lines[2:]), flush=True)
    for bundle in bundles:
        source = json.loads((bundle / "manifest.json").read_text())["source"]
        lines += [f"{source} ({bundle.name}, default policy):", "",
                  "| stage | int8-weight GFLOP | fp32 GFLOP | MB moved | measured ms | at peak ms | at bandwidth ms "
                  "| of roofline |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        rows = stage_rows(bundle, peak)
        for row in rows:
            lines.append(f"| {row[0]} | {row[1]:.2f} | {row[2]:.2f} | {row[3]:.1f} | {row[4]:.2f} | {row[5]:.2f} | "
                         f"{row[6]:.2f} | {row[7]:.0%} |")
            print(lines[-1], flush=True)
        times = {row[0].split(" x ")[0]: row[4] for row in rows}
        lines += ["", f"The encoder's float32 attention takes {times['encoder: attention'] / times['encoder']:.0%} "
                  f"of the encoder's time (its parts measured alone), its int8-weight products "
                  f"{times['encoder: projections + MLP'] / times['encoder']:.0%}; int8 GEMM runs "
                  f"{peak['int8 GFLOP/s'] / peak['fp32 GFLOP/s']:.1f}x as fast as float32 on this machine.", ""]
    write_report(section="\n".join(lines))
    print("wrote the roofline section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
