"""Whisper's tokenizer and special tokens, on the `tokenizers` library alone (runtime side)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from tokenizers import Tokenizer

from .errors import BundleError

# openai/whisper's tokenizer.py: language names, so that `English` or `castilian` work where codes do.
LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}

TO_LANGUAGE_CODE = {
    **{language: code for code, language in LANGUAGES.items()},
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}


_LANGUAGE_TOKEN = re.compile(r"^<\|([a-z]{2,3})\|>$")
TIMESTAMP_STEP = 0.02  # seconds per timestamp token


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's control tokens; English-only and multilingual vocabularies place them differently."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    languages: dict[str, int]  # language code -> token id, in the model's order

    @classmethod
    def from_lookup(cls, token_to_id: Callable[[str], int | None], id_to_token: Callable[[int], str | None]):
        def need(*names: str) -> int:
            for name in names:
                token_id = token_to_id(name)
                if token_id is not None:
                    return token_id
            raise BundleError(f"the tokenizer lacks Whisper's special token {names[0]}")

        sot = need("<|startoftranscript|>")
        translate = need("<|translate|>")
        no_timestamps = need("<|notimestamps|>")
        languages = {}
        for token_id in range(sot + 1, translate):
            match = _LANGUAGE_TOKEN.match(id_to_token(token_id) or "")
            if match:
                languages[match.group(1)] = token_id
        return cls(
            eot=need("<|endoftext|>"),
            sot=sot,
            translate=translate,
            transcribe=need("<|transcribe|>"),
            sot_lm=need("<|startoflm|>"),
            sot_prev=need("<|startofprev|>"),
            no_speech=need("<|nospeech|>", "<|nocaptions|>"),
            no_timestamps=no_timestamps,
            timestamp_begin=no_timestamps + 1,
            languages=languages,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class WhisperTokenizer:
    """Text <-> token ids with the model's own `tokenizer.json`, plus Whisper's prompt conventions."""

    def __init__(self, tokenizer: Tokenizer, multilingual: bool):
        self.tokenizer = tokenizer
        self.multilingual = multilingual
        self.special = SpecialTokens.from_lookup(tokenizer.token_to_id, tokenizer.id_to_token)

    @classmethod
    def from_file(cls, path: str | Path, multilingual: bool) -> "WhisperTokenizer":
        try:
            return cls(Tokenizer.from_file(str(path)), multilingual)
        except Exception as e:  # tokenizers raises a bare Exception for unreadable JSON
            raise BundleError(f"cannot read the tokenizer {path}: {e}") from None

    @property
    def languages(self) -> list[str]:
        return list(self.special.languages) if self.multilingual else ["en"]

    @staticmethod
    def language_code(language: str) -> str:
        """A code as given (`de`), or the code of a name (`German`, `castilian`), as openai-whisper accepts."""
        return TO_LANGUAGE_CODE.get(language.lower(), language.lower())

    def prompt(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        """The start-of-transcript sequence: sot [language task] [notimestamps]."""
        tokens = [self.special.sot]
        if self.multilingual:
            if language is not None:
                tokens.append(self.special.languages[language])
            tokens.append(self.special.translate if task == "translate" else self.special.transcribe)
        if not timestamps:
            tokens.append(self.special.no_timestamps)
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of ordinary text (an initial prompt), without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Iterable[int]) -> str:
        """Text of the ordinary tokens only (control and timestamp tokens dropped)."""
        return self.tokenizer.decode([t for t in token_ids if t < self.special.eot], skip_special_tokens=False)
