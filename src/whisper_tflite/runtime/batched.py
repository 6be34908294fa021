"""Batched transcription, as faster-whisper 1.2.1's `BatchedInferencePipeline`: the speech Silero VAD finds, merged
into chunks of up to 30 s, each decoded on its own (no previous text, no timestamps: one segment a chunk), several
chunks at once on the bundle's decoder_chunks model.

As faster-whisper's pipeline: the VAD options default to max_speech_duration_s=30 and min_silence_duration_ms=160;
each chunk's log-mel is normalized on its own and zero-padded to 30 s; the language, when it must be detected, is
that of the first 30 s of the chunks' log-mels (with `multilingual`, each chunk's own); the prompt is the hotwords
and the initial prompt's tokens (without the leading space the sequential path adds) and the start-of-transcript
sequence with <|notimestamps|>; every chunk is beam searched (greedy with beam_size 1) at temperature 0, without
fallback, with the logit options (suppress_tokens, suppress_blank, repetition_penalty, no_repeat_ngram_size) and
max_new_tokens, and gives one segment from its start to its end, mapped back to the original audio; words are
aligned chunk by chunk. The prefix, max_initial_timestamp and hallucination_silence_threshold do nothing, as there.

Where it deliberately differs: chunks whose text is empty give no segment (faster-whisper yields an empty one);
times are mapped back to the millisecond, and words are clamped into their segment (as in the sequential path);
chunks are always decoded without timestamps (faster-whisper's default there: without_timestamps=True).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..audio import FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from ..bundle import CHUNKS_MODEL
from ..errors import UsageError
from ..tokens import WhisperTokenizer
from .decoding import BeamSearch, DecodingResult, LogitFilter, detect_language, feed_prompt, length_limit, logsumexp
from .models import LiteRtModel, TfliteStepper, open_compiled, step_rows
from .timing import add_word_timestamps
from .vad import VadOptions, collect_chunks

if TYPE_CHECKING:  # transcriber.py imports this module
    from .transcriber import TranscriptionResult

CHUNK_LENGTH = 30  # seconds: faster-whisper's chunk_length
# Chunks that search one at a time on the stepper rather than as rows: a call of tiny.en's rows (8 chunks of 5
# beams) costs as much as five of decoder_batch_short (one chunk's beams), so four chunks or fewer cost less one
# after another, whatever each has left to decode.
FEW_CHUNKS = 4


def batched_vad_options(parameters: VadOptions | dict | None) -> VadOptions:
    """faster-whisper's batched VAD options: None -> max_speech_duration_s=30, min_silence_duration_ms=160; a dict
    -> its fields, max_speech_duration_s=30; VadOptions -> as given."""
    if parameters is None:
        return VadOptions(max_speech_duration_s=CHUNK_LENGTH, min_silence_duration_ms=160)
    if isinstance(parameters, dict):
        return VadOptions.of({**parameters, "max_speech_duration_s": CHUNK_LENGTH})
    return VadOptions.of(parameters)


@dataclass
class Chunk:
    """Speech merged into a piece of up to 30 s: where it lies in the joined speech (seconds), and its log-mel."""

    offset: float
    duration: float
    log_mel: np.ndarray  # [n_mels, frames], normalized by its own loudest frame

    @property
    def seek(self) -> int:
        return int(self.offset * FRAMES_PER_SECOND)

    @property
    def window(self) -> np.ndarray:
        """[1, n_mels, 3000]: the log-mel zero-padded (or cut) to 30 s in the log-mel domain."""
        frames = min(N_FRAMES, self.log_mel.shape[1])
        window = np.zeros((1, self.log_mel.shape[0], N_FRAMES), np.float32)
        window[0, :, :frames] = self.log_mel[:, :frames]
        return window


class ChunkRows:
    """The decoder_chunks model of a bundle: `beams` rows for each of `chunks` windows, one call a token.

    Each window is encoded on its own; compiled, the encoder writes its cross keys into the window's row of the
    model's input, else they are copied there; the values are copied transposed (the graph's layout). A window's
    own models (prefill, alignment) get its cross K/V back from the rows when they need them (`hold`)."""

    def __init__(self, stepper: TfliteStepper):
        bundle = stepper.bundle
        self.stepper = stepper
        self.model = open_compiled(bundle, CHUNKS_MODEL, stepper.threads, stepper._opened) if stepper.compiled \
            else LiteRtModel(bundle, CHUNKS_MODEL, stepper.threads, stepper._opened)
        self.chunks = self.model.input_shapes["cross_k_0"][0]
        self.beams = self.model.input_shapes["tokens"][0] // self.chunks
        self.slots = self.model.input_shapes["self_k_0"][2]
        self.keys = [name for name in stepper.cross_names if name.startswith("cross_k_")]
        self.values = [name for name in stepper.cross_names if name.startswith("cross_v_")]
        stepper._zero_caches(self.model)
        self._outputs = None
        if stepper.compiled:  # the encoder's output buffers that write a window's keys into its row
            self._outputs = [stepper.encoder.output_buffers({name: self.model.input_view(name)[c]
                                                             for name in self.keys})
                             for c in range(self.chunks)]
        self.offset = 0

    def encode(self, index: int, window: np.ndarray) -> None:
        """Encodes a window [1, n_mels, 3000] into row `index` of the cross K/V."""
        encoder = self.stepper.encoder
        if self._outputs is not None:
            encoder.run(self._outputs[index], log_mel=window)
        else:
            encoder.run(log_mel=window)
            for name in self.keys:
                self.model.input_view(name)[index] = encoder.output_view(name)
        for name in self.values:
            self.model.input_view(name)[index] = encoder.output_view(name).transpose(0, 2, 1)

    def hold(self, index: int) -> None:
        """Window `index` becomes the stepper's begun window (its prefill and alignment read it)."""
        self.stepper.begin_encoded({**{name: self.model.input_view(name)[index] for name in self.keys},
                                    **{name: self.model.input_view(name)[index].transpose(0, 2, 1)
                                       for name in self.values}})

    def take_prefix(self, index: int) -> None:
        """Window `index`'s beams take the sequence the stepper has fed on its own (a prefilled prompt)."""
        rows = slice(index * self.beams, (index + 1) * self.beams)
        for cache in self.stepper.rows.values():
            self.model.input_view(cache)[rows, :, : self.stepper.offset] = \
                self.stepper.decoder.input_view(cache)[:, : self.stepper.offset]

    def step(self, tokens: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """Feeds tokens[r] to row r (which first takes over row origins[r]'s sequence) -> logits [rows, vocab]."""
        logits = step_rows(self.model, self.stepper.rows, self.offset, tokens, origins)
        self.offset += 1
        return logits


class BatchedDecoder:
    """Batched transcription on one worker's models (its `TfliteStepper`)."""

    def __init__(self, stepper: TfliteStepper, tokenizer: WhisperTokenizer, suppress: list[int],
                 begin_suppress: list[int]):
        self.stepper = stepper
        self.tokenizer = tokenizer
        self.suppress = suppress  # the checkpoint's suppress_tokens (-1) and begin_suppress_tokens (blank)
        self.begin_suppress = begin_suppress
        self.filter: LogitFilter | None = None  # the logit rules of the transcription under way
        self._rows: ChunkRows | None = None

    @property
    def rows(self) -> ChunkRows:
        """The decoder_chunks model, loaded at the first batched transcription (its caches and cross K/V are
        large: 0.26 GB for tiny.en's 8 windows of 5 beams)."""
        if self._rows is None:
            self._rows = ChunkRows(self.stepper)
        return self._rows

    def capacity(self) -> tuple[int, int]:
        """The chunks the bundle's decoder_chunks model decodes at once, and the beams it searches a chunk."""
        shapes = {spec["name"]: spec["shape"] for spec in self.stepper.bundle.models[CHUNKS_MODEL]["inputs"]}
        chunks = shapes["cross_k_0"][0]
        return chunks, shapes["tokens"][0] // chunks

    def check(self, beam_size: int) -> None:
        """Refuses more beams than the bundle's decoder_chunks model has rows for."""
        beams = self.capacity()[1]
        if beam_size > beams:
            raise UsageError(f"beam_size {beam_size} is larger than this bundle's {CHUNKS_MODEL} model searches "
                             f"({beams} beams a chunk)")
        if 1 < beam_size and self.stepper.batch_size < beam_size:  # the chunks that finish alone search there
            raise UsageError(f"beam_size {beam_size} needs the decoder_batch model, which this bundle lacks "
                             "(convert it again, or use beam_size 1)")

    def chunks(self, audio: np.ndarray, speech: list[dict]) -> list[Chunk]:
        """The speech merged into chunks of up to 30 s (faster-whisper's `collect_chunks`), with their log-mels."""
        pieces, metadata = collect_chunks(audio, speech, max_duration=CHUNK_LENGTH)
        return [Chunk(entry["offset"], entry["duration"], self.stepper.whole_log_mel(piece))
                for piece, entry in zip(pieces, metadata) if len(piece) >= HOP_LENGTH]

    def language(self, chunks: list[Chunk], language: str | None) -> tuple[str, float]:
        """The language given, else (multilingual models) the one of the first 30 s of the chunks' log-mels."""
        if not self.tokenizer.multilingual:
            return "en", 1.0
        if language is not None:
            return language, 1.0
        count = 1 + int(np.searchsorted(np.cumsum([chunk.log_mel.shape[1] for chunk in chunks]), N_FRAMES))
        log_mel = np.concatenate([chunk.log_mel for chunk in chunks[:count]], axis=1)  # 30 s or all there is
        self.stepper.begin(Chunk(0.0, 0.0, log_mel).window)
        return detect_language(self.stepper, self.tokenizer, self.tokenizer.languages)[0]

    def decode(self, chunks: list[Chunk], prompts: list[list[int]], beam_size: int, patience: float,
               length_penalty: float, max_length: int) -> list[DecodingResult]:
        """Each encoded chunk's (`encode`) best hypothesis after its prompt (`prompts`, of one length: they differ
        in the language at most), up to `rows.chunks` chunks at once, at most `max_length` tokens long
        (`decoding.length_limit`). The chunks searching as rows finish one at a time on the stepper's models,
        whose call costs a fraction of the rows', once only a few are left (`FEW_CHUNKS`) or the rows' cache slots
        are full; a batch of a few chunks, or one after an initial prompt too long for the rows, searches that way
        from the start."""
        rows, eot, length = self.rows, self.tokenizer.special.eot, len(prompts[0])
        searches = [BeamSearch(beam_size, patience, max_length, eot) for _ in chunks]
        if length >= rows.slots or len(chunks) <= FEW_CHUNKS:
            no_speech_probs = [self._search_alone(index, search, prompts[index])
                               for index, search in enumerate(searches)]
        else:
            no_speech_probs = self._search_as_rows(searches, prompts)
        return [search.best(length_penalty, self.tokenizer, float(p)) for search, p in zip(searches, no_speech_probs)]

    def _search_as_rows(self, searches: list[BeamSearch], prompts: list[list[int]]) -> np.ndarray:
        """The searches of the encoded chunks, a chunk's beams as its rows; -> the chunks' no-speech
        probabilities."""
        rows, special = self.rows, self.tokenizer.special
        sot_index = prompts[0].index(special.sot)
        rows.offset = 0
        if sot_index:  # the initial prompt, a window at a time on the stepper's prefill
            for index in range(len(searches)):
                rows.hold(index)
                self.stepper.prefill(prompts[index][:sot_index])
                rows.take_prefix(index)
            rows.offset = sot_index
        # each row's prompt from start-of-transcript on; the rows of no chunk take the first chunk's
        starts = np.array([prompt[sot_index:] for prompt in prompts]
                          + [prompts[0][sot_index:]] * (rows.chunks - len(prompts)))
        for position in range(starts.shape[1]):
            logits = rows.step(np.repeat(starts[:, position], rows.beams))
            if position == 0:  # read at start-of-transcript
                firsts = logits[:: rows.beams].astype(np.float64)
                no_speech_probs = np.exp(firsts[:, special.no_speech] - logsumexp(firsts))
        beam_size = searches[0].beam_size
        live = list(range(len(searches)))
        views = [logits[index * rows.beams][np.newaxis] for index in live]  # the prompt's single sequence
        while live:
            filtered = self.filter.rows(np.concatenate(views), [s for i in live for s in searches[i].sequences])
            tokens = np.full(rows.chunks * rows.beams, special.eot)
            origins = np.arange(rows.chunks * rows.beams)
            going, start = {}, 0
            for index in live:
                count = len(searches[index].sequences)
                step = searches[index].advance(filtered[start : start + count])
                start += count
                if step is None:
                    continue
                going[index] = step
                chosen, next_tokens = step
                first, spare = index * rows.beams, rows.beams - beam_size  # spare rows follow the first beam
                origins[first : first + rows.beams] = first + np.concatenate([chosen, np.repeat(chosen[:1], spare)])
                tokens[first : first + rows.beams] = np.concatenate([next_tokens, np.repeat(next_tokens[:1], spare)])
            live = list(going)
            if rows.offset == rows.slots or len(live) <= FEW_CHUNKS:
                for index in live:
                    self._finish_alone(index, searches[index], going[index], from_rows=True)
                break
            logits = rows.step(tokens, origins)
            views = [logits[index * rows.beams : index * rows.beams + beam_size] for index in live]
        return no_speech_probs

    def _search_alone(self, index: int, search: BeamSearch, prompt: list[int]) -> float:
        """Chunk `index`'s search on the stepper from the prompt on; -> its no-speech probability."""
        self.rows.hold(index)
        logits, no_speech_prob = feed_prompt(self.stepper, self.tokenizer, prompt)
        self._finish_alone(index, search, search.advance(self.filter.rows(logits[np.newaxis], search.sequences)),
                           from_rows=False)
        return no_speech_prob

    def _finish_alone(self, index: int, search: BeamSearch, step: tuple[np.ndarray, np.ndarray] | None,
                      from_rows: bool) -> None:
        """Chunk `index`'s search to its end on the stepper: `step` (the beams that go on and their tokens) is fed
        to decoder_step (one beam) or a batch model, after the sequences so far: its beams' cache rows
        (`from_rows`), else what the stepper has fed."""
        if step is None:
            return
        rows, stepper = self.rows, self.stepper
        beams = search.beam_size
        if from_rows:
            rows.hold(index)
            stepper.offset = rows.offset
        offset = stepper.offset
        if beams > 1:
            stepper.fork(offset + search.max_length - search.steps)  # slots for every token left to feed
            spare = stepper.batch_size - beams
        for cache in stepper.rows.values() if from_rows else ():
            sequences = rows.model.input_view(cache)[index * rows.beams : index * rows.beams + beams, :, :offset]
            if beams == 1:
                stepper.decoder.input_view(cache)[:, :offset] = sequences[0]
            else:
                stepper.batch_decoder.input_view(cache)[:beams, :, :offset] = sequences
        while step is not None:
            chosen, tokens = step
            if beams == 1:
                logits = stepper.step(int(tokens[0]))[np.newaxis]
            else:
                logits = stepper.step_batch(np.concatenate([tokens, np.repeat(tokens[:1], spare)]),
                                            np.concatenate([chosen, np.repeat(chosen[:1], spare)]))[:beams]
            step = search.advance(self.filter.rows(logits, search.sequences))

    def add_words(self, index: int, segment, chunk: Chunk, start_sequence: list[int], language: str,
                  last_speech_timestamp: float, options) -> None:
        """The words of a chunk's segment, from one alignment call on its window (held back from the rows)."""
        special = self.tokenizer.special
        text = [t for t in segment.tokens if t < special.eot]
        self.rows.hold(index)
        weights = self.stepper.alignment_weights(start_sequence + [special.no_timestamps] + text + [special.eot])
        if weights is None:  # more text than the context holds (a runaway chunk): no words rather than wrong
            segment.words = []
            return
        add_word_timestamps([segment], weights, self.tokenizer, len(start_sequence),
                            int(math.ceil(chunk.duration) * FRAMES_PER_SECOND), chunk.seek / FRAMES_PER_SECOND,
                            language, last_speech_timestamp, options.prepend_punctuations,
                            options.append_punctuations)

    def transcribe(self, audio: np.ndarray, speech: list[dict], language: str | None, task: str, options,
                   progress: Callable[[int, int], None] | None = None) -> TranscriptionResult:
        """Text and segments of `audio` (16 kHz samples) whose speech the VAD found in `speech` (its chunks, in
        samples), decoded `options.batch_size` chunks at a time (a larger batch than the decoder_chunks model holds
        in calls of what it holds: the chunks are decoded independently); `options`: a `TranscriptionOptions`.
        `progress` is told the mel frames of each batch's chunks and of them all."""
        from .transcriber import Segment, TranscriptionResult, restore_speech_timestamps

        self.check(options.beam_size)
        batch_size = min(options.batch_size, self.capacity()[0])
        from .transcriber import logit_filter, previous_text

        tokenizer = self.tokenizer
        self.filter = logit_filter(tokenizer, options, self.suppress, self.begin_suppress, timestamps=False)
        chunks = self.chunks(audio, speech)
        # Without speech, the language is still detected, on the audio's first 30 s (as with the VAD filter).
        first = chunks or [Chunk(0.0, 0.0, self.stepper.whole_log_mel(audio[: CHUNK_LENGTH * SAMPLE_RATE]))]
        language, language_probability = self.language(first, language)
        previous = [] if options.initial_prompt is None else tokenizer.encode(options.initial_prompt)
        head = previous_text(tokenizer, options.hotwords, previous, self.stepper.n_ctx // 2 - 1)
        max_length = length_limit(len(head) + len(tokenizer.prompt(language, task, False)), self.stepper.n_ctx,
                                  max_new_tokens=options.max_new_tokens)
        segments: list[Segment] = []
        last_speech_timestamp = 0.0
        frames = [chunk.log_mel.shape[1] for chunk in chunks]
        for first in range(0, len(chunks), batch_size):
            batch = chunks[first : first + batch_size]
            for index, chunk in enumerate(batch):
                self.rows.encode(index, chunk.window)
            languages = [language] * len(batch)
            if options.multilingual and tokenizer.multilingual:  # each chunk's own, as faster-whisper's
                for index in range(len(batch)):
                    self.rows.hold(index)
                    languages[index] = detect_language(self.stepper, tokenizer, tokenizer.languages)[0][0]
            prompts = [head + tokenizer.prompt(code, task, timestamps=False) for code in languages]
            results = self.decode(batch, prompts, options.beam_size, options.patience, options.length_penalty,
                                  max_length)
            for index, (chunk, result) in enumerate(zip(batch, results)):
                if not result.text.strip():
                    continue
                segment = Segment(start=round(chunk.offset, 3), end=round(chunk.offset + chunk.duration, 3),
                                  text=result.text, tokens=result.tokens, token_logprobs=result.token_logprobs,
                                  avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
                                  temperature=options.temperature[0], compression_ratio=result.compression_ratio,
                                  seek=chunk.seek, id=len(segments))
                if options.word_timestamps:
                    self.add_words(index, segment, chunk, tokenizer.prompt(languages[index], task, timestamps=True),
                                   languages[index], last_speech_timestamp, options)
                    if segment.words:
                        last_speech_timestamp = segment.end
                        for word in segment.words:  # the heuristics may stretch a word past its segment
                            word.start = min(max(word.start, segment.start), segment.end)
                            word.end = min(max(word.end, word.start), segment.end)
                segments.append(segment)
            if progress is not None:
                progress(sum(frames[first : first + batch_size]), sum(frames))
        restore_speech_timestamps(segments, speech)
        text = "".join(segment.text for segment in segments).strip()
        return TranscriptionResult(text, language, language_probability, segments, len(audio) / SAMPLE_RATE)
