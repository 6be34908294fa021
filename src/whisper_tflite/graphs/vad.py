"""Silero VAD v6, the network faster-whisper 1.2.1 runs to find speech, as a graph of builtin TFLite ops.

The weights are read from faster-whisper's own `assets/silero_vad_v6.onnx`, so the graph computes what its
onnxruntime session computes: per 512-sample frame (32 ms at 16 kHz) with the previous frame's last 64 samples
in front, a 256-point STFT magnitude (a conv with a fixed basis, reflect-padded), four 1-D convs down to 128
channels, an LSTM cell whose state runs from frame to frame, and a sigmoid speech probability.

faster-whisper feeds every frame of a file to one ONNX LSTM call. Here one call takes `frames` frames as a run
of contiguous samples and steps the LSTM through them inside the graph (unrolled), so a 30 s window is four
calls; the state goes in and out, so a file of any length is a chain of calls.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import tensorflow as tf

from .base import GraphModule

SAMPLES = 512  # per frame
CONTEXT = 64  # samples of the previous frame in front of each frame
HIDDEN = 128  # LSTM units
FRAMES = 128  # per call: 4.1 s of audio


def faster_whisper_onnx() -> Path:
    """faster-whisper's silero_vad_v6.onnx, found without importing faster-whisper (and CTranslate2)."""
    spec = importlib.util.find_spec("faster_whisper")
    path = Path(spec.submodule_search_locations[0]) / "assets" / "silero_vad_v6.onnx" if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError("the VAD weights come from faster-whisper's assets/silero_vad_v6.onnx: "
                                "pip install 'faster-whisper>=1.2,<1.3'")
    return path


def read_onnx_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The network's weights by the names of the PyTorch module it was exported from; the LSTM's (whose ONNX
    names are generated) as lstm/W, lstm/R, lstm/B in ONNX's layout: gates i, o, f, c; B = W's bias, R's bias."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    lstm = next(node for node in graph.node if node.op_type == "LSTM")
    for name, source in zip(("W", "R", "B"), lstm.input[1:4]):
        weights[f"lstm/{name}"] = weights[source]
    return weights


def _conv(x: tf.Tensor, weight: np.ndarray, bias: np.ndarray, stride: int) -> tf.Tensor:
    """PyTorch's Conv1d (kernel 3, zero padding 1) on x [N, T, C_in] -> [N, T_out, C_out], as one matmul: the
    three taps of each output position side by side, times the kernel flattened to [C_out, 3 * C_in]."""
    frames, length, channels = x.shape
    out_channels, _, taps = weight.shape
    padded = tf.pad(x, [[0, 0], [1, 1], [0, 0]])
    out_length = (length + 2 - taps) // stride + 1
    windows = tf.concat([padded[:, k : k + stride * (out_length - 1) + 1 : stride] for k in range(taps)], axis=-1)
    kernel = weight.transpose(0, 2, 1).reshape(out_channels, taps * channels)
    y = tf.matmul(tf.reshape(windows, [frames * out_length, taps * channels]), kernel, transpose_b=True) + bias
    return tf.reshape(tf.nn.relu(y), [frames, out_length, out_channels])


class SileroVad(GraphModule):
    """pcm [64 + frames * 512] and state [2, 1, 128] (the LSTM's h and c) -> speech_probs [frames] and
    next_state [2, 1, 128]. Frame i is pcm[512 i + 64 : 512 i + 576], its context the 64 samples before it."""

    role = "vad"

    def __init__(self, weights: dict[str, np.ndarray], frames: int = FRAMES):
        super().__init__()
        self.w = weights
        self.frames = frames

    @classmethod
    def from_onnx(cls, path: str | Path, frames: int = FRAMES) -> "SileroVad":
        return cls(read_onnx_weights(path), frames)

    @classmethod
    def from_checkpoint(cls, checkpoint=None) -> "SileroVad":
        """The same network for every Whisper checkpoint: faster-whisper's."""
        return cls.from_onnx(faster_whisper_onnx())

    @property
    def input_signature(self):
        return [tf.TensorSpec([CONTEXT + self.frames * SAMPLES], tf.float32, name="pcm"),
                tf.TensorSpec([2, 1, HIDDEN], tf.float32, name="state")]

    def call(self, inputs):
        w, n = self.w, self.frames
        pcm = inputs["pcm"]
        context = tf.reshape(pcm[: n * SAMPLES], [n, SAMPLES])[:, :CONTEXT]
        samples = tf.reshape(pcm[CONTEXT:], [n, SAMPLES])
        # The STFT reflect-pads the 576 samples by 128 each side, then drops its first frame: the four frames it
        # keeps need only the first 64 samples of the right padding, which mirror samples 574 down to 511.
        mirrored = tf.reverse(samples[:, SAMPLES - CONTEXT - 1 : SAMPLES - 1], [1])
        rows = tf.reshape(tf.concat([context, samples, mirrored], 1), [n, 5, 128])
        windows = tf.reshape(tf.concat([rows[:, :4], rows[:, 1:]], -1), [n * 4, 256])
        basis = w["encoder.feature_extractor.forward_basis_buffer"][:, 0]  # [258, 256]: cos rows, then sin rows
        spectrum = tf.matmul(windows, basis, transpose_b=True)
        magnitude = tf.sqrt(tf.square(spectrum[:, :129]) + tf.square(spectrum[:, 129:]))
        x = tf.reshape(magnitude, [n, 4, 129])
        for layer, stride in enumerate((1, 2, 2, 1)):
            x = _conv(x, w[f"encoder.conv_layers.{layer}.weight"], w[f"encoder.conv_layers.{layer}.bias"], stride)
        # The LSTM: every frame's input projection in one matmul, then the recurrence one frame at a time.
        bias = w["lstm/B"][0].reshape(2, 4 * HIDDEN).sum(0)  # the input's and the recurrence's
        projected = tf.matmul(tf.reshape(x, [n, HIDDEN]), w["lstm/W"][0], transpose_b=True) + bias
        h, c = inputs["state"][0], inputs["state"][1]
        outputs = []
        for gates_in in tf.split(projected, n, axis=0):
            gates = gates_in + tf.matmul(h, w["lstm/R"][0], transpose_b=True)
            sigmoids = tf.sigmoid(gates[:, : 3 * HIDDEN])  # input, output, forget
            c = sigmoids[:, 2 * HIDDEN :] * c + sigmoids[:, :HIDDEN] * tf.tanh(gates[:, 3 * HIDDEN :])
            h = sigmoids[:, HIDDEN : 2 * HIDDEN] * tf.tanh(c)
            outputs.append(h)
        hidden = tf.nn.relu(tf.concat(outputs, 0))
        logits = tf.matmul(hidden, w["decoder.conv1d.weight"][:, :, 0], transpose_b=True) + w["decoder.conv1d.bias"]
        return {"speech_probs": tf.reshape(tf.sigmoid(logits), [n]), "next_state": tf.stack([h, c])}
