"""whisper-s4y's files, built from our graphs: drop-in replacements for apps made on that project.

whisper-s4y (github.com/s4ysolutions/whisper-s4y) writes these files, each with one `serving_default` signature;
its tests call them by name through the signature runner, its demo app by position (input 0, output 0):

    features-extractor.tflite  normalized_audio [480000]           -> logmel [1, n_mels, 3000]
    encoder.tflite             input_features [1, n_mels, 3000]     -> last_hidden_state [1, 1500, d]
    decoder.tflite             encoder_hidden_states [1, 1500, d]   -> tokens [1, 448] int32
    encoder_decoder.tflite     input_features                       -> tokens
    pcm-encoder.tflite         normalized_audio                     -> last_hidden_state
    generator.tflite           input_features                       -> sequences [1, 448] int32

`tokens` and `sequences` hold the prompt (start of transcript, language, transcribe, no timestamps), the text and
end-of-text, padded with end-of-text to 448; the language is fixed at conversion. Where ours differ, on purpose:
the exact mel (n_fft 400, centred frames; whisper-s4y approximates it with n_fft 512, one frame ahead), finite
masks where its Hugging Face processors write -inf, English-only models' own special tokens (its ids are the
multilingual ones), and the decoder and encoder_decoder decode up to the full 448 tokens (its defaults stop at 56
and 112). The decoder computes the cross-attention keys and values from the hidden states itself, as whisper-s4y's.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..audio import N_SAMPLES
from .base import GraphModule
from .combined import PROMPT_WIDTH, Decoder, Generator
from .encoder import Encoder
from .features import FeatureExtractor

def build_s4y_module(name: str, checkpoint, prompt: list[int]) -> GraphModule:
    features = FeatureExtractor.from_checkpoint(checkpoint)
    if name == "features-extractor":
        return S4yFeatures(features)
    encoder = Encoder.from_checkpoint(checkpoint)
    if name in ("encoder", "pcm-encoder"):
        return S4yEncoder(encoder, features if name == "pcm-encoder" else None)
    if name == "generator":
        return S4yGenerator(Generator.from_checkpoint(checkpoint), prompt)
    return S4yDecoder(encoder, Decoder.from_checkpoint(checkpoint), prompt, from_log_mel=name == "encoder_decoder")


class S4yFeatures(GraphModule):
    role = "features-extractor"

    def __init__(self, features: FeatureExtractor):
        super().__init__()
        self.features = features

    @property
    def input_signature(self):
        return [tf.TensorSpec([N_SAMPLES], tf.float32, name="normalized_audio")]

    def call(self, inputs):
        return {"logmel": self.features.call({"pcm": inputs["normalized_audio"]})["log_mel"]}


class S4yEncoder(GraphModule):
    """`encoder` (log-mel in) or, given the features graph, `pcm-encoder` (PCM in): -> last_hidden_state."""

    def __init__(self, encoder: Encoder, features: FeatureExtractor | None = None):
        super().__init__()
        self.encoder, self.features = encoder, features
        self.role = "encoder" if features is None else "pcm-encoder"

    @property
    def input_signature(self):
        if self.features is not None:
            return [tf.TensorSpec([N_SAMPLES], tf.float32, name="normalized_audio")]
        return [tf.TensorSpec([1, self.encoder.n_mels, self.encoder.n_frames], tf.float32, name="input_features")]

    def call(self, inputs):
        if self.features is not None:
            log_mel = self.features.call({"pcm": inputs["normalized_audio"]})["log_mel"]
        else:
            log_mel = inputs["input_features"]
        return {"last_hidden_state": self.encoder.call({"log_mel": log_mel})["hidden"]}


class S4yDecoder(GraphModule):
    """`decoder` (encoder_hidden_states in) or `encoder_decoder` (input_features in): -> tokens [1, 448], the
    prompt first, our in-graph greedy `Decoder` after it."""

    def __init__(self, encoder: Encoder, decoder: Decoder, prompt: list[int], from_log_mel: bool):
        super().__init__()
        self.encoder, self.decoder, self.from_log_mel = encoder, decoder, from_log_mel
        self.role = "encoder_decoder" if from_log_mel else "decoder"
        self.prompt = np.array([prompt], np.int32)
        padded = np.zeros([1, PROMPT_WIDTH], np.int32)
        padded[0, : len(prompt)] = prompt
        self.decoder_inputs = {"prompt": padded, "prompt_length": np.array([len(prompt)], np.int32)}

    @property
    def input_signature(self):
        if self.from_log_mel:
            return [tf.TensorSpec([1, self.encoder.n_mels, self.encoder.n_frames], tf.float32,
                                  name="input_features")]
        d_model = self.encoder.decoder_heads * self.decoder.step.head_dim
        return [tf.TensorSpec([1, self.encoder.n_frames // 2, d_model], tf.float32, name="encoder_hidden_states")]

    def call(self, inputs):
        if self.from_log_mel:
            cross = self.encoder.call({"log_mel": inputs["input_features"]})
            del cross["hidden"]
        else:
            hidden = inputs["encoder_hidden_states"]
            cross = self.encoder.cross(tf.reshape(hidden, hidden.shape[1:]))
        generated = self.decoder.call({**cross, **self.decoder_inputs})["tokens"]
        n_ctx = generated.shape[1]
        return {"tokens": tf.concat([self.prompt, generated[:, : n_ctx - self.prompt.shape[1]]], axis=1)}


class S4yGenerator(GraphModule):
    """input_features -> sequences [1, 448]: our `generator` (Hugging Face `generate`) with the prompt fixed."""

    role = "generator"

    def __init__(self, generator: Generator, prompt: list[int]):
        super().__init__()
        self.generator = generator
        self.prompt = np.array([prompt], np.int32)

    @property
    def input_signature(self):
        return self.generator.input_signature[:1]

    def call(self, inputs):
        return self.generator.call({"input_features": inputs["input_features"], "prompt": self.prompt})
