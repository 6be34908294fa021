"""Scoring against reference transcripts: the speech manifest, Whisper's normalizers, WER and CER.

Used by the tests and the benchmarks; needs the `dev` extra (jiwer, whisper-normalizer).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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
