"""One step of the text decoder with a fixed-size self-attention cache (sherpa-onnx style, for TFLite).

Shapes never change between steps: each layer's cache always holds `n_text_ctx` (448) positions and `offset`
says where the new tokens go; slots after the newest token are masked with a large finite negative, never -inf.
Caches and cross K/V are one tensor per layer: slicing a stacked tensor would copy it at every step.
"""

from __future__ import annotations

import tensorflow as tf

from .base import NEG_INF, GraphModule, attend, dense, layer_norm, merge_heads, mlp, split_heads, weights_of


class DecoderStep(GraphModule):
    """tokens [1, n_tokens], offset [1], self_k_{i}/self_v_{i} [heads, 448, hd], cross_k_{i}/cross_v_{i}
    [heads, 1500, hd] for each layer i -> logits [1, n_tokens, vocab] and the updated self_k_{i}/self_v_{i}."""

    role = "decoder_step"

    def __init__(self, weights: dict, config, n_tokens: int = 1):
        super().__init__()
        self.w = weights
        self.layers = config.decoder_layers
        self.heads = config.decoder_attention_heads
        self.head_dim = config.d_model // config.decoder_attention_heads
        self.n_ctx = config.max_target_positions
        self.n_audio = config.max_source_positions
        self.n_tokens = n_tokens

    @classmethod
    def from_checkpoint(cls, checkpoint, n_tokens: int = 1) -> "DecoderStep":
        return cls(weights_of(checkpoint), checkpoint.model.config, n_tokens)

    @property
    def cache_shape(self) -> list[int]:
        return [self.heads, self.n_ctx, self.head_dim]

    @property
    def input_signature(self):
        cross = [self.heads, self.n_audio, self.head_dim]
        specs = [tf.TensorSpec([1, self.n_tokens], tf.int32, name="tokens"),
                 tf.TensorSpec([1], tf.int32, name="offset")]
        for i in range(self.layers):
            specs += [tf.TensorSpec(self.cache_shape, tf.float32, name=f"self_k_{i}"),
                      tf.TensorSpec(self.cache_shape, tf.float32, name=f"self_v_{i}"),
                      tf.TensorSpec(cross, tf.float32, name=f"cross_k_{i}"),
                      tf.TensorSpec(cross, tf.float32, name=f"cross_v_{i}")]
        return specs

    def call(self, inputs):
        w = self.w
        tokens = inputs["tokens"]
        positions = inputs["offset"] + tf.range(tokens.shape[1], dtype=tf.int32)  # [T]
        x = tf.gather(w["model/decoder/embed_tokens/embeddings"], tokens[0])
        x = x + tf.gather(w["model/decoder/embed_positions/weight"], positions)
        slots = tf.range(self.n_ctx, dtype=tf.int32)
        # write[s, t] = 1 where token t goes into cache slot s; token t sees slots up to its own position.
        write = tf.cast(tf.equal(slots[:, None], positions[None, :]), tf.float32)  # [448, T]
        keep = 1.0 - tf.reduce_sum(write, axis=1, keepdims=True)  # [448, 1]
        bias = tf.cast(slots[None, :] > positions[:, None], tf.float32) * NEG_INF  # [T, 448]
        outputs = {}
        for i in range(self.layers):
            p = f"model/decoder/layers.{i}"
            h = layer_norm(x, w, f"{p}/self_attn_layer_norm")
            q, k, v = (split_heads(dense(h, w, f"{p}/self_attn/{n}_proj"), self.heads) for n in "qkv")
            k_cache = inputs[f"self_k_{i}"] * keep + tf.matmul(write, k)  # [heads, 448, hd]
            v_cache = inputs[f"self_v_{i}"] * keep + tf.matmul(write, v)
            outputs[f"self_k_{i}"], outputs[f"self_v_{i}"] = k_cache, v_cache
            x = x + dense(merge_heads(attend(q, k_cache, v_cache, bias)), w, f"{p}/self_attn/out_proj")
            h = layer_norm(x, w, f"{p}/encoder_attn_layer_norm")
            q = split_heads(dense(h, w, f"{p}/encoder_attn/q_proj"), self.heads)
            cross = attend(q, inputs[f"cross_k_{i}"], inputs[f"cross_v_{i}"])
            x = x + dense(merge_heads(cross), w, f"{p}/encoder_attn/out_proj")
            x = mlp(x, w, p)
        x = layer_norm(x, w, "model/decoder/layer_norm")
        logits = tf.matmul(x, w["model/decoder/embed_tokens/embeddings"], transpose_b=True)
        outputs["logits"] = logits[tf.newaxis]
        return outputs
