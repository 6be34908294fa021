"""Whisper's tokenizer and special tokens, on the `tokenizers` library alone (runtime side)."""

from __future__ import annotations

import array
import gzip
import itertools
import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:  # the library is imported when text is first encoded: decoding never needs it
    from tokenizers import Tokenizer

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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet, which Whisper's vocabulary is written in: printable bytes stand for
    themselves, the others for the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


# Byte-level BPE's characters (code points up to U+0143) -> the bytes they stand for, as an array: the whole
# vocabulary's bytes are one look-up of its code points.
_BYTE_OF_CHARACTER = np.zeros(0x144, np.uint8)
_BYTE_OF_CHARACTER[[ord(character) for character in _bytes_to_unicode().values()]] = list(_bytes_to_unicode())
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
    """Text <-> token ids with the model's own `tokenizer.json`, plus Whisper's prompt conventions.

    Decoding, which every window needs, joins slices of one string of every ordinary token's bytes. The
    `tokenizers` library's tokenizer took 30 MB resident for base's tokenizer.json, and is built only when text
    is encoded (an initial prompt)."""

    def __init__(self, vocabulary: dict[str, int], multilingual: bool, load: Callable[[], Tokenizer]):
        """`vocabulary`: every token's byte-level string (added tokens included) -> id; `load` builds the encoder."""
        self.multilingual = multilingual
        controls = {i: t for t, i in vocabulary.items() if t.startswith("<|")}  # the only ids looked up by id
        self.special = SpecialTokens.from_lookup(vocabulary.get, controls.get)
        ordinary: list[str | None] = [None] * self.special.eot
        for token, token_id in vocabulary.items():
            if token_id < self.special.eot:
                ordinary[token_id] = token
        if None in ordinary:
            raise BundleError(f"the tokenizer's ordinary tokens are not numbered 0-{self.special.eot - 1}")
        # Every ordinary token's bytes in one string, a character a byte, and where each token ends in it
        codes = np.frombuffer("".join(ordinary).encode("utf-32-le"), np.uint32)
        if codes.max() >= len(_BYTE_OF_CHARACTER):
            raise BundleError("the tokenizer's vocabulary is not written in byte-level BPE's alphabet")
        self._bytes = _BYTE_OF_CHARACTER[codes].tobytes()
        self._offsets = array.array("I", [0])  # token t is _bytes[_offsets[t] : _offsets[t + 1]]
        self._offsets.extend(itertools.accumulate(len(token) for token in ordinary))
        self._load = load
        self._encoder: Tokenizer | None = None

    @classmethod
    def from_file(cls, path: str | Path, multilingual: bool) -> "WhisperTokenizer":
        try:
            spec = json.loads(_read_json(path))
            vocabulary = {**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}
            decoder = spec["decoder"]["type"]
            if decoder != "ByteLevel":
                raise BundleError(f"{path} is not Whisper's byte-level BPE tokenizer (its decoder is {decoder})")
            return cls(vocabulary, multilingual, lambda: _library_tokenizer(path))
        except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as e:  # byte alphabet: KeyError
            raise BundleError(f"cannot read the tokenizer {path}: {type(e).__name__}: {e}") from None

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, multilingual: bool) -> "WhisperTokenizer":
        return cls(tokenizer.get_vocab(with_added_tokens=True), multilingual, lambda: tokenizer)

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
        if self._encoder is None:
            self._encoder = self._load()
        return self._encoder.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Iterable[int]) -> str:
        """Text of the ordinary tokens only (control and timestamp tokens dropped); bytes that are not whole UTF-8
        characters become U+FFFD, as in the `tokenizers` library's byte-level decoder."""
        data, offsets, eot = self._bytes, self._offsets, self.special.eot
        return b"".join(data[offsets[t] : offsets[t + 1]] for t in token_ids if t < eot).decode("utf-8", "replace")


def _read_json(path: str | Path) -> str:
    """A tokenizer.json's text, or a tokenizer.json.gz's (a bundle's, format 7)."""
    data = Path(path).read_bytes()
    return (gzip.decompress(data) if str(path).endswith(".gz") else data).decode("utf-8")


def _library_tokenizer(path: str | Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_read_json(path))
