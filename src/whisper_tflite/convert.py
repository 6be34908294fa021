"""TF modules -> checked TFLite files -> a bundle folder. The conversion side: needs TensorFlow."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from .errors import ConversionError

QUANTIZATIONS = ("none", "fp16", "dynamic-int8")


def to_tflite(module, quantize: str = "none") -> bytes:
    """Converts a `GraphModule` with builtin ops only, then refuses the result if it breaks a runtime rule."""
    if quantize not in QUANTIZATIONS:
        raise ConversionError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serving_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        model = converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError, ... with MLIR dumps
        raise ConversionError(f"TFLite conversion of {module.role} failed: {str(e).strip().splitlines()[0]}") from e
    check_model(model, module.role)
    return model


def check_model(model: bytes, role: str) -> None:
    """Builtin operators only, fully static input/output shapes, and no inf/NaN in any constant."""
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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_CUSTOM = 32  # BuiltinOperator.CUSTOM: Flex and custom operators
# TFLite schema TensorType codes of floating-point tensors.
_FLOAT_TYPES = {0: np.float32, 1: np.float16, 10: np.float64}
