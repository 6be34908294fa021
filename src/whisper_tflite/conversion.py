"""TF modules -> checked TFLite files -> a bundle folder. The conversion side: needs TensorFlow."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, TextIO
from pathlib import Path

import flatbuffers
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from .audio import CHUNK_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE
from .bundle import BATCH_MODELS, INT8_SCORES, SINGLE_SIGNATURE, TEXT_DECODER_FILE, TEXT_DECODER_ROLES
from .conversion_plan import DEFAULT_POLICY, INT4_POLICY, quantization_plan  # noqa: F401 (public here too)
from .conversion_plan import QUANTIZATIONS, plan_conversion, version_tuple
from .errors import ConversionError, UsageError
from .gpu_readiness import gpu_entries, gpu_verdicts

if TYPE_CHECKING:
    from .graphs.base import GraphModule
    from .sources import WhisperCheckpoint

FLOAT_LIMIT = 1e30  # masks use -1e9; anything near float32's 3.4e38 is an -inf that the converter clamped
_CUSTOM = 32  # BuiltinOperator.CUSTOM: Flex and custom operators
_FLOAT_TYPES = {0: np.float32, 1: np.float16, 10: np.float64}  # TFLite TensorType codes of float tensors


def to_tflite(models: GraphModule | dict[str, GraphModule], quantize: str = "none", per_channel: bool = True,
              calibration: list[dict[str, np.ndarray]] | None = None) -> bytes:
    """Converts a `GraphModule`, or several as the named signatures of one file (they then share the weights they
    read: each is stored once), with builtin ops only; then refuses the result if it breaks a runtime rule.

    `per_channel=False` quantizes each dense layer's int8 weights with one scale instead of one per output
    channel: FULLY_CONNECTED version 9, which TFLite 2.3 runs, instead of version 12, which needs 2.17.
    `calibration`: with `INT8_SCORES`, inputs (a dict a call) that set the scales of the int8 attention scores."""
    if quantize == INT8_SCORES:
        from .int8_attention import calibrate, quantize_scores

        if not calibration:
            raise UsageError(f"{INT8_SCORES} needs calibration audio (convert --calibration-audio FILE...)")
        model = to_tflite(models, "dynamic-int8", per_channel)
        parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
        quantize_scores(parsed, calibrate(model, calibration))
        model = serialize(parsed)
        check_model(model, " + ".join(m.role for m in (models.values() if isinstance(models, dict) else [models])))
        return model
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if quantize == "int4":  # the float32 file, its dense weights then quantized by ai-edge-quantizer
        _quantizer()  # before converting: its absence is one line
        return quantize_int4(to_tflite(models, "none"), name=" + ".join(m.role for m in (
            models.values() if isinstance(models, dict) else [models])))
    signatures = models if isinstance(models, dict) else {SINGLE_SIGNATURE: models}
    name = " + ".join(module.role for module in signatures.values())
    functions = {key: module.serving_function() for key, module in signatures.items()}
    # Converted from a SavedModel written here, not from the functions: the converter would write the same
    # SavedModel, then keep a Python copy of it loaded (every weight again) while its C++ part runs. Only the
    # variables the traced graphs read are saved (an encoder leaves the decoder's token table behind).
    used = tf.Module()
    used.variables_read = list({id(v): v for f in functions.values() for v in f.variables}.values())
    with tempfile.TemporaryDirectory(prefix="whisper-tflite-") as saved:
        try:
            tf.saved_model.save(used, saved, signatures=functions)
        except (OSError, tf.errors.OpError) as e:  # a full disk: OSError from Python's writes, OpError from TF's
            cause = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
            raise ConversionError(f"TFLite conversion of {name} could not write its temporary SavedModel in "
                                  f"{tempfile.gettempdir()}: {cause.strip().splitlines()[0]}") from e
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(functions))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        # TensorFlow's conversion metadata (its version, a model hash) is read by nothing that runs a bundle, and
        # writing it parses and rewrites the whole file in Python (6 s of tiny.en's 2-minute conversion)
        converter.exclude_conversion_metadata = True
        if quantize == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic-int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
        try:
            model = converter.convert()
        except Exception as e:  # the converter raises ConverterError, ValueError, ... with MLIR dumps
            raise ConversionError(f"TFLite conversion of {name} failed: {str(e).strip().splitlines()[0]}") from e
    if quantize == "dynamic-int8":  # files of int8 weights: far from flatbuffers' 2 GB, which this rewrite keeps to
        parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
        share_token_table(parsed)
        store_tables_as_int8(parsed)
        model = serialize(parsed)
    check_model(model, name)
    return model


_FLOAT32, _INT32, _INT8, _INT4 = 0, 2, 9, 17  # TFLite TensorType codes
_DEQUANTIZE, _EMBEDDING_LOOKUP, _FULLY_CONNECTED, _MUL, _GATHER = 6, 7, 9, 18, 36  # BuiltinOperator codes
# The oldest runtime int4 files record, instead of the 2.9 the converter gives their float ops: blockwise int4
# weights are newer and checked on ai-edge-litert 2.3.0 only; 2.21, the TensorFlow release the conversion stack
# pins, is a bound that --min-runtime can check (the oldest release that runs them is not established).
INT4_MIN_RUNTIME = "2.21.0"


def quantize_int4(model: bytes, name: str = "model") -> bytes:
    """A float32 file with int4 weights, as ai-edge-quantizer writes them: the MLPs' FULLY_CONNECTED weights in
    blocks of 32 along the input with a float16 scale a block (ai-edge-quantizer's finest blocks: one scale per
    output channel loses far more); the attention's square [d, d] ones int8 with a scale per output channel; the
    token table, its columns equalized first (`equalize_token_table`), in blocks of 128. Each CONV_2D's weights
    int8 with a scale per output channel. Activations stay float32 and are quantized on the fly (XNNPACK's qd8 x
    qb4w and qc8w kernels). Then the token embedding is stored once (`share_int4_token_table`), float tables of
    64 KB or more as int8, every constant byte string and quantization parameters once.

    Why that mix (docs/quantization.md, tiny.en): int4 everywhere, blocks of 32, doubles the default bundle's
    beam 5 WER; int8 attention costs the 0.9 MB that blocks of 128 save on the equalized table, where they lose
    little, and brings the WER back within 1 point of the default bundle's, the bundle within 30 MB."""
    quantizer, recipe_manager, QuantGranularity, TFLOperationName = _quantizer()
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import get_op_scope

    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    tables = equalize_token_table(parsed)
    if tables:
        model = serialize(parsed)
    recipe = recipe_manager.RecipeManager()
    recipe.add_dynamic_config(regex=".*", operation_name=TFLOperationName.FULLY_CONNECTED, num_bits=4,
                              granularity=QuantGranularity.BLOCKWISE_32)
    recipe.add_dynamic_config(regex=".*", operation_name=TFLOperationName.CONV_2D, num_bits=8,
                              granularity=QuantGranularity.CHANNELWISE)
    for subgraph in parsed.subgraphs:  # the quantizer tells operators apart by their output tensors' names
        for op in subgraph.operators:
            weights = subgraph.tensors[op.inputs[1]] if _code(parsed, op) == _FULLY_CONNECTED else None
            if weights is None or not _is_constant(parsed, weights):
                continue
            scope = f"^{re.escape(get_op_scope(op, subgraph.tensors))}$"
            if weights.buffer in tables:
                recipe.add_dynamic_config(regex=scope, operation_name=TFLOperationName.FULLY_CONNECTED, num_bits=4,
                                          granularity=QuantGranularity.BLOCKWISE_128)
            elif weights.shape[0] == weights.shape[1]:
                recipe.add_dynamic_config(regex=scope, operation_name=TFLOperationName.FULLY_CONNECTED, num_bits=8,
                                          granularity=QuantGranularity.CHANNELWISE)
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            quantized = quantizer.Quantizer(model, recipe.get_quantization_recipe()).quantize().quantized_model
    except Exception as e:  # the quantizer raises ValueError, RuntimeError, ... on a graph it cannot handle
        raise ConversionError(f"int4 quantization of {name} failed: {str(e).strip().splitlines()[0]}") from e
    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(quantized))
    _share_equal_buffers(parsed)  # the quantizer writes a weight read by several signatures once a signature
    share_int4_token_table(parsed)
    store_tables_as_int8(parsed)
    _set_min_runtime(parsed, INT4_MIN_RUNTIME)
    model = serialize(parsed)
    check_model(model, name)
    return model


