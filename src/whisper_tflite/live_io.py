"""Audio in and text out for `whisper-tflite stream`: raw 16 kHz mono s16le PCM from stdin (a WAV header, as
arecord writes by default, is read and checked) or a microphone, and the committed words as text, TSV or JSON
lines, with the tentative tail shown on a terminal (runtime side: no TensorFlow)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import sys
import threading
from typing import TextIO

import numpy as np

from .audio import SAMPLE_RATE
from .errors import AudioError, UsageError
from .runtime.live import LiveUpdate
from .runtime.timing import SENTENCE_END_MARKS

READ_BYTES = 6400  # 0.2 s of s16le at 16 kHz: what one read of stdin waits for at most
MIC_BLOCK = 1600  # samples a microphone callback gives: 0.1 s
STOP_POLL = 0.1  # seconds: how often a wait for audio looks whether Ctrl-C was pressed
# Containers piped in by mistake, by their first bytes (a WAV header is read, not refused)
CONTAINERS = {b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3", b"\x1aE\xdf\xa3": "Matroska/WebM", b"FORM": "AIFF",
              b"#!AMR": "AMR", b".snd": "AU", b"RIFX": "big-endian WAV"}
RAW_HINT = "give raw 16 kHz mono s16le PCM (ffmpeg -i FILE -f s16le -ar 16000 -ac 1 -)"


class Incoming:
    """Samples as they arrive, put by a thread (stdin's reader, a microphone's callback); `take` waits for them.
    An input that ends with an error keeps it in `error` for after its audio."""

    def __init__(self):
        self._blocks: queue.Queue = queue.Queue()
        self._held = np.zeros(0, np.int16)
        self.ended = False
        self.error: Exception | None = None

    def put(self, block: np.ndarray) -> None:
        self._blocks.put(block)

    def end(self, error: Exception | None = None) -> None:
        self._blocks.put(_End(error))

    def take(self, at_least: int = 0, at_most: int | None = None, stop: threading.Event | None = None) -> np.ndarray:
        """Waits until `at_least` samples have come (or the end, or `stop`), then gives what has come, at most
        `at_most`."""
        while len(self._held) < at_least and not self.ended and not (stop is not None and stop.is_set()):
            try:
                self._receive(self._blocks.get(timeout=STOP_POLL))
            except queue.Empty:
                pass
        while not self.ended:  # and whatever else came meanwhile
            try:
                self._receive(self._blocks.get_nowait())
            except queue.Empty:
                break
        at_most = len(self._held) if at_most is None else at_most
        taken, self._held = self._held[:at_most], self._held[at_most:]
        return taken

    @property
    def exhausted(self) -> bool:
        """The input has ended and every sample was taken."""
        return self.ended and not len(self._held)

    def _receive(self, item) -> None:
        if isinstance(item, _End):
            self.ended, self.error = True, item.error
        else:
            self._held = np.concatenate([self._held, item])


class _End:
    def __init__(self, error: Exception | None):
        self.error = error


def read_stdin(incoming: Incoming, fd: int | None = None) -> threading.Thread:
    """Reads s16le PCM from stdin in a thread into `incoming`, so a pipe never fills while a chunk is decoded."""
    fd = sys.stdin.fileno() if fd is None else fd
    thread = threading.Thread(target=_read_pcm, args=(fd, incoming), daemon=True, name="stdin-pcm")
    thread.start()
    return thread


def _read_pcm(fd: int, incoming: Incoming) -> None:
    try:
        head = _read_at_least(fd, 12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            _read_wav_header(fd)
            head = b""
        container = "MP4" if head[4:8] == b"ftyp" else \
            next((name for magic, name in CONTAINERS.items() if head.startswith(magic)), None)
        if container is not None:
            raise AudioError(f"stdin: {container} data, not raw PCM: {RAW_HINT}")
        carry = head
        while True:  # whole samples as they come; an odd byte waits for its pair
            data = os.read(fd, READ_BYTES)
            carry += data
            usable = len(carry) // 2 * 2
            if usable:
                incoming.put(np.frombuffer(carry[:usable], "<i2").copy())
            carry = carry[usable:]
            if not data:
                break
        if carry:
            raise AudioError(f"stdin: an odd number of bytes at the end: not 16-bit PCM; {RAW_HINT}")
        incoming.end()
    except AudioError as e:
        incoming.end(e)
    except OSError as e:
        incoming.end(AudioError(f"stdin: cannot read it ({e.strerror or e})"))


def _read_at_least(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        more = os.read(fd, count - len(data))
        if not more:
            break
        data += more
    return data


def _read_wav_header(fd: int) -> None:
    """Reads a WAV header's chunks after its first 12 bytes up to its data (arecord writes one unless given
    -t raw), and checks that they say 16 kHz mono 16-bit PCM."""
    fmt = None
    while True:
        chunk = _read_at_least(fd, 8)
        if len(chunk) < 8:
            raise AudioError("stdin: a WAV header without audio data")
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"data":
            break
        if size > 1 << 20:
            raise AudioError(f"stdin: a WAV header with a {size}-byte {name!r} chunk: not a WAV stream")
        body = _read_at_least(fd, size + size % 2)
        if name == b"fmt " and len(body) >= 16:
            fmt = struct.unpack("<HHIIHH", body[:16])
    if fmt is None:
        raise AudioError("stdin: a WAV header without its fmt chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag not in (1, 0xFFFE) or bits != 16 or channels != 1 or rate != SAMPLE_RATE:
        kind = "PCM" if tag in (1, 0xFFFE) else "float" if tag == 3 else f"format {tag}"
        raise AudioError(f"stdin: WAV of {rate} Hz, {channels} channel(s), {bits}-bit {kind}: give 16 kHz mono "
                         "16-bit PCM (arecord -f S16_LE -r 16000 -c 1, or ffmpeg -f s16le -ar 16000 -ac 1)")


def open_microphone(incoming: Incoming):
    """The default input device at 16 kHz mono, its blocks going into `incoming`; started. Needs sounddevice
    (the mic extra), imported here only."""
    try:
        import sounddevice
    except ModuleNotFoundError:
        raise UsageError("--mic needs sounddevice: pip install 'whisper-tflite[mic]'") from None
    except OSError as e:  # sounddevice is there, PortAudio is not
        raise UsageError(f"--mic: {e}") from None

    def callback(block, frames, time_info, status):
        incoming.put(block[:, 0].copy())

    try:
        stream = sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=MIC_BLOCK,
                                         callback=callback)
        stream.start()
    except sounddevice.PortAudioError as e:
        raise UsageError(f"--mic: the default input device does not record 16 kHz mono ({e})") from None
    return stream


class LiveWriter:
    """Writes each update's committed words as they come: txt, a sentence a line; tsv, a row an update (start,
    end in ms, text, after a header); json, an object a line (start, end, text, words). On a terminal the
    tentative tail follows them, dimmed, and is redrawn at each update (txt lines are wrapped to fit)."""

    def __init__(self, fmt: str, out: TextIO = sys.stdout, terminal: bool | None = None):
        self.fmt = fmt
        self.out = out
        self.terminal = out.isatty() if terminal is None else terminal
        self.width = shutil.get_terminal_size().columns if self.terminal else 0
        self.line = ""  # txt: the current line's committed text
        self.shown = False  # a tentative tail is drawn after it
        if fmt == "tsv":
            self.out.write("start\tend\ttext\n")

    def write(self, update: LiveUpdate) -> None:
        self._erase()
        words = update.committed
        if words and self.fmt == "txt":
            for word in words:
                self._add_word(word.word)
        elif words and self.fmt == "tsv":
            self.out.write(f"{round(words[0].start * 1000)}\t{round(words[-1].end * 1000)}\t{update.text.strip()}\n")
        elif words:
            entry = {"start": words[0].start, "end": words[-1].end, "text": update.text,
                     "words": [{"start": w.start, "end": w.end, "word": w.word, "probability": round(w.probability, 4)}
                               for w in words]}
            self.out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if self.terminal and update.tentative:
            tail = "".join(w.word for w in update.tentative)
            tail = tail if self.line else tail.lstrip()
            room = self.width - len(self.line) - 1
            if room > 3:
                tail = tail if len(tail) <= room else "…" + tail[len(tail) - room + 1:]
                self.out.write(f"\x1b[2m{tail}\x1b[0m")
                self.shown = True
        self.out.flush()

    def close(self) -> None:
        self._erase()
        if self.line:
            self.out.write("\n")
            self.line = ""
        self.out.flush()

    def _add_word(self, word: str) -> None:
        text = word if self.line else word.lstrip()
        if self.terminal and self.line and len(self.line) + len(text) >= self.width:
            self.out.write("\n")
            self.line, text = "", word.lstrip()
        self.out.write(text)
        self.line += text
        if text.rstrip().endswith(tuple(SENTENCE_END_MARKS)):
            self.out.write("\n")
            self.line = ""

    def _erase(self) -> None:
        """Clears the tentative tail: the current line is drawn again without it."""
        if self.shown:
            self.out.write("\r\x1b[K" + self.line)
            self.shown = False
