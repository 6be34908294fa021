"""Combined models for apps that want one file and one call; each is built from the stage modules.

- `Decoder`: greedy decoding with the loop inside the graph (a WHILE with static shapes and the step's cache in
  its state); the prompt is an input tensor, so one file serves every language and both tasks.
- `PcmEncoder` (PCM -> encoder outputs), `EncoderDecoder` (log-mel + prompt -> tokens), `Whisper` (PCM + prompt
  -> tokens).
- `Generator`: Hugging Face `generate` itself, converted whole, with the prompt as an input and finite masks.
"""

from __future__ import annotations

import copy

import numpy as np
import tensorflow as tf

from .base import NEG_INF, GraphModule
from .decoder import DecoderStep
from .encoder import Encoder
from .features import FeatureExtractor

PROMPT_WIDTH = 4  # sot, language, task, notimestamps; English-only prompts are shorter and set prompt_length


class Decoder(GraphModule):
    """cross_k_{i}, cross_v_{i}, prompt [1, 4], prompt_length [1] -> tokens [1, n_ctx] (the generated tokens,
    padded with end-of-text) and count [1] (how many precede the padding)."""

    role = "decoder"

    def __init__(self, step: DecoderStep, suppress: list[int], begin_suppress: list[int], eot: int, n_vocab: int):
        super().__init__()
        self.step = step
        self.eot = eot
        self.suppress_bias = _bias(suppress, n_vocab)
        self.begin_bias = _bias(begin_suppress, n_vocab)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "Decoder":
        return cls(DecoderStep.from_checkpoint(checkpoint), checkpoint.suppress_tokens,
                   checkpoint.begin_suppress_tokens, checkpoint.special_tokens.eot, checkpoint.config.vocab_size)

    @property
    def input_signature(self):
        cross = [s for s in self.step.input_signature if s.name.startswith("cross_")]
        return cross + [tf.TensorSpec([1, PROMPT_WIDTH], tf.int32, name="prompt"),
                        tf.TensorSpec([1], tf.int32, name="prompt_length")]

    def call(self, inputs):
        step, n_ctx = self.step, self.step.n_ctx
        cross = {name: value for name, value in inputs.items() if name.startswith("cross_")}
        prompt, prompt_length = inputs["prompt"][0], inputs["prompt_length"][0]
        cache_names = [f"self_{kv}_{i}" for i in range(step.layers) for kv in "kv"]
        slots = tf.range(n_ctx, dtype=tf.int32)

        def body(position, token, count, done, tokens, *caches):
            fed = tf.where(position < prompt_length, tf.gather(prompt, tf.minimum(position, PROMPT_WIDTH - 1)), token)
            out = step.call({"tokens": tf.reshape(fed, [1, 1]), "offset": tf.reshape(position, [1]),
                             **dict(zip(cache_names, caches)), **cross})
            first = tf.cast(tf.equal(position, prompt_length - 1), tf.float32)
            logits = out["logits"][0, 0] + self.suppress_bias + first * self.begin_bias
            chosen = tf.cast(tf.argmax(logits), tf.int32)
            sampling = position >= prompt_length - 1
            ended = tf.logical_and(sampling, tf.equal(chosen, self.eot))
            write = tf.logical_and(sampling, tf.logical_not(ended))
            at_count = tf.cast(tf.equal(slots, count), tf.int32) * tf.cast(write, tf.int32)
            tokens = tokens * (1 - at_count) + chosen * at_count
            caches = [step.write_rows(cache, out[name.replace("self_", "new_")], tf.reshape(position, [1]))
                      for name, cache in zip(cache_names, caches)]
            return (position + 1, chosen, count + tf.cast(write, tf.int32), ended, tokens, *caches)

        def keep_going(position, token, count, done, tokens, *caches):
            return tf.logical_and(position < n_ctx, tf.logical_not(done))

        zeros = [tf.zeros(step.cache_shape, tf.float32) for _ in cache_names]
        start = (tf.constant(0), tf.constant(0), tf.constant(0), tf.constant(False),
                 tf.fill([n_ctx], tf.constant(self.eot, tf.int32)), *zeros)
        result = tf.while_loop(keep_going, body, start, maximum_iterations=n_ctx)
        return {"tokens": result[4][tf.newaxis], "count": tf.reshape(result[2], [1])}


def _bias(token_ids: list[int], n_vocab: int) -> np.ndarray:
    """Additive mask: NEG_INF at the given ids (finite: -inf crashes TFLite kernels), 0 elsewhere."""
    bias = np.zeros(n_vocab, np.float32)
    bias[list(token_ids)] = NEG_INF
    return bias