def _is_constant(parsed, tensor) -> bool:
    return bool(tensor.buffer) and parsed.buffers[tensor.buffer].data is not None \
        and len(parsed.buffers[tensor.buffer].data) > 0


def _quantizer():
    """ai-edge-quantizer's modules that `quantize_int4` uses, imported here: only int4 needs the package."""
    try:
        from ai_edge_quantizer import quantizer, recipe_manager
        from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName
    except ImportError:
        raise UsageError("--quantize int4 needs ai-edge-quantizer: pip install 'whisper-tflite[convert]'") from None
    return quantizer, recipe_manager, QuantGranularity, TFLOperationName


def _share_equal_buffers(parsed) -> None:
    """Points every tensor at the first buffer with its bytes, and drops the copies."""
    first: dict[bytes, int] = {}
    remap: dict[int, int] = {}
    metadata = {entry.buffer for entry in parsed.metadata or []}
    for index, buffer in enumerate(parsed.buffers):
        if index and index not in metadata and buffer.data is not None and len(buffer.data):
            remap[index] = first.setdefault(hashlib.sha256(np.asarray(buffer.data).tobytes()).digest(), index)
    for subgraph in parsed.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = remap.get(tensor.buffer, tensor.buffer)
    _drop_unused_buffers(parsed)


