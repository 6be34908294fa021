"""The text decoder with a fixed-size self-attention cache (sherpa-onnx style, for TFLite).

Shapes never change between calls: each layer's cache always holds `n_text_ctx` (448) positions, `offset` says
how many of them are filled, and the slots from `offset` on are masked with a large finite negative (never
-inf). A call returns only the keys and values of the tokens it was given; the caller writes those rows into
the cache in place, so no call copies a whole cache in or out (at 448 slots that copy cost more than the
step's arithmetic). Caches and cross K/V are one tensor per layer: slicing a stacked tensor copies it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .base import (NEG_INF, GraphModule, attend, dense, layer_norm, merge_heads, mix_values, mlp,
                   query_keys, split_heads)

EMBEDDING = "model/decoder/embed_tokens/embeddings"


class Int8TokenRows:
    """The token embedding as int8 rows with one scale each, for the look-up of the input tokens.

    The embedding is read twice: rows for the input tokens, and the whole table as the logits' matrix. In a float
    file both read one constant. Dynamic-range int8 would store it twice: the logits' FULLY_CONNECTED weights
    with a scale per row, and the looked-up table with one scale for all (and 4 % of the step's K/V values off).
    Rows looked up from an int8 table with a scale per row, cast and scaled, read the same bytes as those
    weights: conversion then points the look-up at them (`conversion.share_token_table`)."""

    def __init__(self, table: np.ndarray):
        peaks = np.abs(table).max(axis=1)
        scales = np.where(peaks > 0, peaks / 127.0, 1.0).astype(np.float32)
        rows = np.clip(np.round(table / scales[:, None]), -127, 127).astype(np.int8)
        self.rows = tf.Variable(rows, trainable=False)
        # As their bits: the dynamic-range quantizer would store float scales as int8 with one scale of their own.
        self.scale_bits = tf.Variable(scales.view(np.int32), trainable=False)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "Int8TokenRows":
        return cls(checkpoint.variables[EMBEDDING].numpy())

    def look_up(self, tokens: tf.Tensor) -> tf.Tensor:
        """tokens [n] -> rows [n, d], float32."""
        count = tokens.shape[0]
        scales = tf.reshape(tf.bitcast(tf.gather(self.scale_bits, tokens), tf.float32), [count, 1])
        return tf.cast(tf.gather(self.rows, tokens), tf.float32) * scales


class DecoderStep(GraphModule):
    """tokens [1, n_tokens], offset [1], self_k_{i}/self_v_{i} [heads, 448, hd] (slots before `offset` filled),
    cross_k_{i}/cross_v_{i} [heads, 1500, hd] for each layer i -> logits [1, n_tokens, vocab] and
    new_k_{i}/new_v_{i} [heads, n_tokens, hd]: the rows for slots offset .. offset + n_tokens - 1."""

    role = "decoder_step"

    def __init__(self, weights: dict, config, n_tokens: int = 1, token_rows: Int8TokenRows | None = None):
        super().__init__()
        self.w = weights
        self.token_rows = token_rows
        self.layers = config.decoder_layers
        self.heads = config.decoder_attention_heads
        self.head_dim = config.d_model // config.decoder_attention_heads
        self.n_ctx = config.max_target_positions
        self.n_audio = config.max_source_positions
        self.n_tokens = n_tokens

    @classmethod
    def from_checkpoint(cls, checkpoint, n_tokens: int = 1, token_rows: Int8TokenRows | None = None) -> "DecoderStep":
        return cls(checkpoint.variables, checkpoint.config, n_tokens, token_rows)

    def embed(self, tokens: tf.Tensor) -> tf.Tensor:
        """tokens [n] -> their embedding rows [n, d]."""
        if self.token_rows is not None:
            return self.token_rows.look_up(tokens)
        return tf.gather(self.w[EMBEDDING], tokens)

    def causal_bias(self, offset: tf.Tensor, count: int) -> tf.Tensor:
        """[count, count]: NEG_INF where a new token would see a later one. Computed from `offset` at run time:
        as a constant it would be stored in the file (alignment's: 0.8 MB)."""
        positions = offset + tf.range(count, dtype=tf.int32)
        later = tf.reshape(positions, [1, count]) > tf.reshape(positions, [count, 1])
        return tf.cast(later, tf.float32) * NEG_INF

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
        outputs, x = self._layers(inputs)
        x = layer_norm(x, self.w, "model/decoder/layer_norm")
        logits = tf.matmul(x, self.w[EMBEDDING], transpose_b=True)
        outputs["logits"] = tf.reshape(logits, [1, *logits.shape])  # not [tf.newaxis]: a STRIDED_SLICE copy
        return outputs

    def _layers(self, inputs):
        """new_k_{i}/new_v_{i}, and the last layer's output [T, d]. Without cache inputs, the tokens attend to
        each other only."""
        w = self.w
        tokens = inputs["tokens"]
        count = tokens.shape[1]
        has_cache = "self_k_0" in inputs
        offset = inputs["offset"]
        x = self.embed(tf.reshape(tokens, [count])) + self.positions(offset, count)
        # Cache slots from `offset` on are empty; among the new tokens, each sees itself and those before it.
        empty = tf.cast(tf.range(self.n_ctx, dtype=tf.int32) >= offset, tf.float32)
        cache_bias = tf.reshape(empty, [1, self.n_ctx]) * NEG_INF
        causal_bias = self.causal_bias(offset, count)
        outputs = {}
        for i in range(self.layers):
            p = f"model/decoder/layers.{i}"
            h = layer_norm(x, w, f"{p}/self_attn_layer_norm")
            q, k, v = (split_heads(dense(h, w, f"{p}/self_attn/{n}_proj"), self.heads) for n in "qkv")
            outputs[f"new_k_{i}"], outputs[f"new_v_{i}"] = k, v
            if has_cache:
                attended = _attend_two(q, (inputs[f"self_k_{i}"], inputs[f"self_v_{i}"], cache_bias),
                                       (k, v, causal_bias))
            else:
                attended = attend(q, k, v, causal_bias)
            x = x + dense(merge_heads(attended), w, f"{p}/self_attn/out_proj")
            h = layer_norm(x, w, f"{p}/encoder_attn_layer_norm")
            q = split_heads(dense(h, w, f"{p}/encoder_attn/q_proj"), self.heads)
            # All queries at once. In chunks of rows (half the prefill's scores alive at a time, 8 MB less on
            # tiny.en), the chunks' slices of q made XNNPACK's weight cache of ai-edge-litert 2.3.0 hand the
            # prefill other signatures' packed weights; the cache saves far more (one packed copy, not five).
            cross = attend(q, inputs[f"cross_k_{i}"], inputs[f"cross_v_{i}"])
            x = x + dense(merge_heads(cross), w, f"{p}/encoder_attn/out_proj")
            x = mlp(x, w, p)
        return outputs, x

    def positions(self, offset: tf.Tensor, count: int) -> tf.Tensor:
        """The position embeddings of slots offset .. offset + count - 1 [count, d]. A slice, not a gather:
        dynamic-range int8 quantizes a gathered table with one scale for all of it, which cost the step path 4 %
        of its K/V values against a float32 table. Of a 3-D view: the GPU delegate takes no 2-D SLICE."""
        table = tf.reshape(self.w["model/decoder/embed_positions/weight"], [1, self.n_ctx, -1])
        return tf.reshape(tf.slice(table, tf.concat([[0], offset, [0]], 0), [1, count, -1]), [count, -1])

    def write_rows(self, cache: tf.Tensor, rows: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
        """The cache with `rows` [heads, T, hd] written at slots offset .. offset + T - 1 (for graphs that keep
        the cache in their own state)."""
        slots = tf.range(self.n_ctx, dtype=tf.int32)
        positions = offset + tf.range(rows.shape[1], dtype=tf.int32)
        write = tf.cast(tf.equal(slots[:, None], positions[None, :]), tf.float32)  # [448, T]
        keep = 1.0 - tf.reduce_sum(write, axis=1, keepdims=True)  # [448, 1]
        return cache * keep + tf.matmul(write, rows)


def _attend_two(q: tf.Tensor, first: tuple, second: tuple) -> tf.Tensor:
    """Attention over two key/value blocks (keys, values, additive bias) as if they were concatenated, without
    building the concatenation (a copy of the whole cache)."""
    scale = q.shape[-1] ** -0.5
    scores = [query_keys(q * scale, keys) + bias for keys, _, bias in (first, second)]
    peak = tf.maximum(tf.reduce_max(scores[0], -1, keepdims=True), tf.reduce_max(scores[1], -1, keepdims=True))
    weights = [tf.exp(s - peak) for s in scores]
    total = tf.reduce_sum(weights[0], -1, keepdims=True) + tf.reduce_sum(weights[1], -1, keepdims=True)
    mixed = mix_values(weights[0], first[1]) + mix_values(weights[1], second[1])
    return mixed / total


PREFILL_ROWS = 112  # prompt tokens a prefill call takes: the longest prompt (223 tokens) in two calls


class DecoderPrefill(DecoderStep):
    """A prompt, `PREFILL_ROWS` tokens a call: decoder_step's inputs with tokens [1, PREFILL_ROWS] at positions
    offset.. -> new_k_{i}/new_v_{i} [heads, PREFILL_ROWS, hd], without logits (nobody reads a prompt's
    predictions). The runtime feeds a longer prompt in several calls, each after writing the rows of the one
    before into the cache, and pads the last; the padding's rows land in slots after the prompt, which
    `DecoderStep` masks until it writes its own rows there, so they are never attended to.

    Calls of 112 rows rather than one of the longest prompt (224 tokens): the cross-attention's scores of a call,
    [heads, rows, 1500], are most of what the text decoder's arena holds (tiny.en: a greedy worker's peak 10 MB
    lower). A call costs about 10 ms on top of its rows: 2 calls, not 4 of 64 rows, for the longest prompt."""

    role = "prefill"

    def __init__(self, weights: dict, config, token_rows: Int8TokenRows | None = None):
        super().__init__(weights, config, n_tokens=PREFILL_ROWS, token_rows=token_rows)

    @classmethod
    def from_checkpoint(cls, checkpoint, token_rows: Int8TokenRows | None = None) -> "DecoderPrefill":
        return cls(checkpoint.variables, checkpoint.config, token_rows)

    def call(self, inputs):
        return self._layers(inputs)[0]


class DecoderBatchStep(DecoderStep):
    """One token for each of `batch` sequences at the same position, for beam search and best-of sampling:
    tokens [B, 1], offset [1], self_k_{i}/self_v_{i} [B, heads, slots, hd] (slots: 448 unless given),
    cross_k_{i}/cross_v_{i} [heads, 1500, hd] -> logits [B, 1, vocab], new_k_{i}/new_v_{i} [B, heads, 1, hd].

    The B sequences attend to the same audio, so cross K/V are given once and the batch rides in their matmul's
    row dimension (as the prompt's tokens do in `DecoderPrefill`) instead of being repeated B times."""

    role = "decoder_batch"

    def __init__(self, weights: dict, config, batch: int = 5, slots: int | None = None,
                 token_rows: Int8TokenRows | None = None):
        super().__init__(weights, config, token_rows=token_rows)
        self.batch = batch
        self.slots = slots or self.n_ctx

    @classmethod
    def from_checkpoint(cls, checkpoint, token_rows: Int8TokenRows | None = None) -> "DecoderBatchStep":
        return cls(checkpoint.variables, checkpoint.config, token_rows=token_rows)

    @property
    def cache_shape(self) -> list[int]:
        return [self.batch, self.heads, self.slots, self.head_dim]

    @property
    def input_signature(self):
        specs = super().input_signature
        specs[0] = tf.TensorSpec([self.batch, 1], tf.int32, name="tokens")
        return specs

    def call(self, inputs):
        w = self.w
        offset = inputs["offset"]
        batch, heads, head_dim = self.batch, self.heads, self.head_dim
        x = self.embed(tf.reshape(inputs["tokens"], [batch])) + self.positions(offset, 1)  # [B, d]
        empty = tf.cast(tf.range(self.slots, dtype=tf.int32) >= offset, tf.float32)
        cache_bias = tf.reshape(empty, [1, self.slots]) * NEG_INF  # reshapes, not [tf.newaxis]: STRIDED_SLICE
        outputs = {}
        for i in range(self.layers):
            p = f"model/decoder/layers.{i}"
            h = layer_norm(x, w, f"{p}/self_attn_layer_norm")
            q, k, v = (tf.reshape(dense(h, w, f"{p}/self_attn/{n}_proj"), [batch, heads, 1, head_dim]) for n in "qkv")
            outputs[f"new_k_{i}"], outputs[f"new_v_{i}"] = k, v
            # The cache block and the token's own key, as `_attend_two` does (its own score needs no matmul). Each
            # row has a cache of its own: one query row against runtime K/V, a multiply and a sum (`query_keys`).
            q = q * head_dim**-0.5
            cached = tf.reshape(tf.reduce_sum(q * inputs[f"self_k_{i}"], -1), [batch, heads, 1, self.slots])
            cached = cached + cache_bias  # [B, heads, 1, slots]
            own = tf.reduce_sum(q * k, -1, keepdims=True)  # [B, heads, 1, 1]
            peak = tf.maximum(tf.reduce_max(cached, -1, keepdims=True), own)
            cached, own = tf.exp(cached - peak), tf.exp(own - peak)
            mixed = tf.reduce_sum(tf.reshape(cached, [batch, heads, self.slots, 1]) * inputs[f"self_v_{i}"], 2,
                                  keepdims=True) + own * v
            attended = mixed / (tf.reduce_sum(cached, -1, keepdims=True) + own)
            x = x + dense(tf.reshape(attended, [batch, heads * head_dim]), w, f"{p}/self_attn/out_proj")
            h = layer_norm(x, w, f"{p}/encoder_attn_layer_norm")
            cross = self.cross_attention(dense(h, w, f"{p}/encoder_attn/q_proj"), inputs[f"cross_k_{i}"],
                                         inputs[f"cross_v_{i}"])
            x = x + dense(cross, w, f"{p}/encoder_attn/out_proj")
            x = mlp(x, w, p)
        x = layer_norm(x, w, "model/decoder/layer_norm")
        logits = tf.matmul(x, w[EMBEDDING], transpose_b=True)
        outputs["logits"] = tf.reshape(logits, [batch, 1, -1])
        return outputs

    def cross_attention(self, q: tf.Tensor, keys: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        """The rows' queries [B, d] against the one window's cross K/V -> [B, d]."""
        return merge_heads(attend(split_heads(q, self.heads), keys, values))  # the rows as queries [heads, B, hd]


# A window without previous text feeds a start-of-transcript sequence of a few tokens, then samples at most
# n_text_ctx // 2 (the searches' length limit): it never needs more cache slots than this.
SHORT_PROMPT_ROOM = 8


class DecoderBatchShort(DecoderBatchStep):
    """`DecoderBatchStep` with n_text_ctx // 2 + SHORT_PROMPT_ROOM cache slots (232) instead of n_text_ctx, for
    the windows without previous text: every clip under 30 s, a recording's first window. The rows' attention
    reads each row's whole cache at every step, and at 448 slots that is the largest part of a batch step."""

    role = "decoder_batch_short"

    def __init__(self, weights: dict, config, batch: int = 5, token_rows: Int8TokenRows | None = None):
        super().__init__(weights, config, batch, slots=config.max_target_positions // 2 + SHORT_PROMPT_ROOM,
                         token_rows=token_rows)

    @classmethod
    def from_checkpoint(cls, checkpoint, token_rows: Int8TokenRows | None = None) -> "DecoderBatchShort":
        return cls(checkpoint.variables, checkpoint.config, token_rows=token_rows)


# Cache slots of `DecoderChunks`: a start-of-transcript sequence and the text of a chunk of up to 30 s, about 100
# tokens of speech (the gapped recording's longest chunk: 93); longer ones finish on decoder_batch_short. The rows'
# attention reads every slot at every step: at 232 slots it took 30 % of the step on tiny.en, at 128 half as much.
CHUNK_SLOTS = 128


class DecoderChunks(DecoderBatchStep):
    """One token for each of `beams` sequences of each of `chunks` windows, all at the same position, for batched
    transcription (pieces of speech decoded at once, each by beam search, without previous text): tokens
    [chunks * beams, 1], offset [1], self_k_{i}/self_v_{i} [chunks * beams, heads, CHUNK_SLOTS, hd] (row
    c * beams + b: beam b of window c), cross_k_{i} [chunks, heads, 1500, hd] and cross_v_{i} transposed,
    [chunks, heads, hd, 1500] (window c's) -> logits [chunks * beams, 1, vocab], new_k_{i}/new_v_{i}
    [chunks * beams, heads, 1, hd].

    The cross K/V are the largest tensors a step reads. The keys [1500, hd] and the transposed values [hd, 1500]
    are each the left side of a matmul whose right side is the window's few queries (their weights): XNNPACK packs
    a matmul's runtime right side at every call, which took half as long again on tiny.en. (The converter turns a
    matmul followed by a transpose into the one with its sides swapped: a reshape stands in between.)"""

    role = "decoder_chunks"

    def __init__(self, weights: dict, config, chunks: int = 8, beams: int = 5,
                 token_rows: Int8TokenRows | None = None):
        super().__init__(weights, config, chunks * beams, slots=CHUNK_SLOTS, token_rows=token_rows)
        self.chunks, self.beams = chunks, beams

    @classmethod
    def from_checkpoint(cls, checkpoint, token_rows: Int8TokenRows | None = None) -> "DecoderChunks":
        return cls(checkpoint.variables, checkpoint.config, token_rows=token_rows)

    @property
    def input_signature(self):
        shapes = {"cross_k": [self.chunks, self.heads, self.n_audio, self.head_dim],
                  "cross_v": [self.chunks, self.heads, self.head_dim, self.n_audio]}
        return [tf.TensorSpec(shapes[spec.name[:7]], tf.float32, name=spec.name) if spec.name[:7] in shapes
                else spec for spec in super().input_signature]

    def cross_attention(self, q: tf.Tensor, keys: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        """Queries [chunks * beams, d] against their window's keys and transposed values -> [chunks * beams, d]."""
        chunks, beams, heads, head_dim = self.chunks, self.beams, self.heads, self.head_dim
        q = tf.transpose(tf.reshape(q, [chunks, beams, heads, head_dim]), [0, 2, 1, 3]) * head_dim**-0.5
        scores = tf.reshape(tf.matmul(keys, q, transpose_b=True), [chunks * heads, self.n_audio, beams])
        weights = tf.nn.softmax(tf.transpose(scores, [0, 2, 1]), axis=-1)  # [chunks * heads, beams, 1500]
        weights = tf.reshape(weights, [chunks, heads, beams, self.n_audio])
        mixed = tf.matmul(values, weights, transpose_b=True)  # [chunks, heads, hd, beams]
        return tf.reshape(tf.transpose(mixed, [0, 3, 1, 2]), [chunks * beams, heads * head_dim])


class DecoderAlignment(DecoderStep):
    """Word timing's input (openai/whisper `timing.py`): tokens [1, n_text_ctx] at positions offset.. (the runtime
    gives 0: start-of-transcript sequence, <|notimestamps|>, a window's text tokens, end-of-text, then padding),
    cross_k_{i}/cross_v_{i} ->
    `weights` [n_alignment_heads, n_text_ctx, n_audio_ctx]: the alignment heads' cross-attention, softmax over the
    audio frames.

    The full context width, so every window's text fits in one call. The padding after end-of-text cannot change
    the rows before it (causal self-attention); the runtime reads those rows only. Layers after the last
    alignment head are not built, nor the MLP of that layer: nothing reads them."""

    role = "alignment"

    def __init__(self, weights: dict, config, heads: list[list[int]], token_rows: Int8TokenRows | None = None):
        super().__init__(weights, config, n_tokens=config.max_target_positions, token_rows=token_rows)
        self.alignment_heads = [tuple(pair) for pair in heads]

    @classmethod
    def from_checkpoint(cls, checkpoint, token_rows: Int8TokenRows | None = None) -> "DecoderAlignment":
        return cls(checkpoint.variables, checkpoint.config, checkpoint.alignment_heads, token_rows)

    @property
    def input_signature(self):
        return [spec for spec in super().input_signature if not spec.name.startswith("self_")]

    def call(self, inputs):
        w = self.w
        tokens, offset = inputs["tokens"], inputs["offset"]
        count = tokens.shape[1]
        x = self.embed(tf.reshape(tokens, [count])) + self.positions(offset, count)
        causal_bias = self.causal_bias(offset, count)
        last = max(layer for layer, _ in self.alignment_heads)
        weights = {}
        for i in range(last + 1):
            p = f"model/decoder/layers.{i}"
            h = layer_norm(x, w, f"{p}/self_attn_layer_norm")
            q, k, v = (split_heads(dense(h, w, f"{p}/self_attn/{n}_proj"), self.heads) for n in "qkv")
            x = x + dense(merge_heads(attend(q, k, v, causal_bias)), w, f"{p}/self_attn/out_proj")
            h = layer_norm(x, w, f"{p}/encoder_attn_layer_norm")
            q = split_heads(dense(h, w, f"{p}/encoder_attn/q_proj"), self.heads)
            # The layer's cross-attention, whose softmax holds its alignment heads' weights. (Taken per head, from
            # a slice of q, they made XNNPACK's weight cache of ai-edge-litert 2.3.0 give the file's other
            # signatures wrong results.)
            attention = tf.nn.softmax(query_keys(q * self.head_dim**-0.5, inputs[f"cross_k_{i}"]), axis=-1)
            for layer, head in self.alignment_heads:
                if layer == i:
                    weights[layer, head] = tf.gather(attention, [head])
            if i == last:
                break
            x = x + dense(merge_heads(mix_values(attention, inputs[f"cross_v_{i}"])), w, f"{p}/encoder_attn/out_proj")
            x = mlp(x, w, p)
        return {"weights": tf.concat([weights[pair] for pair in self.alignment_heads], 0)}
