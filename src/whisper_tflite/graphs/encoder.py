"""The audio encoder: log-mel -> hidden states, plus every decoder layer's cross-attention keys and values.

Computing the cross K/V here, once per 30 s window, spares the decoder step from projecting 1500 frames
through 2 x n_layers matrices at every token.
"""

from __future__ import annotations

import tensorflow as tf

from .base import GraphModule, attend_in_chunks, dense, layer_norm, merge_heads, mlp, split_heads


QUERY_ROWS = 300  # of the self-attention's [heads, 1500, 1500] scores: 1/5 of them alive at a time


class Encoder(GraphModule):
    """log_mel [1, n_mels, 3000] -> hidden [1, 1500, d], and cross_k_{i}, cross_v_{i} [heads, 1500, hd] for each
    decoder layer i (one tensor per layer: slicing a stacked tensor costs the decoder a copy at every step)."""

    role = "encoder"

    def __init__(self, weights: dict, config):
        super().__init__()
        self.w = weights
        self.n_mels = config.num_mel_bins
        self.heads = config.encoder_attention_heads
        self.layers = config.encoder_layers
        self.decoder_layers = config.decoder_layers
        self.decoder_heads = config.decoder_attention_heads
        self.n_frames = 2 * config.max_source_positions

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "Encoder":
        return cls(checkpoint.variables, checkpoint.config)

    @property
    def input_signature(self):
        return [tf.TensorSpec([1, self.n_mels, self.n_frames], tf.float32, name="log_mel")]

    def call(self, inputs):
        w = self.w
        x = tf.transpose(tf.reshape(inputs["log_mel"], [self.n_mels, self.n_frames]))  # channels last for the convs
        x = _conv(x, w, "model/encoder/conv1", stride=1)
        x = _conv(x, w, "model/encoder/conv2", stride=2)
        x = x + w["model/encoder/embed_positions/weight"]
        for i in range(self.layers):
            p = f"model/encoder/layers.{i}"
            h = layer_norm(x, w, f"{p}/self_attn_layer_norm")
            q, k, v = (split_heads(dense(h, w, f"{p}/self_attn/{n}_proj"), self.heads) for n in "qkv")
            x = x + dense(merge_heads(attend_in_chunks(q, k, v, QUERY_ROWS)), w, f"{p}/self_attn/out_proj")
            x = mlp(x, w, p)
        hidden = layer_norm(x, w, "model/encoder/layer_norm")
        return {"hidden": tf.reshape(hidden, [1, *hidden.shape]), **self.cross(hidden)}

    def cross(self, hidden: tf.Tensor) -> dict[str, tf.Tensor]:
        """Hidden states [1500, d] -> every decoder layer's cross-attention keys and values."""
        outputs = {}
        for i in range(self.decoder_layers):
            p = f"model/decoder/layers.{i}/encoder_attn"
            outputs[f"cross_k_{i}"] = split_heads(dense(hidden, self.w, f"{p}/k_proj"), self.decoder_heads)
            outputs[f"cross_v_{i}"] = split_heads(dense(hidden, self.w, f"{p}/v_proj"), self.decoder_heads)
        return outputs


# Added or dropped unit axes are reshapes, never `[0]` / `[tf.newaxis]`: those convert to STRIDED_SLICE with
# axis masks, which XNNPACK does not take, so TFLite's reference kernel copied the tensor element by element
# (6 % of the encoder) and split the delegated graph around it.


def _conv(x: tf.Tensor, weights: dict, name: str, stride: int) -> tf.Tensor:
    """Width-3 convolution with one frame of zero padding each side, then exact GELU, as Whisper's stem. The
    padding is of a 3-D tensor: the GPU delegate takes no PAD of fewer dimensions."""
    padded = tf.pad(tf.reshape(x, [1, *x.shape]), [[0, 0], [1, 1], [0, 0]])
    y = tf.nn.conv1d(padded, weights[f"{name}/kernel"], stride=stride, padding="VALID")
    y = tf.reshape(y, y.shape[1:])
    return tf.nn.gelu(y + weights[f"{name}/bias"], approximate=False)