def equalize_token_table(parsed) -> set[int]:
    """Scales each column j of the float token table [vocab, d] by c_j, so that every column's largest magnitude
    is the same, and divides the scales out where the table is read: a MUL by 1/c of the logits'
    FULLY_CONNECTED input, and of each GATHER's looked-up rows. The float results stay the same.

    Why: an int4 block along a row shares one scale, set by its largest value. tiny.en's column 192 (where the
    final layer norm puts a constant -11: a token prior) is 9x the median column's size, so it coarsens the
    columns beside it in every row. Equalized, the rounding error the table adds to the logits (rms, for unit
    layer norm outputs) is 0.34 instead of 0.79 in blocks of 32, and 0.41 instead of 1.40 in blocks of 128; the
    looked-up rows' falls alike. Returns the tables' buffers: none, and nothing changed, if no float table is
    read by those two operators alone."""
    tables: dict[int, tuple[int, ...]] = {}  # buffer -> shape of FULLY_CONNECTED weights a GATHER also reads
    readers = []
    for subgraph in parsed.subgraphs:
        for op in subgraph.operators:
            code = _code(parsed, op)
            if code == _GATHER and op.builtinOptions.axis == 0 and op.builtinOptions.batchDims == 0:
                readers.append((subgraph, op, 0))
            elif code == _FULLY_CONNECTED:
                readers.append((subgraph, op, 1))
    gathered = {subgraph.tensors[op.inputs[0]].buffer for subgraph, op, slot in readers if slot == 0}
    for subgraph, op, slot in readers:
        tensor = subgraph.tensors[op.inputs[1]]
        if slot == 1 and tensor.buffer in gathered and tensor.type == _FLOAT32 and len(tensor.shape) == 2:
            tables[tensor.buffer] = tuple(tensor.shape)
    expected = {(id(subgraph), id(op)) for subgraph, op, slot in readers
                if subgraph.tensors[op.inputs[slot]].buffer in tables}
    for subgraph in parsed.subgraphs:  # every other reader would see the scaled table
        for op in subgraph.operators:
            if any(subgraph.tensors[i].buffer in tables for i in op.inputs if i >= 0) and \
                    (id(subgraph), id(op)) not in expected:
                return set()
    if not tables:
        return set()
    scales = None
    for buffer, shape in tables.items():
        table = np.frombuffer(bytes(parsed.buffers[buffer].data), np.float32).reshape(shape)
        if scales is None:  # the one embedding: every table of that shape holds it
            peaks = np.abs(table).max(axis=0)
            scales = (np.median(peaks) / np.maximum(peaks, np.finfo(np.float32).tiny)).astype(np.float32)
        parsed.buffers[buffer].data = (table * scales).view(np.uint8).ravel()
    inverse = schema.BufferT()
    inverse.data = (1 / scales).astype(np.float32).view(np.uint8)
    parsed.buffers.append(inverse)
    mul = _opcode(parsed, _MUL)
    for index, subgraph in enumerate(parsed.subgraphs):
        operators, divisor = [], None
        for op in subgraph.operators:
            if (id(subgraph), id(op)) not in expected:
                operators.append(op)
                continue
            if divisor is None:  # tensor names are unique in the file: the quantizer looks tensors up by name
                divisor = _new_tensor(subgraph, f"token_table_column_scales_{index}".encode(), [len(scales)],
                                      len(parsed.buffers) - 1)
            scale = schema.OperatorT()
            scale.opcodeIndex, scale.builtinOptionsType = mul, schema.BuiltinOptions.MulOptions
            scale.builtinOptions = schema.MulOptionsT()
            if _code(parsed, op) == _FULLY_CONNECTED:  # x / c, then the scaled weights
                source = subgraph.tensors[op.inputs[0]]
                divided = _new_tensor(subgraph, source.name + b"/column_scaled", source.shape)
                scale.inputs, scale.outputs = np.array([op.inputs[0], divisor], np.int32), np.array([divided], np.int32)
                op.inputs[0] = divided
                operators += [scale, op]
            else:  # the scaled rows, then / c
                result = subgraph.tensors[op.outputs[0]]
                rows = _new_tensor(subgraph, result.name + b"/column_scaled", result.shape)
                scale.inputs, scale.outputs = np.array([rows, divisor], np.int32), np.array([op.outputs[0]], np.int32)
                op.outputs[0] = rows
                operators += [op, scale]
        subgraph.operators = operators
    return set(tables)


