"""Bundles: file-level guarantees, quantization, the prompt in one call (token parity with the reference:
test_reference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

from whisper_tflite.bundle import sha256_of

from .bundles import BUNDLES

FLOAT_TYPES = {0: np.float32, 1: np.float16}


def _check_model_file(path):
    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), (path.name, ops)
    for details in (interpreter.get_input_details(), interpreter.get_output_details()):
        for d in details:
            assert all(int(n) > 0 for n in d["shape_signature"]), (path.name, d["name"], d["shape_signature"])
    model = flatbuffer_utils.read_model(str(path))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is not None and tensor.type in FLOAT_TYPES:
                values = np.asarray(data, dtype=np.uint8).view(FLOAT_TYPES[tensor.type])
                assert np.isfinite(values).all(), (path.name, tensor.name)


# docs/bundle.md's I/O table, written out for tiny.en (d 384, 6 heads of 64, 4 decoder layers, vocab 51864).
_CACHE, _CROSS = [6, 448, 64], [6, 1500, 64]
_LAYERS = range(4)
TINY_EN_IO = {
    "features": ({"pcm": [480000]}, {"log_mel": [1, 80, 3000], "log10_mel": [1, 80, 3000]}),
    "encoder": ({"log_mel": [1, 80, 3000]},
                {"hidden": [1, 1500, 384], **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}}),
    "decoder_step": ({"tokens": [1, 1], "offset": [1], **{f"self_{kv}_{i}": _CACHE for i in _LAYERS for kv in "kv"},
                      **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}},
                     {"logits": [1, 1, 51864], **{f"new_{kv}_{i}": [6, 1, 64] for i in _LAYERS for kv in "kv"}}),
    "prefill": ({"tokens": [1, 112], "offset": [1], **{f"self_{kv}_{i}": _CACHE for i in _LAYERS for kv in "kv"},
                 **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}},
                {f"new_{kv}_{i}": [6, 112, 64] for i in _LAYERS for kv in "kv"}),
    "decoder_batch": ({"tokens": [5, 1], "offset": [1],
                       **{f"self_{kv}_{i}": [5, *_CACHE] for i in _LAYERS for kv in "kv"},
                       **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}},
                      {"logits": [5, 1, 51864], **{f"new_{kv}_{i}": [5, 6, 1, 64] for i in _LAYERS for kv in "kv"}}),
    # the same over 232 cache slots: a start-of-transcript sequence and the 224 tokens a window may sample
    "decoder_batch_short": ({"tokens": [5, 1], "offset": [1],
                             **{f"self_{kv}_{i}": [5, 6, 232, 64] for i in _LAYERS for kv in "kv"},
                             **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}},
                            {"logits": [5, 1, 51864],
                             **{f"new_{kv}_{i}": [5, 6, 1, 64] for i in _LAYERS for kv in "kv"}}),
    # 8 windows of 5 beams over 128 cache slots; each window's cross K/V, the values transposed
    "decoder_chunks": ({"tokens": [40, 1], "offset": [1],
                        **{f"self_{kv}_{i}": [40, 6, 128, 64] for i in _LAYERS for kv in "kv"},
                        **{f"cross_k_{i}": [8, *_CROSS] for i in _LAYERS},
                        **{f"cross_v_{i}": [8, 6, 64, 1500] for i in _LAYERS}},
                       {"logits": [40, 1, 51864], **{f"new_{kv}_{i}": [40, 6, 1, 64] for i in _LAYERS for kv in "kv"}}),
    # tiny.en's 8 alignment heads, over the full context
    "alignment": ({"tokens": [1, 448], "offset": [1], **{f"cross_{kv}_{i}": _CROSS for i in _LAYERS for kv in "kv"}},
                  {"weights": [8, 448, 1500]}),
    # 128 frames of 512 samples after 64 of context, and the LSTM's h and c
    "vad": ({"pcm": [65600], "state": [2, 1, 128]}, {"speech_probs": [128], "next_state": [2, 1, 128]}),
}
INT32_INPUTS = {"tokens", "offset"}
# What each --quantize value must give per role (the features graph and the vad model always stay float32).
EXPECTED_PLAN = {
    "none": dict.fromkeys(TINY_EN_IO, "none"),
    "fp16": {"features": "none", "encoder": "fp16", "decoder_step": "fp16", "prefill": "fp16",
             "decoder_batch": "fp16", "decoder_batch_short": "fp16", "decoder_chunks": "fp16", "alignment": "fp16",
             "vad": "none"},
    "dynamic-int8": {"features": "none", "encoder": "dynamic-int8", "decoder_step": "dynamic-int8",
                     "prefill": "dynamic-int8", "decoder_batch": "dynamic-int8",
                     "decoder_batch_short": "dynamic-int8", "decoder_chunks": "dynamic-int8",
                     "alignment": "dynamic-int8", "vad": "none"},
    None: {"features": "none", "encoder": "dynamic-int8", "decoder_step": "dynamic-int8",
           "prefill": "dynamic-int8", "decoder_batch": "dynamic-int8", "decoder_batch_short": "dynamic-int8",
           "decoder_chunks": "dynamic-int8", "alignment": "dynamic-int8", "vad": "none"},
}
_TENSOR_TYPES = {0: "float32", 1: "float16", 9: "int8"}


def constant_bytes(path) -> dict[str, int]:
    """Bytes of constant (weight) tensors by element type, read from the flatbuffer."""
    model = flatbuffer_utils.read_model(str(path))
    sizes: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data) > 1024:
                name = _TENSOR_TYPES.get(tensor.type, str(tensor.type))
                sizes[name] = sizes.get(name, 0) + len(data)
    return sizes


def _bundle_of(quantize, tiny_bundle, fp16_bundle, default_bundle):
    """`dynamic-int8` quantizes each role as the default policy does: one plan, one bundle (tests/bundles.py)."""
    return {"none": tiny_bundle, "fp16": fp16_bundle, "dynamic-int8": default_bundle, None: default_bundle}[quantize]


def _peak_live_bytes(path, signature: str = "serving_default") -> int:
    """The most bytes of op outputs alive at once when a signature's ops run in the file's order (as TFLite and
    XNNPACK run them): what any arena must hold at least."""
    model = flatbuffer_utils.read_model(str(path))
    index = next(s.subgraphIndex for s in model.signatureDefs if s.signatureKey.decode() == signature)
    subgraph = model.subgraphs[index]
    ops = subgraph.operators
    born = {t: i for i, op in enumerate(ops) for t in op.outputs}
    dies = {t: len(ops) if t in subgraph.outputs else i for t, i in born.items()}
    for i, op in enumerate(ops):
        for t in op.inputs:
            if t in born:
                dies[t] = max(dies[t], i)
    item = {0: 4, 1: 2, 2: 4, 6: 1, 9: 1}  # float32, float16, int32, bool, int8
    size = {t: int(np.prod(subgraph.tensors[t].shape)) * item[subgraph.tensors[t].type] for t in born}
    return max(sum(size[t] for t in born if born[t] <= i <= dies[t]) for i in range(len(ops)))


def test_attention_scores_are_alive_a_chunk_at_a_time(default_bundle):
    """The encoder's self-attention runs a chunk of queries at a time, in order: less is alive at once than with
    one layer's whole scores and their softmax (measured on tiny.en: 113 MB unchunked, 32 MB chunked). The
    prefill's cross-attention runs whole (runtime/compiled.py says why)."""
    heads, frames = 6, 1500
    assert _peak_live_bytes(default_bundle / "encoder.tflite") < heads * frames * frames * 4


