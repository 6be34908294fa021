"""The official Whisper family's dimensions, as openai/whisper's model cards and distil-whisper publish them.

One table for the code (random-weight checkpoints, the sizes benchmark), the tests and docs/quantization.md.
Every member has a 30 s window (1500 audio positions), 448 text positions and a feed-forward width of 4 x d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

N_AUDIO_CTX = 1500
N_TEXT_CTX = 448


@dataclass(frozen=True)
class WhisperSize:
    name: str
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    n_mels: int = 80
    n_vocab: int = 51865  # 51864 for the English-only (.en) members, 51866 for large-v3's (<|yue|> added)

    @property
    def english_only(self) -> bool:
        return self.n_vocab == 51864

    @property
    def parameters(self) -> int:
        """Weights of the checkpoint (the output projection is tied to the token embedding)."""
        d, ffn = self.d_model, 4 * self.d_model
        attention = 4 * d * d + 3 * d  # q, k, v, out; k has no bias
        mlp = 2 * d * ffn + ffn + d
        norms = 2 * d
        encoder = (3 * self.n_mels * d + d) + (3 * d * d + d) + N_AUDIO_CTX * d
        encoder += self.encoder_layers * (attention + mlp + 2 * norms) + norms
        decoder = self.n_vocab * d + N_TEXT_CTX * d
        decoder += self.decoder_layers * (2 * attention + mlp + 3 * norms) + norms
        return encoder + decoder

    def shrunk(self, layers: int = 2) -> "WhisperSize":
        """The same width, heads, mel bins and vocabulary with `layers` encoder and decoder layers: every shape
        of the member but depth, for tests that must convert it in seconds."""
        return WhisperSize(f"{self.name}-{layers}layers", self.d_model, self.heads, layers, layers, self.n_mels,
                           self.n_vocab)


def _family() -> dict[str, WhisperSize]:
    sizes = [
        WhisperSize("tiny", 384, 6, 4, 4),
        WhisperSize("base", 512, 8, 6, 6),
        WhisperSize("small", 768, 12, 12, 12),
        WhisperSize("medium", 1024, 16, 24, 24),
    ]
    english = [WhisperSize(f"{s.name}.en", s.d_model, s.heads, s.encoder_layers, s.decoder_layers, n_vocab=51864)
               for s in sizes]
    large = [
        WhisperSize("large-v1", 1280, 20, 32, 32),
        WhisperSize("large-v2", 1280, 20, 32, 32),
        WhisperSize("large-v3", 1280, 20, 32, 32, n_mels=128, n_vocab=51866),
        WhisperSize("large-v3-turbo", 1280, 20, 32, 4, n_mels=128, n_vocab=51866),
        WhisperSize("distil-large-v3", 1280, 20, 32, 2, n_mels=128, n_vocab=51866),
    ]
    return {size.name: size for size in sizes + english + large}


SIZES = _family()
