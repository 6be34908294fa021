"""The loaded form of a Whisper checkpoint, whatever its source: a Hugging Face TF model and its companions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..tokens import SpecialTokens

if TYPE_CHECKING:
    from transformers import GenerationConfig, TFWhisperForConditionalGeneration, WhisperFeatureExtractor
    from transformers import WhisperTokenizerFast


@dataclass
class WhisperCheckpoint:
    model: "TFWhisperForConditionalGeneration"
    tokenizer: "WhisperTokenizerFast"
    feature_extractor: "WhisperFeatureExtractor"
    generation_config: "GenerationConfig"
    source: str  # what the user asked for: a bundled name, a folder, a hub id

    @property
    def n_mels(self) -> int:
        return self.model.config.num_mel_bins

    @property
    def multilingual(self) -> bool:
        return self.model.config.vocab_size >= 51865

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
        config = self.model.config
        return [[layer, head] for layer in range(config.decoder_layers // 2, config.decoder_layers)
                for head in range(config.decoder_attention_heads)]

    @property
    def suppress_tokens(self) -> list[int]:
        return list(self.generation_config.suppress_tokens or [])

    @property
    def begin_suppress_tokens(self) -> list[int]:
        return list(self.generation_config.begin_suppress_tokens or [])


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


def assign_weights(model: "TFWhisperForConditionalGeneration", weights: dict[str, np.ndarray]) -> None:
    """Sets every weight of a built Keras model from a name -> array map, one to one."""
    from ..errors import SourceError

    model.build_in_name_scope()
    prefix = model.name + "/"
    names = set()
    for variable in model.weights:
        name = variable.name.removeprefix(prefix).removesuffix(":0")
        names.add(name)
        if name not in weights:
            raise SourceError(f"the checkpoint has no value for {name}")
        value = weights[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise SourceError(f"{name}: checkpoint shape {value.shape} != model shape {tuple(variable.shape)}")
        variable.assign(value)
    extra = set(weights) - names
    if extra:
        raise SourceError(f"the checkpoint has weights the model does not use: {sorted(extra)[:5]}")
