"""int8 attention scores in an encoder file: each Q.K^T (a float32 BATCH_MATMUL of two activations, K transposed)
becomes QUANTIZE -> int8 BATCH_MATMUL -> DEQUANTIZE with per-tensor scales calibrated on speech.

XNNPACK takes such a product whole (LiteRT's `VisitBatchMatMulNode`: int8 operands, the right-hand one with
zero-point 0) and runs it with its qs8 GEMM kernels (VNNI and AMX variants on x86); any other zero-point on the
right falls to TFLite's reference kernel, an order of magnitude slower. So Q, K and the scores are quantized
symmetrically, K once a layer for all its query chunks. P.V stays float32: the softmax's weights span 1e-4 to 1,
and in 256 linear steps the many small ones round to 0 (tiny.en's hidden states then move by 39 % RMS).
"""

from __future__ import annotations

import warnings

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

_FLOAT32, _INT8 = 0, 9  # TensorType
_DEQUANTIZE, _QUANTIZE, _BATCH_MATMUL = 6, 114, 126  # BuiltinOperator
_VERSIONS = {_QUANTIZE: 2, _DEQUANTIZE: 2, _BATCH_MATMUL: 2}  # the op versions of int8 tensors


def _code(parsed, op) -> int:
    opcode = parsed.operatorCodes[op.opcodeIndex]
    return max(opcode.builtinCode, opcode.deprecatedBuiltinCode)


def _products(parsed) -> list[schema.OperatorT]:
    """The float32 Q.K^T products of the first subgraph (an encoder file has one): BATCH_MATMULs of two computed
    operands, the right one transposed."""
    graph = parsed.subgraphs[0]
    return [op for op in graph.operators if _code(parsed, op) == _BATCH_MATMUL and op.builtinOptions.adjY
            and all(graph.tensors[i].type == _FLOAT32 and not parsed.buffers[graph.tensors[i].buffer].data
                    for i in op.inputs)]


def calibrate(model: bytes, inputs: list[dict[str, np.ndarray]]) -> dict[int, tuple[float, float]]:
    """Tensor index -> (min, max) over `inputs` (each a signature input dict) of every Q.K^T's operands and result
    (the values equal those of TFLite's reference kernels, checked on tiny.en)."""
    from ai_edge_litert.interpreter import Interpreter

    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    wanted = sorted({i for op in _products(parsed) for i in (*op.inputs, *op.outputs)})
    with warnings.catch_warnings():  # "for debugging purposes only": it keeps every tensor, which is the point
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=model, num_threads=2, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner()
    ranges: dict[int, tuple[float, float]] = {}
    for feed in inputs:
        runner(**feed)
        for index in wanted:
            value = interpreter.get_tensor(index)
            low, high = ranges.get(index, (0.0, 0.0))
            ranges[index] = (min(low, float(value.min())), max(high, float(value.max())))
    return ranges


def quantize_scores(parsed, ranges: dict[int, tuple[float, float]]) -> None:
    """Turns the Q.K^T products of a parsed model (flatbuffer_utils' object tree) to int8, scaled by `calibrate`'s
    ranges. The products that share a K (a layer's query chunks) share its one QUANTIZE, and one scale for their
    queries and one for their scores."""
    graph = parsed.subgraphs[0]
    products = _products(parsed)
    groups: dict[int, list] = {}
    for op in products:
        groups.setdefault(op.inputs[1], []).append(op)

    def joint(indices) -> tuple[float, float]:
        return min(ranges[i][0] for i in indices), max(ranges[i][1] for i in indices)

    def int8_tensor(source: int, low: float, high: float) -> int:
        tensor = schema.TensorT()
        original = graph.tensors[source]
        tensor.name, tensor.shape, tensor.type, tensor.buffer = original.name + b"/int8", original.shape, _INT8, 0
        tensor.quantization = schema.QuantizationParametersT()  # zero-point 0: [-128 s, 127 s] holds +-max|x|
        tensor.quantization.scale, tensor.quantization.zeroPoint = [max(-low, high, 1e-6) / 127], [0]
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    opcodes = {code: _opcode(parsed, code) for code in _VERSIONS}
    before: dict[int, list] = {}  # id of a product -> the ops to insert before it
    after: dict[int, list] = {}
    quantized: dict[int, int] = {}  # float tensor -> its int8 copy
    for right, ops in groups.items():
        left_range, out_range = joint([op.inputs[0] for op in ops]), joint([op.outputs[0] for op in ops])
        for op in ops:
            inserted = []
            for source, span in ((op.inputs[0], left_range), (right, ranges[right])):
                if source not in quantized:
                    quantized[source] = int8_tensor(source, *span)
                    inserted.append(_operator(opcodes[_QUANTIZE], source, quantized[source]))
            result = op.outputs[0]
            op.inputs = [quantized[op.inputs[0]], quantized[right]]
            op.outputs = [int8_tensor(result, *out_range)]
            before[id(op)], after[id(op)] = inserted, [_operator(opcodes[_DEQUANTIZE], op.outputs[0], result)]
    operators = []
    for op in graph.operators:
        operators += [*before.get(id(op), []), op, *after.get(id(op), [])]
    graph.operators = operators


def _operator(opcode: int, source: int, result: int) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, [source], [result]
    return op


def _opcode(parsed, code: int) -> int:
    """The index of builtin `code`'s operator code, at least the version int8 tensors need."""
    for index, opcode in enumerate(parsed.operatorCodes):
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == code:
            opcode.version = max(opcode.version, _VERSIONS[code])
            return index
    opcode = schema.OperatorCodeT()
    opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), _VERSIONS[code]
    parsed.operatorCodes.append(opcode)
    return len(parsed.operatorCodes) - 1
