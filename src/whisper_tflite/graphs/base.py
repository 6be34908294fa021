"""What every model class shares: a fixed input signature and a TF call, traced for conversion."""

from __future__ import annotations

import tensorflow as tf

# Masks and suppression add this instead of -inf: -inf crashes TFLite kernels (reduce.cc Mean, WHILE gathers)
# and NaNs the softmax of a row that is masked whole. exp(-1e9 - max) is exactly 0 in float32 anyway.
NEG_INF = -1e9


class GraphModule(tf.Module):
    """A stage as a TF module: `call` maps named input tensors to named outputs at a fixed signature."""

    role: str = ""

    @property
    def input_signature(self) -> list[tf.TensorSpec]:
        raise NotImplementedError

    def call(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def __call__(self, **inputs) -> dict[str, tf.Tensor]:
        specs = {spec.name: spec for spec in self.input_signature}
        return self.call({name: tf.convert_to_tensor(value, specs[name].dtype) for name, value in inputs.items()})

    def serving_function(self) -> tf.types.experimental.ConcreteFunction:
        """`call` traced at the fixed signature: what is converted. Inputs keep their spec names."""
        names = [spec.name for spec in self.input_signature]
        function = tf.function(lambda *args: self.call(dict(zip(names, args))), input_signature=self.input_signature)
        return function.get_concrete_function()


def layer_norm(x: tf.Tensor, weights: dict, name: str, epsilon: float = 1e-5) -> tf.Tensor:
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * weights[f"{name}/gamma"] + weights[f"{name}/beta"]


def dense(x: tf.Tensor, weights: dict, name: str) -> tf.Tensor:
    """x @ weight^T + bias, with the weight [out, in] as FULLY_CONNECTED holds it: the converter takes it as is."""
    y = tf.matmul(x, weights[f"{name}/weight"], transpose_b=True)
    bias = weights.get(f"{name}/bias")
    return y if bias is None else y + bias


def split_heads(x: tf.Tensor, heads: int) -> tf.Tensor:
    """[T, d] -> [heads, T, d/heads]."""
    length, width = x.shape
    return tf.transpose(tf.reshape(x, [length, heads, width // heads]), [1, 0, 2])


def merge_heads(x: tf.Tensor) -> tf.Tensor:
    """[heads, T, hd] -> [T, heads*hd]."""
    heads, length, head_dim = x.shape
    return tf.reshape(tf.transpose(x, [1, 0, 2]), [length, heads * head_dim])


def attend(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """Scaled dot-product attention over [heads, T, hd] tensors; `bias` holds NEG_INF where masked."""
    scores = query_keys(q * (q.shape[-1] ** -0.5), k)
    if bias is not None:
        scores = scores + bias
    return mix_values(tf.nn.softmax(scores, axis=-1), v)


def attend_in_chunks(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, rows: int) -> tf.Tensor:
    """`attend`, `rows` queries at a time. The scores [heads, queries, keys] and their softmax are the largest
    tensors of the encoder (base: 72 MB each); a chunk's are dead before the next chunk's exist, so the arena
    holds one chunk's. Each chunk waits on the previous one's output: without that edge the converter schedules
    every chunk's product, then every softmax, all alive at once. Rows are independent, so the result is bit-identical, and the time the same (tiny.en's encoder: 40 MB less)."""
    if q.shape[1] <= rows:
        return attend(q, k, v)
    parts = []
    for first in range(0, q.shape[1], rows):
        with tf.control_dependencies(parts[-1:]):
            chunk = tf.identity(q[:, first : first + rows])
        parts.append(attend(chunk, k, v))
    return tf.concat(parts, axis=1)


# One query row against a runtime K or V (the decoder step's cross K/V and cache) is a multiply and a sum, not a
# BATCH_MATMUL: XNNPACK packs a runtime right-hand side at every call (zero-fill, then a copy, for V with a scalar
# kernel), which made packing ~50 % of a tiny.en step. The product's temporary costs less than that.
def query_keys(q: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """[heads, T, hd] x [heads, S, hd] -> scores [heads, T, S]."""
    heads, length, _ = q.shape
    if length != 1:
        return tf.matmul(q, k, transpose_b=True)
    return tf.reshape(tf.reduce_sum(q * k, axis=-1), [heads, 1, k.shape[1]])


def mix_values(weights: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """[heads, T, S] x [heads, S, hd] -> [heads, T, hd]."""
    heads, length, slots = weights.shape
    if length != 1:
        return tf.matmul(weights, v)
    return tf.reduce_sum(tf.reshape(weights, [heads, slots, 1]) * v, axis=1, keepdims=True)


def mlp(x: tf.Tensor, weights: dict, prefix: str) -> tf.Tensor:
    h = layer_norm(x, weights, f"{prefix}/final_layer_norm")
    return x + dense(tf.nn.gelu(dense(h, weights, f"{prefix}/fc1"), approximate=False), weights, f"{prefix}/fc2")
