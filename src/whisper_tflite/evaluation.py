"""Scoring against reference transcripts: the speech manifest, Whisper's normalizers, WER and CER.

Used by the tests and the benchmarks; needs the `dev` extra (jiwer, whisper-normalizer).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE

CER_LANGUAGES = {"ja", "zh", "ko"}  # no spaces between words: score characters


@dataclass(frozen=True)
class Clip:
    path: Path
    language: str
    duration: float
    sample_rate: int
    reference: str  # empty where no trustworthy transcript exists (parity tests only)

    @property
    def name(self) -> str:
        return self.path.name


def read_manifest(folder: Path) -> list[Clip]:
    """Rows of `manifest.tsv` (file, language, duration_s, sample_rate, reference_text, ...) in file order."""
    with open(folder / "manifest.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [
        Clip(folder / r["file"], r["language"], float(r["duration_s"]), int(r["sample_rate"]), r["reference_text"])
        for r in rows
    ]


def normalize(text: str, language: str) -> str:
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()
    return " ".join(normalizer(text).split())


def error_rate(references: list[str], hypotheses: list[str], language: str) -> float:
    """Corpus WER (CER for ja/zh/ko) after Whisper's normalizer for the language."""
    import jiwer

    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    if language in CER_LANGUAGES:
        return jiwer.cer([r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps])
    return jiwer.wer(refs, hyps)