def _new_tensor(subgraph, name: bytes, shape, buffer: int = 0) -> int:
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer, tensor.shape = name, _FLOAT32, buffer, np.array(shape, np.int32)
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def share_int4_token_table(parsed) -> None:
    """Stores the token embedding once in an int4 text decoder file: every signature's look-up of the input tokens
    (a GATHER of the float table) becomes an EMBEDDING_LOOKUP of the logits' int4 weights, which have the
    table's shape, and LiteRT's kernel dequantizes the looked-up rows with their block scales. A signature without
    logits reads the weights through its own tensor of the same buffer and scales."""
    weights: dict[tuple, tuple] = {}  # shape: (tensor, its scales tensor) of blockwise int4 FULLY_CONNECTED weights
    for subgraph in parsed.subgraphs:
        for op in subgraph.operators:
            if _code(parsed, op) == _FULLY_CONNECTED:
                tensor = subgraph.tensors[op.inputs[1]]
                details = tensor.quantization.details if tensor.quantization is not None else None
                if tensor.type == _INT4 and details is not None and hasattr(details, "blockSize"):
                    weights.setdefault(tuple(tensor.shape), (tensor, subgraph.tensors[details.scales]))
    lookup = None
    for subgraph in parsed.subgraphs:
        for op in subgraph.operators:
            if _code(parsed, op) != _GATHER:
                continue
            table, ids = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.inputs[1]]
            data = parsed.buffers[table.buffer].data if table.buffer else None
            if (table.type != _FLOAT32 or data is None or tuple(table.shape) not in weights or ids.type != _INT32
                    or len(ids.shape) != 1 or op.builtinOptions.axis != 0 or op.builtinOptions.batchDims != 0):
                continue
            source, source_scales = weights[tuple(table.shape)]
            weight = _tensor_of(subgraph, source)
            if weight is None:  # a signature without logits: its own tensor of the weights and of their scales
                scales = _tensor_of(subgraph, source_scales)
                if scales is None:
                    scales = _copy_tensor(subgraph, source_scales, source_scales.quantization)
                quantization = copy.deepcopy(source.quantization)
                quantization.details.scales = scales
                weight = _copy_tensor(subgraph, source, quantization)
            if lookup is None:
                lookup = _opcode(parsed, _EMBEDDING_LOOKUP)
                parsed.operatorCodes[lookup].version = 4  # int4 and blockwise tables
            gathered = op.inputs[0]
            op.opcodeIndex, op.inputs = lookup, np.array([op.inputs[1], weight], np.int32)
            op.builtinOptionsType, op.builtinOptions = 0, None
            if not any(index == gathered for other in subgraph.operators for index in other.inputs):
                table.buffer = 0  # read by no operator now: its float bytes go
    _drop_unused_buffers(parsed)


def _tensor_of(subgraph, source) -> int | None:
    """The index of a tensor of `subgraph` reading `source`'s buffer as `source` does, or None."""
    for index, tensor in enumerate(subgraph.tensors):
        if (tensor.buffer == source.buffer and tensor.type == source.type and list(tensor.shape) == list(source.shape)
                and (tensor.quantization is None) == (source.quantization is None)):
            return index
    return None


def _copy_tensor(subgraph, source, quantization) -> int:
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = source.name + b"/shared", source.type, source.buffer
    tensor.shape, tensor.quantization = np.array(source.shape, np.int32), quantization
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _code(parsed, op) -> int:
    opcode = parsed.operatorCodes[op.opcodeIndex]
    return max(opcode.builtinCode, opcode.deprecatedBuiltinCode)


def _set_min_runtime(parsed, version: str) -> None:
    for entry in parsed.metadata or []:
        if entry.name == b"min_runtime_version":
            parsed.buffers[entry.buffer].data = np.frombuffer(version.encode().ljust(16, b"\0"), np.uint8)


def share_token_table(parsed) -> None:
    """Stores the token embedding once in a dynamic-range int8 decoder file.

    The logits' FULLY_CONNECTED holds the embedding as int8 weights with a scale per row; the look-up of the
    input tokens gathers rows of an int8 table of the same shape and multiplies them by gathered scales
    (`graphs.decoder.Int8TokenRows`, which rounds as the converter does). Here every such table is pointed at
    the weights' bytes, and the scales (stored as int32 bits) are the weights' own, so both read one copy,
    exactly. A file without logits keeps its table."""
    weights: dict[tuple, tuple[int, np.ndarray]] = {}  # shape: (buffer, scales) of int8 FULLY_CONNECTED weights
    tables, scale_buffers = [], set()
    for subgraph in parsed.subgraphs:
        for op in subgraph.operators:
            code = _code(parsed, op)
            if code == _FULLY_CONNECTED:
                source = subgraph.tensors[op.inputs[1]]
                if source.type == _INT8 and source.quantization is not None:
                    weights[tuple(source.shape)] = (source.buffer, np.asarray(source.quantization.scale, np.float32))
            elif code == _GATHER:
                source = subgraph.tensors[op.inputs[0]]
                if source.type == _INT8 and (source.quantization is None or source.quantization.scale is None):
                    tables.append(source)
                elif source.type == _INT32 and len(source.shape) == 1:
                    scale_buffers.add(source.buffer)
    shared = [table for table in tables if tuple(table.shape) in weights]
    if not shared:
        return
    for table in shared:
        table.buffer = weights[tuple(table.shape)][0]
    rows = shared[0].shape[0]  # every signature's table is the one embedding
    scales = np.broadcast_to(weights[tuple(shared[0].shape)][1], [rows]).astype(np.float32)
    for index in scale_buffers:  # the look-up's scales: one per row
        if len(parsed.buffers[index].data) == 4 * rows:
            parsed.buffers[index].data = scales.view(np.uint8)
    _drop_unused_buffers(parsed)


