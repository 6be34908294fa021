"""The loaded form of a Whisper checkpoint, whatever its source: weights, config, tokenizer, feature extractor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..tokens import SpecialTokens

if TYPE_CHECKING:
    import tensorflow as tf
    from transformers import GenerationConfig, TFWhisperForConditionalGeneration, WhisperConfig
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast


@dataclass(eq=False)
class WhisperCheckpoint:
    """The weights are arrays by path (`weight_shapes`), float32, or float16 where the files store them so (as
    the hub ships the large models). They become TF variables, one copy, when a graph first reads them
    (`variables`), and the Hugging Face TF model, needed only by the reference and the generator role, is built
    from those when first asked for (`model`): conversion never builds it, and never holds two copies."""

    config: "WhisperConfig"
    tokenizer: "WhisperTokenizerFast"
    feature_extractor: "WhisperFeatureExtractor"
    generation_config: "GenerationConfig"
    source: str  # what the user asked for: a bundled name, a folder, a hub id
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # emptied as `variables` takes them
    _model: "TFWhisperForConditionalGeneration | None" = field(default=None, repr=False)
    _variables: "dict[str, tf.Variable] | None" = field(default=None, repr=False)

    @classmethod
    def of_model(cls, model: "TFWhisperForConditionalGeneration", tokenizer, feature_extractor, generation_config,
                 source: str) -> "WhisperCheckpoint":
        """A checkpoint whose weights are those of a Hugging Face TF model already loaded (tf_model.h5, the hub),
        taken out of it: the model is built again from them if the reference asks for it."""
        return cls(model.config, tokenizer, feature_extractor, generation_config, source,
                   arrays=model_arrays(model))

    @property
    def variables(self) -> "Float32Weights":
        """Every weight as a TF variable by path, read as float32; each array is released as its variable takes
        its place.

        Every graph module reads these, so the weights exist once however many roles are converted; and a graph
        that reads variables converts 2.6x faster than one holding the same weights as constants, which every step
        of TF's export serializes again (tiny.en decoder_step: 17 s instead of 43 s)."""
        if self._variables is None:
            import tensorflow as tf

            self._variables = {name: tf.Variable(self.arrays.pop(name), trainable=False)
                               for name in list(self.arrays)}
        return Float32Weights(self._variables)

    @property
    def model(self) -> "TFWhisperForConditionalGeneration":
        """The Hugging Face TF model with these weights (a second copy of them): the reference and `generate`."""
        if self._model is None:
            from transformers import TFWhisperForConditionalGeneration

            model = TFWhisperForConditionalGeneration(self.config)
            assign_weights(model, self.variables)
            model.generation_config = self.generation_config
            self._model = model
        return self._model

    @property
    def n_mels(self) -> int:
        return self.config.num_mel_bins

    @property
    def multilingual(self) -> bool:
        return self.config.vocab_size >= 51865

    @property
    def special_tokens(self) -> SpecialTokens:
        backend = self.tokenizer.backend_tokenizer
        return SpecialTokens.from_lookup(backend.token_to_id, backend.id_to_token)

    @property
    def languages(self) -> list[str]:
        return list(self.special_tokens.languages) if self.multilingual else ["en"]

    @property
    def alignment_heads(self) -> list[list[int]]:
        """[layer, head] pairs of the decoder's cross-attention heads that follow the words' timing; without the
        checkpoint's list, every head of the second half of the layers (openai/whisper's default)."""
        heads = getattr(self.generation_config, "alignment_heads", None)
        if heads:
            return [[int(layer), int(head)] for layer, head in heads]
        config = self.config
        return [[layer, head] for layer in range(config.decoder_layers // 2, config.decoder_layers)
                for head in range(config.decoder_attention_heads)]

    @property
    def suppress_tokens(self) -> list[int]:
        return list(self.generation_config.suppress_tokens or [])

    @property
    def begin_suppress_tokens(self) -> list[int]:
        return list(self.generation_config.begin_suppress_tokens or [])


class Float32Weights(Mapping):
    """Variables read as float32. A float16 one is cast where it is read: in a converted graph the converter folds
    the cast into the constant, so the model is what float32 weights of the same values give, and the float16
    checkpoint held half the memory meanwhile (1.6 GB of large-v3-turbo's 3.2)."""

    def __init__(self, variables: "dict[str, tf.Variable]"):
        self._variables = variables

    def __getitem__(self, name: str) -> "tf.Tensor":
        import tensorflow as tf

        variable = self._variables[name]
        return variable if variable.dtype == tf.float32 else tf.cast(variable, tf.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)


def weight_shapes(config: "WhisperConfig") -> dict[str, tuple[int, ...]]:
    """Every weight of a Whisper model by path, with its shape. The paths and layouts are those of
    `TFWhisperForConditionalGeneration` (Conv1D kernels [width, in, out], no bias on k_proj) but for dense layers:
    `.../weight` [out, in], PyTorch's and CTranslate2's layout and FULLY_CONNECTED's, where the TF model has
    `.../kernel` [in, out]. Given the TF layout, the converter would fold a transpose into a second copy of every
    weight (turbo's encoder: 2.5 GB)."""
    d, mels = config.d_model, config.num_mel_bins
    shapes: dict[str, tuple[int, ...]] = {}

    def dense(name: str, inputs: int, outputs: int, bias: bool = True) -> None:
        shapes[f"{name}/weight"] = (outputs, inputs)
        if bias:
            shapes[f"{name}/bias"] = (outputs,)

    def norm(name: str) -> None:
        shapes[f"{name}/gamma"] = shapes[f"{name}/beta"] = (d,)

    def attention(name: str) -> None:
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            dense(f"{name}/{projection}", d, d, bias=projection != "k_proj")
        norm(f"{name}_layer_norm")

    def layer(name: str, ffn: int, cross: bool) -> None:
        attention(f"{name}/self_attn")
        if cross:
            attention(f"{name}/encoder_attn")
        dense(f"{name}/fc1", d, ffn)
        dense(f"{name}/fc2", ffn, d)
        norm(f"{name}/final_layer_norm")

    shapes["model/encoder/conv1/kernel"], shapes["model/encoder/conv1/bias"] = (3, mels, d), (d,)
    shapes["model/encoder/conv2/kernel"], shapes["model/encoder/conv2/bias"] = (3, d, d), (d,)
    shapes["model/encoder/embed_positions/weight"] = (config.max_source_positions, d)
    for i in range(config.encoder_layers):
        layer(f"model/encoder/layers.{i}", config.encoder_ffn_dim, cross=False)
    norm("model/encoder/layer_norm")
    shapes["model/decoder/embed_tokens/embeddings"] = (config.vocab_size, d)
    shapes["model/decoder/embed_positions/weight"] = (config.max_target_positions, d)
    for i in range(config.decoder_layers):
        layer(f"model/decoder/layers.{i}", config.decoder_ffn_dim, cross=True)
    norm("model/decoder/layer_norm")
    return shapes


def pytorch_name(path: str) -> str:
    """The name transformers' PyTorch Whisper gives the weight at a TF path (`model.encoder.conv1.weight`)."""
    *modules, leaf = path.split("/")
    return ".".join(modules + [{"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}
                               .get(leaf, leaf)])


def check_weights(arrays: dict[str, np.ndarray], config: "WhisperConfig") -> None:
    """Every weight the model has, at its shape, and nothing else: a format change cannot drop one silently."""
    from ..errors import SourceError

    expected = weight_shapes(config)
    for name, shape in expected.items():
        if name not in arrays:
            raise SourceError(f"the checkpoint has no value for {name}")
        if tuple(arrays[name].shape) != shape:
            raise SourceError(f"{name}: checkpoint shape {tuple(arrays[name].shape)} != model shape {shape}")
    extra = set(arrays) - set(expected)
    if extra:
        raise SourceError(f"the checkpoint has weights the model does not use: {sorted(extra)[:5]}")


def whisper_generation_config(
    special: SpecialTokens,
    multilingual: bool,
    suppress_tokens: list[int],
    begin_suppress_tokens: list[int],
    alignment_heads: list[list[int]],
    max_length: int,
) -> "GenerationConfig":
    """The generation config that the Hugging Face hub ships with each Whisper model, rebuilt from its parts."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        max_length=max_length,
        suppress_tokens=suppress_tokens,
        begin_suppress_tokens=begin_suppress_tokens,
        no_timestamps_token_id=special.no_timestamps,
        prev_sot_token_id=special.sot_prev,
        alignment_heads=alignment_heads,
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        config.lang_to_id = {f"<|{code}|>": token for code, token in special.languages.items()}
        config.task_to_id = {"transcribe": special.transcribe, "translate": special.translate}
        config.forced_decoder_ids = None
    else:
        config.forced_decoder_ids = [[1, special.no_timestamps]]
    return config


def assign_weights(model: "TFWhisperForConditionalGeneration", weights: dict) -> None:
    """Sets every weight of a built Keras model from a path -> array (or variable) map, one to one."""
    import tensorflow as tf

    model.build_in_name_scope()
    check_weights(weights, model.config)
    for path, (variable, transposed) in _model_weights(model).items():
        variable.assign(tf.transpose(weights[path]) if transposed else weights[path])


def model_arrays(model: "TFWhisperForConditionalGeneration") -> dict[str, np.ndarray]:
    """The weights of a Hugging Face TF model as arrays at the checkpoint's paths and layouts."""
    return {path: np.ascontiguousarray(variable.numpy().T) if transposed else variable.numpy()
            for path, (variable, transposed) in _model_weights(model).items()}


def _model_weights(model: "TFWhisperForConditionalGeneration") -> dict[str, tuple["tf.Variable", bool]]:
    """Each variable of the TF model by its checkpoint path, and whether the two layouts are transposes: a dense
    layer's TF `kernel` [in, out] is the checkpoint's `weight` [out, in]."""
    prefix = model.name + "/"
    weights = {}
    for variable in model.weights:
        path = variable.name.removeprefix(prefix).removesuffix(":0")
        dense = path.endswith("/kernel") and len(variable.shape) == 2
        weights[path.removesuffix("kernel") + "weight" if dense else path] = (variable, dense)
    return weights