class PcmEncoder(GraphModule):
    """pcm [480000] -> hidden and cross_k_{i}/cross_v_{i}: features and encoder in one file."""

    role = "pcm_encoder"

    def __init__(self, features: FeatureExtractor, encoder: Encoder):
        super().__init__()
        self.features, self.encoder = features, encoder

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "PcmEncoder":
        return cls(FeatureExtractor.from_checkpoint(checkpoint), Encoder.from_checkpoint(checkpoint))

    @property
    def input_signature(self):
        return self.features.input_signature

    def call(self, inputs):
        return self.encoder.call(self.features.call(inputs))


class EncoderDecoder(GraphModule):
    """log_mel [1, n_mels, 3000], prompt [1, 4], prompt_length [1] -> tokens [1, n_ctx], count [1]."""

    role = "encoder_decoder"

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "EncoderDecoder":
        return cls(Encoder.from_checkpoint(checkpoint), Decoder.from_checkpoint(checkpoint))

    @property
    def input_signature(self):
        return self.encoder.input_signature + self.decoder.input_signature[-2:]

    def call(self, inputs):
        encoded = self.encoder.call({"log_mel": inputs["log_mel"]})
        cross = {name: value for name, value in encoded.items() if name.startswith("cross_")}
        return self.decoder.call({**cross, "prompt": inputs["prompt"], "prompt_length": inputs["prompt_length"]})


class Whisper(GraphModule):
    """pcm [480000], prompt [1, 4], prompt_length [1] -> tokens [1, n_ctx], count [1]: the whole model."""

    role = "whisper"

    def __init__(self, features: FeatureExtractor, encoder_decoder: EncoderDecoder):
        super().__init__()
        self.features, self.encoder_decoder = features, encoder_decoder

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "Whisper":
        return cls(FeatureExtractor.from_checkpoint(checkpoint), EncoderDecoder.from_checkpoint(checkpoint))

    @property
    def input_signature(self):
        return self.features.input_signature + self.encoder_decoder.input_signature[-2:]

    def call(self, inputs):
        log_mel = self.features.call({"pcm": inputs["pcm"]})["log_mel"]
        return self.encoder_decoder.call({"log_mel": log_mel, "prompt": inputs["prompt"],
                                          "prompt_length": inputs["prompt_length"]})


class Generator(GraphModule):
    """input_features [1, n_mels, 3000], prompt [1, P] -> sequences [1, n_ctx]: Hugging Face `generate`, greedy.

    `generate` starts from start-of-transcript alone (its traced path breaks with a longer initial sequence);
    one logits processor then forces the rest of the prompt (P = 4 tokens multilingual, 2 English-only), so
    language and task are inputs, and applies suppression with a finite mask. It replaces HF's own processors,
    which write -inf (turned into -FLT_MAX by the converter, and -inf again at the first addition).
    """

    role = "generator"

    def __init__(self, checkpoint):
        super().__init__()
        self.model = checkpoint.model
        self.n_mels = checkpoint.n_mels
        self.n_vocab = checkpoint.config.vocab_size
        self.prompt_width = 4 if checkpoint.multilingual else 2
        self.config = copy.deepcopy(checkpoint.generation_config)
        self.config.forced_decoder_ids = None
        self.config.suppress_tokens = None
        self.config.begin_suppress_tokens = None
        self.config.max_length = checkpoint.config.max_target_positions
        self.suppress_bias = _bias(checkpoint.suppress_tokens, self.n_vocab)
        self.begin_bias = _bias(checkpoint.begin_suppress_tokens, self.n_vocab)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "Generator":
        return cls(checkpoint)

    @property
    def input_signature(self):
        return [tf.TensorSpec([1, self.n_mels, 3000], tf.float32, name="input_features"),
                tf.TensorSpec([1, self.prompt_width], tf.int32, name="prompt")]

    def call(self, inputs):
        from transformers.generation.tf_logits_process import TFLogitsProcessor, TFLogitsProcessorList

        prompt, width, n_vocab = inputs["prompt"][0], self.prompt_width, self.n_vocab
        suppress, begin = self.suppress_bias, self.begin_bias

        class PromptAndSuppress(TFLogitsProcessor):
            @tf.autograph.experimental.do_not_convert
            def __call__(self, input_ids, scores, cur_len):
                forcing = tf.cast(cur_len < width, scores.dtype)
                forced = tf.one_hot(tf.gather(prompt, tf.minimum(cur_len, width - 1)), n_vocab, 0.0, NEG_INF)
                first = tf.cast(tf.equal(cur_len, width), scores.dtype)
                return forcing * forced + (1.0 - forcing) * (scores + suppress + first * begin)

        # TF Whisper's generate reads forced_decoder_ids from the model's own config too: lend it ours.
        own_config, self.model.generation_config = self.model.generation_config, self.config
        try:
            output = self.model.generate(
                inputs["input_features"],
                generation_config=copy.deepcopy(self.config),
                logits_processor=TFLogitsProcessorList([PromptAndSuppress()]),
                return_dict_in_generate=True,
            )
        finally:
            self.model.generation_config = own_config
        return {"sequences": output["sequences"]}