TABLE_BYTES = 1 << 16


def store_tables_as_int8(parsed) -> None:
    """Stores the float32 tables of 64 KB or more that an int8 file still holds as int8 with a scale per column,
    each read through a DEQUANTIZE that LiteRT runs once, when the model is prepared. These are the position
    embeddings (the encoder's [1500, d], 2.3 MB on tiny.en, sinusoids in [-1, 1]; the text decoder's [448, d],
    learned, whose columns differ in range 30-fold): rounded to 1/254 of a column's largest value, as the weights
    beside them are."""
    tables: dict[int, tuple[int, np.ndarray]] = {}  # float32 buffer -> its int8 copy and its column scales
    for subgraph in parsed.subgraphs:
        for index, tensor in enumerate(list(subgraph.tensors)):
            data = parsed.buffers[tensor.buffer].data if tensor.buffer else None
            if tensor.type != _FLOAT32 or data is None or len(data) < TABLE_BYTES or len(tensor.shape) < 2:
                continue
            if tensor.buffer not in tables:  # every signature's tensor of a shared table reads one int8 copy
                values = np.frombuffer(bytes(data), np.float32).reshape(tensor.shape)
                scales = np.abs(values.reshape(-1, values.shape[-1])).max(axis=0) / 127  # float32
                scales[scales == 0] = 1.0
                table = schema.BufferT()
                table.data = np.round(values / scales).astype(np.int8).view(np.uint8).reshape(-1)
                parsed.buffers.append(table)
                tables[tensor.buffer] = (len(parsed.buffers) - 1, scales)
            buffer, scales = tables[tensor.buffer]
            source = schema.TensorT()
            source.name, source.type, source.buffer, source.shape = tensor.name + b"/int8", _INT8, buffer, tensor.shape
            source.quantization = schema.QuantizationParametersT()
            source.quantization.scale = scales
            source.quantization.zeroPoint = np.zeros(len(scales), np.int64)
            source.quantization.quantizedDimension = len(tensor.shape) - 1
            subgraph.tensors.append(source)
            tensor.buffer = 0  # now the DEQUANTIZE's output
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = _opcode(parsed, _DEQUANTIZE), [len(subgraph.tensors) - 1], [index]
            subgraph.operators.insert(0, op)
    if tables:
        dequantize = parsed.operatorCodes[_opcode(parsed, _DEQUANTIZE)]
        dequantize.version = max(dequantize.version, 5)  # DEQUANTIZE of per-channel int8: TFLite 2.7
    _drop_unused_buffers(parsed)


def _opcode(parsed, code: int) -> int:
    """The index of the model's operator code for builtin `code`, added if the model has none."""
    for index, opcode in enumerate(parsed.operatorCodes):
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == code:
            return index
    opcode = schema.OperatorCodeT()
    opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), 3
    parsed.operatorCodes.append(opcode)
    return len(parsed.operatorCodes) - 1


def _drop_unused_buffers(parsed) -> None:
    referenced = {t.buffer for g in parsed.subgraphs for t in g.tensors} | {m.buffer for m in parsed.metadata or []}
    for index, buffer in enumerate(parsed.buffers):
        if index not in referenced:
            buffer.data = None