def test_log_mel_frames_are_alive_a_block_at_a_time(default_bundle):
    """The features model frames and transforms 300 frames at a time, in order: less is alive at once than one
    window's frames [3000, 400] (measured on the graph: 12.0 MB of op outputs alive at once when it framed the
    whole window, 2.9 MB in blocks)."""
    assert _peak_live_bytes(default_bundle / "features.tflite") < 3000 * 400 * 4


@pytest.mark.parametrize("quantize", ["none", "fp16", None])
def test_every_weight_is_stored_once(quantize, tiny_bundle, fp16_bundle, default_bundle):
    """No two constants of a bundle hold the same bytes (above 64 KB): the decoder roles are signatures of one
    file, whose weights they share, and the token embedding is one tensor for the look-up and the logits."""
    folder = _bundle_of(quantize, tiny_bundle, fp16_bundle, default_bundle)
    seen: dict[bytes, str] = {}
    for file in sorted(folder.glob("*.tflite")):
        model = flatbuffer_utils.read_model(str(file))
        for index, buffer in enumerate(model.buffers):
            if buffer.data is not None and len(buffer.data) > 1 << 16:
                data = np.asarray(buffer.data, np.uint8).tobytes()
                assert data not in seen, f"{file.name} buffer {index} repeats {seen[data]}"
                seen[data] = f"{file.name} buffer {index}"
    embedding = 51864 * 384
    sizes = {"none": 4 * embedding, "fp16": 2 * embedding, None: embedding}
    assert any(len(data) == sizes[quantize] for data in seen)  # the embedding, once