def approximate_log_mel_nfft512(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """The log-mel others ship for TFLite: `tf.signal.stft` with a power-of-two 512-point FFT instead of
    Whisper's 400. Kept only to show its error beside the exact graph; needs TensorFlow and transformers."""
    import tensorflow as tf
    from transformers.audio_utils import mel_filter_bank

    from .audio import HOP_LENGTH, N_FRAMES, N_SAMPLES

    pcm = tf.constant(audio[:N_SAMPLES], tf.float32)
    stft = tf.signal.stft(pcm, frame_length=512, frame_step=HOP_LENGTH, fft_length=512, pad_end=True)
    power = tf.abs(stft[:N_FRAMES]) ** 2
    filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
    log_spec = tf.math.log(tf.maximum(tf.matmul(power, filters.astype(np.float32)), 1e-10)) / np.log(10.0)
    log_spec = tf.maximum(log_spec, tf.reduce_max(log_spec) - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy().T[np.newaxis]


@dataclass(frozen=True)
class Recording:
    """Clips joined into one long 16 kHz recording, with where each clip's speech lies in it."""

    name: str
    audio: np.ndarray
    spans: list[tuple[float, float, str]]  # (start s, end s, reference text) of each clip

    @property
    def reference(self) -> str:
        return " ".join(text for _, _, text in self.spans)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def join_clips(name: str, clips: list[Clip], load, gap_seconds: float = 1.0) -> Recording:
    """The clips one after another with `gap_seconds` of digital silence between them; `load(clip)` gives a
    clip's 16 kHz samples."""
    gap = np.zeros(round(gap_seconds * SAMPLE_RATE), np.float32)
    return _joined(name, clips, load, lambda i: gap)


def _joined(name: str, clips: list[Clip], load, gap_before) -> Recording:
    """The clips one after another, `gap_before(i)` (samples) between clip i - 1 and clip i."""
    pieces, spans, position = [], [], 0
    for i, clip in enumerate(clips):
        if i:
            gap = gap_before(i)
            pieces.append(gap)
            position += len(gap)
        samples = load(clip)
        spans.append((position / SAMPLE_RATE, (position + len(samples)) / SAMPLE_RATE, clip.reference))
        pieces.append(samples)
        position += len(samples)
    return Recording(name, np.concatenate(pieces), spans)


GAP_KINDS = ("silence", "noise", "hum", "tone")


def gap_sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """What lies between speech in real recordings: digital silence, low noise (-50 dBFS RMS), 50 Hz mains hum
    with its harmonics (-30 dBFS), or a sustained A major chord (-20 dBFS)."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if kind == "silence":
        sound = np.zeros_like(t)
    elif kind == "noise":
        sound = rng.normal(0.0, 10 ** (-50 / 20), t.size)
    elif kind == "hum":
        sound = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3)) * 0.03
    elif kind == "tone":
        sound = sum(np.sin(2 * np.pi * f * t) for f in (440.0, 554.37, 659.25)) * 0.05
    else:
        raise ValueError(f"unknown gap kind {kind!r}: choose one of {', '.join(GAP_KINDS)}")
    return sound.astype(np.float32)


def gapped_recording(name: str, clips: list[Clip], load, gap_seconds: tuple[float, float] = (8.0, 25.0),
                     seed: int = 0) -> Recording:
    """The clips one after another, each gap a random length in `gap_seconds` of the next of `GAP_KINDS` in turn
    (seeded: the same recording every time)."""
    rng = np.random.default_rng(seed)
    return _joined(name, clips, load,
                   lambda i: gap_sound(GAP_KINDS[(i - 1) % len(GAP_KINDS)], rng.uniform(*gap_seconds), rng))


@dataclass(frozen=True)
class OracleSegment:
    start: float
    end: float
    text: str
    temperature: float
    avg_logprob: float
    words: list | None = None  # faster-whisper's Word tuples (start, end, word, probability), when asked


def faster_whisper_transcribe(model: str | Path, audio: np.ndarray, compute_type: str, threads: int = 2,
                              **options) -> list[OracleSegment]:
    """faster-whisper's segments for 16 kHz samples, greedy (beam_size=1, best_of=1) unless `options` say
    otherwise: the independent oracle for decoding behaviour (long-form, fallback). Models are cached."""
    options = {"beam_size": 1, "best_of": 1, "language": "en", **options}
    segments, _ = _faster_whisper_model(model, compute_type, threads).transcribe(audio, **options)
    return [OracleSegment(s.start, s.end, s.text, s.temperature, s.avg_logprob, s.words) for s in segments]


def faster_whisper_batched(model: str | Path, audio: np.ndarray, compute_type: str, threads: int = 2,
                           **options) -> list[OracleSegment]:
    """faster-whisper's `BatchedInferencePipeline` segments for 16 kHz samples, with its defaults (batch_size 8,
    beam 5) unless `options` say otherwise, in English: the oracle of batched transcription."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(_faster_whisper_model(model, compute_type, threads))
    segments, _ = pipeline.transcribe(audio, **{"language": "en", **options})
    return [OracleSegment(s.start, s.end, s.text, s.temperature, s.avg_logprob, s.words) for s in segments]


def _faster_whisper_model(model: str | Path, compute_type: str, threads: int):
    key = (str(model), compute_type, threads)
    if key not in _FASTER_WHISPER:
        from faster_whisper import WhisperModel

        _FASTER_WHISPER[key] = WhisperModel(str(model), device="cpu", compute_type=compute_type,
                                            cpu_threads=threads, num_workers=1)
    return _FASTER_WHISPER[key]


@dataclass(frozen=True)
class WordAgreement:
    """How one system's words agree with another's: words matched by their normalized text in order (difflib),
    and the start and end differences of the matched ones."""

    words: int  # of the reference system
    matched: int
    start_differences: np.ndarray  # seconds, absolute
    end_differences: np.ndarray

    @property
    def same(self) -> float:
        return self.matched / self.words if self.words else 1.0

    def summary(self) -> str:
        s, e = self.start_differences, self.end_differences
        return (f"same words {self.matched}/{self.words} ({self.same:.1%}); |start difference| median "
                f"{np.median(s):.3f} s, p95 {np.percentile(s, 95):.3f} s, max {s.max():.2f} s; |end difference| "
                f"median {np.median(e):.3f} s, p95 {np.percentile(e, 95):.3f} s, max {e.max():.2f} s")


def word_agreement(pairs: list[tuple[list, list]]) -> WordAgreement:
    """`pairs`: per recording, (ours, theirs) as sequences of words with `start`, `end` and `word`."""
    import difflib
    import string

    def key(word) -> str:
        return word.word.strip().lower().strip(string.punctuation + "“”¿")

    total, matched, starts, ends = 0, 0, [], []
    for ours, theirs in pairs:
        total += len(theirs)
        matcher = difflib.SequenceMatcher(None, [key(w) for w in ours], [key(w) for w in theirs], autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                a, b = ours[block.a + k], theirs[block.b + k]
                matched += 1
                starts.append(abs(a.start - b.start))
                ends.append(abs(a.end - b.end))
    return WordAgreement(total, matched, np.array(starts), np.array(ends))


_FASTER_WHISPER: dict = {}