def serialize(parsed) -> bytes:
    """The model's bytes, with each constant tensor's quantization parameters written once. Every signature's
    subgraph has its own tensor for a shared weight, each with the same scales and zero points (12 bytes a
    channel): the token embedding's, 0.6 MB on tiny.en, would otherwise be written once a signature."""
    packed: dict[int, int] = {}
    shared: dict[tuple, _QuantizationOnce] = {}
    for subgraph in parsed.subgraphs:
        for tensor in subgraph.tensors:
            quantization = tensor.quantization
            if tensor.buffer and quantization is not None and quantization.scale is not None:
                key = (tensor.buffer, np.asarray(quantization.scale).tobytes(),
                       np.asarray(quantization.zeroPoint).tobytes(), quantization.quantizedDimension)
                tensor.quantization = shared.setdefault(key, _QuantizationOnce(quantization, packed))
    builder = flatbuffers.Builder(1024)
    builder.Finish(parsed.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _QuantizationOnce(schema.QuantizationParametersT):
    """Quantization parameters that several tensors share: packed at the first, referenced by the others."""

    def __init__(self, params, packed: dict[int, int]):
        super().__init__()
        self.__dict__.update(vars(params))
        self._packed = packed

    def Pack(self, builder):  # noqa: N802 (flatbuffers' name)
        if id(self) not in self._packed:
            self._packed[id(self)] = super().Pack(builder)
        return self._packed[id(self)]


def check_model(model: bytes, role: str) -> None:
    """Builtin operators only, fully static input/output shapes, and no inf/NaN (or clamped -inf) constant."""
    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    for opcode in parsed.operatorCodes:
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == _CUSTOM:
            raise ConversionError(
                f"{role}: needs the non-builtin operator {_text(opcode.customCode)} (Flex/custom ops cannot run)"
            )
    for subgraph in parsed.subgraphs:
        for index in list(subgraph.inputs) + list(subgraph.outputs):
            tensor = subgraph.tensors[index]
            signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
            if signature is not None and any(int(d) < 0 for d in signature):
                raise ConversionError(f"{role}: tensor {_text(tensor.name)} has a dynamic shape {list(signature)}")
        for tensor in subgraph.tensors:
            data = parsed.buffers[tensor.buffer].data if tensor.buffer < len(parsed.buffers) else None
            if data is None or tensor.type not in _FLOAT_TYPES:
                continue
            values = np.asarray(data, dtype=np.uint8).view(_FLOAT_TYPES[tensor.type])
            if not np.isfinite(values).all():
                raise ConversionError(f"{role}: constant {_text(tensor.name)} holds inf or NaN")
            if values.dtype == np.float32 and values.size and np.abs(values).max() > FLOAT_LIMIT:
                raise ConversionError(f"{role}: constant {_text(tensor.name)} holds a value near the float32 "
                                      "limit, which becomes inf at the first addition (a -inf mask?)")


def min_runtime_version(model: bytes) -> str:
    """The oldest TFLite/LiteRT runtime that runs the model's op versions, as the converter records it in the
    file's `min_runtime_version` metadata."""
    parsed = schema.Model.GetRootAsModel(model, 0)  # read in place: `check_model` already unpacked the whole model
    for i in range(parsed.MetadataLength()):
        if parsed.Metadata(i).Name() == b"min_runtime_version":
            return parsed.Buffers(parsed.Metadata(i).Buffer()).DataAsNumpy().tobytes().rstrip(b"\0").decode()
    raise ConversionError("the converter recorded no min_runtime_version")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def build_modules(roles: list[str], checkpoint, quantize: str) -> dict[str, GraphModule]:
    """The TF modules of `roles`, which go into one file. Text decoder roles quantized to int8 share one int8 look-up
    table of the token embedding (`graphs.decoder.Int8TokenRows`)."""
    from .graphs.combined import Decoder, EncoderDecoder, Generator, PcmEncoder, Whisper
    from .graphs.decoder import (DecoderAlignment, DecoderBatchShort, DecoderBatchStep, DecoderChunks, DecoderPrefill,
                                 DecoderStep, Int8TokenRows)
    from .graphs.encoder import Encoder
    from .graphs.features import FeatureExtractor
    from .graphs.vad import SileroVad

    builders = {"features": FeatureExtractor, "encoder": Encoder, "decoder_step": DecoderStep,
                "prefill": DecoderPrefill, "decoder_batch": DecoderBatchStep,
                "decoder_batch_short": DecoderBatchShort, "decoder_chunks": DecoderChunks,
                "alignment": DecoderAlignment, "decoder": Decoder,
                "pcm_encoder": PcmEncoder, "encoder_decoder": EncoderDecoder, "whisper": Whisper,
                "generator": Generator, "vad": SileroVad}
    if not set(roles) <= set(TEXT_DECODER_ROLES):
        return {role: builders[role].from_checkpoint(checkpoint) for role in roles}
    token_rows = Int8TokenRows.from_checkpoint(checkpoint) if quantize == "dynamic-int8" else None
    return {role: builders[role].from_checkpoint(checkpoint, token_rows=token_rows) for role in roles}


def model_files(roles: tuple[str, ...], plan: dict[str, str]) -> dict[str, list[str]]:
    """File name -> the roles it holds: the text decoder roles of one quantization share a file, every other role
    has its own."""
    decoder_policies = sorted({plan[role] for role in roles if role in TEXT_DECODER_ROLES})
    files: dict[str, list[str]] = {}
    for role in roles:
        if role not in TEXT_DECODER_ROLES:
            files[f"{role}.tflite"] = [role]
        elif len(decoder_policies) == 1:
            files.setdefault(TEXT_DECODER_FILE, []).append(role)
        else:
            files.setdefault(TEXT_DECODER_FILE.replace(".tflite", f"-{plan[role]}.tflite"), []).append(role)
    return files


def io_specs(model: bytes, signatures: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Input and output names, shapes and dtypes of each signature, read back from the file (loaded once)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)

    def describe(details: dict) -> list[dict]:
        return [{"name": name, "shape": [int(d) for d in d_["shape"]], "dtype": np.dtype(d_["dtype"]).name}
                for name, d_ in sorted(details.items())]

    runners = {key: interpreter.get_signature_runner(key) for key in signatures}
    return {key: {"inputs": describe(runner.get_input_details()), "outputs": describe(runner.get_output_details())}
            for key, runner in runners.items()}


def convert(
    source: str | WhisperCheckpoint = "tiny.en",
    out_dir: str | Path | None = None,
    quantize: str | dict[str, str] | None = None,
    models: tuple[str, ...] | None = None,
    force: bool = False,
    progress: bool | TextIO = True,
    min_runtime: str | None = None,
    layout: str = "bundle",
    language: str | None = None,
    gpu_analyzer: str | None = None,
    calibration_audio: list[str | Path] | None = None,
) -> Path:
    """Converts a Whisper checkpoint into a bundle folder (default `bundles/<name>`), atomically: a temporary
    folder renamed at the end.

    `source`: what `load_whisper` takes (a bundled name, a folder, a hub id), or a checkpoint it loaded.
    `models`: roles (default: `DEFAULT_MODELS`), or with `layout="s4y"` whisper-s4y file stems (default: all).
    `layout="s4y"`: whisper-s4y's files, names and semantics (graphs/s4y.py) for apps built on that project,
    transcribing `language` (fixed in the files; English for English-only models).

    `quantize`: None for the default per-component policy; "none", "fp16" or "dynamic-int8" for every model
    but the features graph; "int4" for int4 text decoder roles beside a dynamic-int8 encoder (`INT4_POLICY`);
    or a dict such as {"encoder": "fp16", "decoder_step": "dynamic-int8"}.
    `progress`: a bar on stderr, none (False), or a bar on the given text stream.
    `min_runtime`: the oldest TFLite/LiteRT version (e.g. "2.16") that must run every file; below 2.17, int8
    weights get one scale per layer (`to_tflite`'s per_channel). A model that would still need a newer runtime
    stops the conversion with one line.
    `gpu_analyzer`: a Python with TensorFlow 2.16.1 (gpu_readiness.py); its analyzer's GPU delegate verdict on
    each model goes into the manifest (`gpu`).
    `calibration_audio`: speech files whose first 30 s (with a window of noise) set the scales of an
    `INT8_SCORES` encoder.
    """
    from tqdm import tqdm

    from .bundle import FORMAT, FORMAT_VERSION, MANIFEST, PLAIN_TOKENIZER, S4Y_FORMAT, TOKENIZER, sha256_of
    from .graphs.s4y import build_s4y_module
    from .sources import WhisperCheckpoint, load_whisper

    loaded = source if isinstance(source, WhisperCheckpoint) else None
    source = loaded.source if loaded is not None else source
    out_dir, roles, plan, ceiling = plan_conversion(source, out_dir, quantize, models, force, min_runtime, layout,
                                                    language, calibration_audio, source_loaded=loaded is not None)
    s4y = layout == "s4y"
    if "int4" in plan.values():
        _quantizer()
    if gpu_analyzer is not None:
        gpu_verdicts(gpu_analyzer, [])  # refuses a Python without the analyzer's GPU rules before converting
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary folder
    try:
        with tqdm(total=len(roles) + 2, desc=f"converting {source}", unit="step", disable=not progress,
                  file=None if isinstance(progress, bool) else progress) as bar:
            bar.set_postfix_str("loading weights")
            checkpoint = loaded or load_whisper(source)
            if s4y:
                language, prompt = _s4y_prompt(checkpoint, language)
            bar.update()
            entries = {}
            files = {f"{role}.tflite": [role] for role in roles} if s4y else model_files(roles, plan)
            for file, group in files.items():
                quantization = plan[group[0]]
                bar.set_postfix_str(f"{' + '.join(group)} ({quantization})")
                built = {group[0]: build_s4y_module(group[0], checkpoint, prompt)} if s4y else \
                    build_modules(group, checkpoint, quantization)
                keys = {role: role if role in TEXT_DECODER_ROLES else SINGLE_SIGNATURE for role in group}
                model = to_tflite({keys[role]: module for role, module in built.items()}, quantization,
                                  per_channel=ceiling is None or ceiling >= (2, 17),
                                  calibration=_calibration_mels(checkpoint, calibration_audio)
                                  if quantization == INT8_SCORES else None)
                needs = min_runtime_version(model)
                if ceiling is not None and version_tuple(needs) > ceiling:
                    raise UsageError(f"{' + '.join(group)} ({quantization}) needs TFLite/LiteRT {needs}, newer "
                                     f"than --min-runtime {min_runtime}: leave {group[0]} out of --models or give "
                                     "a newer --min-runtime")
                (staging / file).write_bytes(model)
                digest = sha256_of(staging / file)
                specs = io_specs(model, sorted(set(keys.values())))
                for role in group:
                    entries[role] = {"file": file, **({} if s4y else {"signature": keys[role]}),
                                     "quantization": quantization, "min_runtime_version": needs, "sha256": digest,
                                     "bytes": len(model), **specs[keys[role]]}
                    if role in BATCH_MODELS:
                        entries[role]["batch"] = built[role].batch
                bar.update(len(group))
            if gpu_analyzer is not None:
                bar.set_postfix_str("GPU analyzer")
                for role, verdict in gpu_entries(gpu_analyzer, staging, entries).items():
                    entries[role]["gpu"] = verdict
            bar.set_postfix_str("manifest")
            tokenizer = PLAIN_TOKENIZER if s4y else TOKENIZER  # whisper-s4y apps read tokenizer.json
            text = compact_tokenizer_json(checkpoint.tokenizer.backend_tokenizer.to_str()).encode("utf-8")
            (staging / tokenizer).write_bytes(text if s4y else gzip.compress(text, compresslevel=9, mtime=0))
            manifest = {
                **({"format": S4Y_FORMAT, "format_version": 1, "source": source, "language": language,
                    "task": "transcribe", "prompt": prompt} if s4y else
                   {"format": FORMAT, "format_version": FORMAT_VERSION, "source": source}),
                "dims": _dims(checkpoint),
                "special_tokens": checkpoint.special_tokens.to_dict(),
                "languages": checkpoint.languages,
                "suppress_tokens": checkpoint.suppress_tokens,
                "begin_suppress_tokens": checkpoint.begin_suppress_tokens,
                "alignment_heads": checkpoint.alignment_heads,
                "audio": {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH,
                          "chunk_seconds": CHUNK_SECONDS},
                "models": entries,
                "tokenizer": {"file": tokenizer, "sha256": sha256_of(staging / tokenizer)},
                "tools": _tool_versions(),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            _replace_folder(staging, out_dir)
            bar.update()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _calibration_mels(checkpoint, paths) -> list[dict[str, np.ndarray]]:
    """The log-mel of each file's first 30 s, and of 30 s of white noise (-20 dBFS RMS, seeded): what sets the
    scales of the int8 scores, speech and what lies between it."""
    from .audio import load_audio
    from .reference import reference_features

    noise = np.random.default_rng(0).normal(0.0, 0.1, CHUNK_SECONDS * SAMPLE_RATE).astype(np.float32)
    return [{"log_mel": reference_features(checkpoint, audio)} for audio in [*(load_audio(p) for p in paths), noise]]


def compact_tokenizer_json(text: str) -> str:
    """The tokenizer's JSON without spaces, its BPE merges as "a b" strings (the form every tokenizers version
    reads) rather than ["a", "b"] pairs: 0.2 MB less for Whisper's 50,000 merges, the same tokenizer."""
    tokenizer = json.loads(text)
    merges = tokenizer.get("model", {}).get("merges")
    if merges and all(isinstance(m, list) and len(m) == 2 and " " not in m[0] + m[1] for m in merges):
        tokenizer["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    return json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":"))


def _s4y_prompt(checkpoint, language: str | None) -> tuple[str, list[int]]:
    """The code of `language` (a code or a name, as `transcribe --language` takes), refused in one line if the
    model does not know it, and what whisper-s4y forces: the runtime's prompt to transcribe it, no timestamps."""
    from .tokens import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_tokenizer(checkpoint.tokenizer.backend_tokenizer, checkpoint.multilingual)
    code = tokenizer.language_code(language) if language is not None else None
    if not tokenizer.multilingual:
        if code not in (None, "en"):
            raise UsageError(f"{checkpoint.source} is English-only: leave out --language or give en")
        code = "en"
    elif code is None:
        raise UsageError("--layout s4y fixes the language in the files: give --language (e.g. --language de)")
    elif code not in tokenizer.languages:
        raise UsageError(f"unknown language {language!r} for this model (known: {', '.join(tokenizer.languages)})")
    return code, tokenizer.prompt(code, "transcribe", timestamps=False)


def _dims(checkpoint) -> dict:
    config = checkpoint.config
    return {
        "n_mels": config.num_mel_bins,
        "n_vocab": config.vocab_size,
        "d_model": config.d_model,
        "n_audio_ctx": config.max_source_positions,
        "n_text_ctx": config.max_target_positions,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "decoder_heads": config.decoder_attention_heads,
        "multilingual": checkpoint.multilingual,
    }


def _tool_versions() -> dict:
    import ai_edge_litert
    import transformers

    from . import __version__

    return {"whisper_tflite": __version__, "tensorflow": tf.__version__, "transformers": transformers.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", _dist_version("ai-edge-litert"))}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _replace_folder(staging: Path, out_dir: Path) -> None:
    """Moves the finished bundle into place; an old bundle is swapped out first and removed only afterwards. Its
    files reach the disk first: a crash never leaves a bundle of empty files in place, and the runtime can drop
    their clean pages from the page cache once the models are prepared (runtime/pages.py `settle_file_pages`)."""
    for path in staging.iterdir():
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