def test_default_bundle_size(default_bundle):
    """tiny.en's default bundle, every model and the tokenizer, is what an app downloads: 42 MB at most (the
    published sizes of the same weights: whisper.cpp's q8_0 file about 43 MB, faster-whisper's folder 78 MB)."""
    total = sum(path.stat().st_size for path in default_bundle.iterdir())
    assert total <= 42e6, total / 1e6


@pytest.mark.parametrize("quantize", ["none", "fp16", "dynamic-int8", None])
def test_bundle_files_are_builtin_static_and_finite(quantize, tiny_bundle, fp16_bundle, default_bundle):
    folder = _bundle_of(quantize, tiny_bundle, fp16_bundle, default_bundle)
    models = BUNDLES[{"none": "tiny_bundle", "fp16": "fp16_bundle"}.get(quantize, "default_bundle")]["models"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["models"]) == set(models)
    assert manifest["tokenizer"] == {"file": "tokenizer.json.gz", "sha256": sha256_of(folder / "tokenizer.json.gz")}
    checked: dict[str, tuple] = {}  # file: its sha256, interpreter and weight bytes; the decoder roles share one
    for role, entry in manifest["models"].items():
        path = folder / entry["file"]
        if entry["file"] not in checked:
            _check_model_file(path)
            checked[entry["file"]] = (sha256_of(path), Interpreter(model_path=str(path)), constant_bytes(path))
        digest, interpreter, weights = checked[entry["file"]]
        assert digest == entry["sha256"] and entry["bytes"] == path.stat().st_size
        runner = interpreter.get_signature_runner(entry["signature"])
        inputs, outputs = TINY_EN_IO[role]
        assert {n: list(d["shape"]) for n, d in runner.get_input_details().items()} == inputs, role
        assert {n: list(d["shape"]) for n, d in runner.get_output_details().items()} == outputs, role
        assert {spec["name"]: spec["shape"] for spec in entry["inputs"]} == inputs, role
        assert {spec["name"]: spec["shape"] for spec in entry["outputs"]} == outputs, role
        assert all(spec["dtype"] == ("int32" if spec["name"] in INT32_INPUTS else "float32")
                   for spec in entry["inputs"] + entry["outputs"]), role

        quantization = EXPECTED_PLAN[quantize][role]
        assert entry["quantization"] == quantization, role
        total = sum(weights.values())
        expected_type = {"none": "float32", "fp16": "float16", "dynamic-int8": "int8"}[quantization]
        # Most weight bytes are of the quantized type (the encoder's float32 position table is 2.3 MB of 11).
        assert weights.get(expected_type, 0) >= 0.6 * total, (role, quantization, weights)
        if quantization == "none":
            assert not {"int8", "float16"} & set(weights), (role, weights)
    assert manifest["special_tokens"]["eot"] == 50256 and manifest["dims"]["n_mels"] == 80
    assert manifest["alignment_heads"] == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    assert manifest["tools"]["tensorflow"] == "2.21.0"


def test_default_policy_per_role():
    """docs/quantization.md's default policy: int8 where it pays, float32 wherever a graph holds the mel's DFT basis."""
    from whisper_tflite.bundle import ROLES
    from whisper_tflite.conversion import quantization_plan

    assert quantization_plan(None, ROLES) == {
        "features": "none", "encoder": "dynamic-int8", "decoder_step": "dynamic-int8", "prefill": "dynamic-int8",
        "decoder_batch": "dynamic-int8", "decoder_batch_short": "dynamic-int8", "decoder_chunks": "dynamic-int8",
        "alignment": "dynamic-int8", "decoder": "dynamic-int8", "pcm_encoder": "none",
        "encoder_decoder": "dynamic-int8", "whisper": "none", "generator": "dynamic-int8", "vad": "none"}
    assert quantization_plan("fp16", ("features", "encoder", "vad")) == {"features": "none", "encoder": "fp16",
                                                                         "vad": "none"}
    # int4: the text decoder's roles (one file), the encoder int8, the graphs with the mel and the vad float32
    assert quantization_plan("int4", ROLES) == {
        "features": "none", "encoder": "dynamic-int8", "decoder_step": "int4", "prefill": "int4",
        "decoder_batch": "int4", "decoder_batch_short": "int4", "decoder_chunks": "int4", "alignment": "int4",
        "decoder": "int4", "pcm_encoder": "none", "encoder_decoder": "int4", "whisper": "none", "generator": "int4",
        "vad": "none"}


def test_int8_scores_run_in_xnnpack_and_keep_the_attention():
    """`encoder=dynamic-int8+int8-qk` on a two-chunk attention at small shapes: each Q.K^T is an int8 BATCH_MATMUL
    with zero-point 0 (what XNNPACK takes), the chunks share one quantized K, P.V stays float32, the whole graph is
    one XNNPACK node, and the output stays near float32's. Plans and calls without what it needs are one line."""
    import tensorflow as tf

    from whisper_tflite.conversion import INT8_SCORES, quantization_plan, to_tflite
    from whisper_tflite.errors import UsageError
    from whisper_tflite.graphs.base import GraphModule, attend_in_chunks

    class Attention(GraphModule):
        role = "encoder"
        input_signature = [tf.TensorSpec([4, 40, 16], tf.float32, name=n) for n in ("q", "k", "v")]

        def call(self, inputs):
            return {"out": attend_in_chunks(inputs["q"], inputs["k"], inputs["v"], rows=20)}

    rng = np.random.default_rng(0)
    feeds = [{n: rng.normal(0, 2, (4, 40, 16)).astype(np.float32) for n in "qkv"} for _ in range(3)]
    model = to_tflite(Attention(), INT8_SCORES, calibration=feeds[:2])
    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = parsed.subgraphs[0]
    products = [op for op in graph.operators if parsed.operatorCodes[op.opcodeIndex].builtinCode == 126]
    kinds = sorted((op.builtinOptions.adjY, graph.tensors[op.inputs[0]].type) for op in products)
    assert kinds == [(False, 0), (False, 0), (True, 9), (True, 9)]  # P.V float32, Q.K^T int8
    scores = [op for op in products if op.builtinOptions.adjY]
    assert scores[0].inputs[1] == scores[1].inputs[1]  # one K for both chunks
    assert {graph.tensors[i].quantization.zeroPoint[0] for op in scores for i in (*op.inputs, *op.outputs)} == {0}

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    outputs = {d["index"] for d in interpreter.get_output_details()}
    assert len(delegates) == 1 and set(delegates[0]["outputs"]) == outputs
    float32 = Interpreter(model_content=to_tflite(Attention(), "none")).get_signature_runner()
    ours, theirs = interpreter.get_signature_runner()(**feeds[2])["out"], float32(**feeds[2])["out"]
    # relative RMS error against float32, feeds of seeds 0, 1, 2: 0.034, 0.027, 0.034 (scores of +-16 in steps
    # of 0.13)
    assert np.sqrt(np.mean((ours - theirs) ** 2) / np.mean(theirs ** 2)) < 0.05

    with pytest.raises(UsageError, match="needs calibration audio"):
        to_tflite(Attention(), INT8_SCORES)
    assert quantization_plan({"encoder": INT8_SCORES}, ("features", "encoder"))["encoder"] == INT8_SCORES
    with pytest.raises(UsageError, match="the encoder only"):
        quantization_plan({"decoder_step": INT8_SCORES}, ("encoder", "decoder_step"))


def test_int4_without_the_quantizer_is_one_line(monkeypatch):
    import sys

    from whisper_tflite.conversion import quantize_int4
    from whisper_tflite.errors import UsageError

    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)  # what an absent package raises: ImportError
    with pytest.raises(UsageError, match="needs ai-edge-quantizer"):
        quantize_int4(b"")


def test_prompt_in_one_call_equals_step_by_step(tiny_en, tiny_en_features, tiny_en_greedy, clip_named):
    """DecoderStep takes several tokens at once (a static n_tokens) or one at a time, with the same logits."""
    from whisper_tflite.graphs.decoder import DecoderStep
    from whisper_tflite.graphs.encoder import Encoder

    jfk = clip_named("en_jfk_openai-whisper.flac")
    features = tiny_en_features(jfk)
    cross = {k: v for k, v in Encoder.from_checkpoint(tiny_en)(log_mel=features).items() if k.startswith("cross")}
    tokens = tiny_en_greedy(jfk)[:4]
    whole = DecoderStep.from_checkpoint(tiny_en, n_tokens=len(tokens))
    single = DecoderStep.from_checkpoint(tiny_en)
    empty = {f"self_{kv}_{i}": np.zeros(whole.cache_shape, np.float32) for i in range(whole.layers) for kv in "kv"}
    at_once = whole(tokens=[tokens], offset=[0], **empty, **cross)
    caches = dict(empty)
    for position, token in enumerate(tokens):
        out = single(tokens=[[token]], offset=[position], **caches, **cross)
        for name in empty:
            caches[name] = caches[name].copy()
            caches[name][:, position] = out[name.replace("self_", "new_")][:, 0]
            np.testing.assert_allclose(caches[name][:, position], at_once[name.replace("self_", "new_")][:, position],
                                       atol=1e-4)
        np.testing.assert_allclose(out["logits"][0, 0], at_once["logits"][0, position], atol=1e-3)
