"""LiteRT models of a bundle, run by index with as few copies as possible (no TensorFlow here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # only the older tflite-runtime package (2.14 at the oldest tested): the same interpreter
    from tflite_runtime.interpreter import Interpreter

from ..audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, normalize_log_mel, pad_or_trim
from ..bundle import BATCH_MODELS, Bundle
from ..errors import BundleError
from ..native_log import native_stderr_hidden
from . import compiled as compiled_api
from .pages import release_file_pages, settle_file_pages


class LiteRtModel:
    """One role of a bundle: a signature of its file, run by tensor index with as few copies as possible. Roles of
    one file share its interpreter (`opened`), so its weights are mapped once. Inputs persist between calls, so
    unchanged ones are set once.

    Calls go to the interpreter's own wrapper with the signature's subgraph index: `Interpreter.tensor`, the only
    way to read and write a tensor in place, reaches the first subgraph alone."""

    def __init__(self, bundle: Bundle, role: str, threads: int | None, opened: dict[Path, Interpreter] | None = None):
        path = bundle.path(role)
        key = bundle.signature(role)
        opened = {} if opened is None else opened
        try:
            with native_stderr_hidden():
                if path not in opened:
                    opened[path] = Interpreter(model_path=str(path), num_threads=threads)
                interpreter = opened[path]
                runner = interpreter.get_signature_runner(key)
                self._wrapper = interpreter._interpreter
                self._subgraph = self._wrapper.GetSubgraphIndexFromSignature(key)
                self._wrapper.AllocateTensors(self._subgraph)
            self.file_pages = settle_file_pages(path)
        except (ValueError, RuntimeError) as e:
            reason = str(e).strip().splitlines()[0]
            needs = bundle.models[role].get("min_runtime_version")
            if needs:  # the file's sha256 matched: it is the runtime that cannot run it
                raise BundleError(f"{path} does not load in this runtime ({reason}); it needs TFLite/LiteRT {needs} "
                                  "or newer: update the runtime, or convert with --min-runtime set to "
                                  "yours") from None
            raise BundleError(f"{path} is not a loadable TFLite model ({reason}); convert the bundle again") from None
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        self.inputs = {name: d["index"] for name, d in inputs.items()}
        self.input_shapes = {name: tuple(int(n) for n in d["shape"]) for name, d in inputs.items()}
        self.output_shapes = {name: tuple(int(n) for n in d["shape"]) for name, d in outputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        _check_io(bundle, role, self.input_shapes, self.output_shapes)

    def set(self, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():
            self._wrapper.SetTensor(self.inputs[name], array, self._subgraph)

    def run(self, **arrays: np.ndarray) -> None:
        self.set(**arrays)
        self._wrapper.Invoke(self._subgraph)

    def output(self, name: str) -> np.ndarray:
        """A copy of an output (the interpreter reuses its buffers at the next call)."""
        return self._wrapper.GetTensor(self.outputs[name], self._subgraph)

    def input_view(self, name: str) -> np.ndarray:
        """The input's own buffer, to change in place; valid until the next call (never kept across one)."""
        return self._wrapper.tensor(self._wrapper, self.inputs[name], self._subgraph)

    def output_view(self, name: str) -> np.ndarray:
        """The output's own buffer, to copy from; valid until the next call (never kept across one)."""
        return self._wrapper.tensor(self._wrapper, self.outputs[name], self._subgraph)


def open_compiled(bundle: Bundle, role: str, threads: int | None,
                  opened: dict[Path, compiled_api.CompiledFile]) -> compiled_api.CompiledSignature:
    """A role's signature of its file compiled for the CPU (compiled once, `opened`, for the roles that share it)."""
    path = bundle.path(role)
    try:
        with native_stderr_hidden():
            if path not in opened:
                opened[path] = compiled_api.CompiledFile(path, bundle.models[role]["sha256"], threads)
            model = opened[path].signature(bundle.signature(role))
    except (ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0]
        raise BundleError(f"{path} does not load in LiteRT's CompiledModel ({reason}); convert the bundle "
                          "again") from None
    _check_io(bundle, role, model.input_shapes, model.output_shapes)
    return model


def _check_io(bundle: Bundle, role: str, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    entry = bundle.models[role]
    for listed, actual in ((entry.get("inputs"), inputs), (entry.get("outputs"), outputs)):
        if {spec["name"]: list(spec["shape"]) for spec in listed or []} != \
                {name: [int(n) for n in shape] for name, shape in actual.items()}:
            raise BundleError(f"{bundle.path(role)} does not have the inputs and outputs its manifest lists "
                              "(a model from another bundle?); convert the bundle again")


def _at(model: LiteRtModel, offset: int) -> dict[str, np.ndarray]:
    """The offset input of a call that feeds tokens from position `offset`; bundles before format 5 take none
    (and feed from the first position only)."""
    return {"offset": np.array([offset], np.int32)} if "offset" in model.inputs else {}


CONTEXT_FRAMES = 2  # a frame spans n_fft = 400 samples: 1.25 hops either side of its centre


class TfliteStepper:
    """Runs a bundle's features, encoder, prefill, decoder_step and alignment for one 30 s window at a time.

    `begin` encodes a window and hands its cross K/V to the decoders once; `prefill` feeds a prompt in one call;
    `step` feeds one token at the next position and returns that position's logits; `reset` starts a new token
    sequence on the same audio; `alignment_weights` gives the alignment heads' attention for word timestamps.
    The K/V rows each call returns are written into decoder_step's cache inputs in place: the cache never leaves
    the interpreter.

    With a decoder_batch model (beam search, best-of sampling), `fork` copies the sequence so far into each of
    its `batch_size` rows and `step_batch` advances them all by one token, from then on at the same offset. Where
    the rows fit in fewer cache slots, decoder_batch_short runs them instead.
    """

    def __init__(self, bundle: Bundle, threads: int | None, compiled: bool | None = None):
        """`compiled`: run on LiteRT's CompiledModel (None: where this runtime has it), else on the interpreter."""
        self.compiled = compiled_api.available() if compiled is None else compiled
        self._opened: dict[Path, object] = {}  # one interpreter or compiled model a file, shared by its roles
        self.bundle, self.threads = bundle, threads
        self.features = self._load("features")
        self.encoder = self._load("encoder")
        self.decoder = self._load("decoder_step")
        # Without a prefill model (it is optional), prompts are fed one token per step. Prepared at the first
        # prompt: audio under 30 s has none, and never pays for its arena.
        self.use_prefill = "prefill" in bundle.models
        self.prefiller: LiteRtModel | None = None
        self.aligner: LiteRtModel | None = None  # prepared at the first word timestamps: its arena is large
        # The models loaded on demand (prefill, aligner, batch decoder) that hold the begun window's cross K/V
        self._holding_audio: set[LiteRtModel] = set()
        self.n_ctx = bundle.manifest["dims"]["n_text_ctx"]
        layers = bundle.manifest["dims"]["decoder_layers"]
        self.rows = {f"new_{kv}_{i}": f"self_{kv}_{i}" for i in range(layers) for kv in "kv"}
        caches = {name: shape for name, shape in self.decoder.input_shapes.items() if name.startswith("self_")}
        self.cross_names = [name for name in self.decoder.inputs if name.startswith("cross_")]
        vocabulary = self.decoder.output_shapes["logits"][-1]
        if set(caches) != set(self.rows.values()) or any(shape[1] != self.n_ctx for shape in caches.values()) or \
                vocabulary != bundle.manifest["dims"]["n_vocab"]:
            raise BundleError(f"{bundle.folder}: the manifest's dims ({layers} decoder layers, {self.n_ctx} text "
                              f"positions, {bundle.manifest['dims']['n_vocab']} tokens) do not match decoder_step; "
                              "convert the bundle again")
        # Optional too (bundles of format 2 lack it): without it only greedy decoding and one sample at a time.
        # With it, decoder_batch_short if the bundle has it (format 4): the same rows over fewer cache slots.
        # Each is prepared at the first fork that needs it: greedy decoding never pays for their arenas.
        self.batch_decoder: LiteRtModel | None = None
        self._batch_models: dict[str, LiteRtModel] = {}
        self._batch_cache_memory: dict[str, np.ndarray] = {}  # cache input: memory every batch model's cache shares
        self.batch_roles: dict[str, int] = {}  # role: cache slots
        self.batch_size = 1
        if "decoder_batch" in bundle.models:
            shapes = {role: {spec["name"]: spec["shape"] for spec in bundle.models[role]["inputs"]}
                      for role in BATCH_MODELS if role in bundle.models}
            self.batch_size = shapes["decoder_batch"]["tokens"][0]
            self.batch_roles = {role: named["self_k_0"][2] for role, named in shapes.items()
                                if named["tokens"][0] == self.batch_size}
        self._zero_caches(self.decoder)
        self.offset = 0

    def _load(self, role: str) -> LiteRtModel | compiled_api.CompiledSignature:
        """A role's model. Compiled, every decoder reads the encoder's cross K/V outputs where they are."""
        if not self.compiled:
            return LiteRtModel(self.bundle, role, self.threads, self._opened)
        model = open_compiled(self.bundle, role, self.threads, self._opened)
        if role != "encoder":
            for name in model.inputs:
                if name.startswith("cross_"):
                    model.share(name, self.encoder.output_view(name))
        return model

    def log_mel(self, window: np.ndarray) -> np.ndarray:
        """[1, n_mels, 3000] of up to 30 s of samples, zero-padded and normalized on their own (Hugging Face's
        `WhisperFeatureExtractor`)."""
        self.features.run(pcm=pad_or_trim(window.astype(np.float32, copy=False), N_SAMPLES))
        return self.features.output("log_mel")

    def whole_log_mel(self, audio: np.ndarray) -> np.ndarray:
        """[n_mels, len(audio) // 160] of a whole recording, as openai/whisper and faster-whisper compute it for
        long audio: one STFT over the file, normalized by the file's loudest frame.

        The features model sees 30 s at a time; each chunk starts 2 frames before the frames it contributes, so
        every frame but the file's first two (reflect-padded, as in a whole-file STFT) has its real neighbours.
        """
        frames = len(audio) // HOP_LENGTH
        stride = N_FRAMES - 2 * CONTEXT_FRAMES
        log10_mel = None
        for first in range(0, frames, stride):
            skip = min(first, CONTEXT_FRAMES)
            start = (first - skip) * HOP_LENGTH
            self.features.run(pcm=pad_or_trim(audio[start : start + N_SAMPLES].astype(np.float32, copy=False)))
            chunk = self.features.output("log10_mel")[0, :, skip : skip + stride]
            if log10_mel is None:
                log10_mel = np.empty((chunk.shape[0], frames), np.float32)
            log10_mel[:, first : first + stride] = chunk[:, : frames - first]
        return normalize_log_mel(log10_mel, float(log10_mel.max()))

    def begin(self, log_mel: np.ndarray) -> None:
        """Encodes a log-mel window [1, n_mels, 3000]; compiled, the decoders read its cross K/V where the
        encoder wrote them, else decoder_step gets a copy (the other decoders at their first use in the window).

        The cross K/V stay resident from window to window: given back after each window, their pages would be
        faulted in again at the next (15-20 ms for base's 37 MB, more than the memory is worth)."""
        # What one window's tokens read stays; roles of one file share its pages: each range is given back once.
        release_file_pages(sorted({pages for model in (self.decoder, self.prefiller, self.batch_decoder)
                                   if model is not None for pages in model.file_pages}))
        self.encoder.run(log_mel=log_mel)
        if not self.compiled:
            for name in self.cross_names:
                self.decoder.set(**{name: self.encoder.output_view(name)})  # a copy less than output()
        self._holding_audio.clear()  # each gets it at its first use: a window that never needs one never pays
        self.reset()

    def begin_encoded(self, cross: dict[str, np.ndarray]) -> None:
        """Begins a window encoded before: its cross K/V (name: [heads, 1500, hd]) go where `begin` puts the
        encoder's (batched transcription's windows, for their prompts and word timestamps)."""
        for name, array in cross.items():
            if self.compiled:
                np.copyto(self.encoder.output_view(name), array)
            else:
                self.decoder.set(**{name: np.ascontiguousarray(array)})
        self._holding_audio.clear()
        self.reset()

    def _give_audio(self, model: LiteRtModel) -> None:
        """The begun window's cross K/V, from decoder_step's inputs, into a model loaded on demand, once a window."""
        if model not in self._holding_audio and not self.compiled:  # compiled, they read the encoder's
            for name in self.cross_names:
                model.set(**{name: self.decoder.input_view(name)})
            self._holding_audio.add(model)

    def reset(self) -> None:
        """A new sequence: the offset masks every cache slot, so stale rows need no clearing."""
        self.offset = 0

    def prefill(self, tokens: list[int]) -> None:
        """Feeds the prompt from position 0 in as few calls as the prefill model takes (bundles of format 8:
        `PREFILL_ROWS` tokens a call, each reading the cache the calls before wrote; older ones: one call of up to
        224 tokens). The last call's padding rows go to slots after the prompt, which stay masked until a step
        writes its own row there."""
        if not self.use_prefill or len(tokens) < 2:
            for token in tokens:
                self.step(token)
            return
        if self.prefiller is None:
            self.prefiller = self._load("prefill")
            if "self_k_0" in self.prefiller.inputs:
                self._read_decoder_caches(self.prefiller)
        width = self.prefiller.input_shapes["tokens"][-1]
        continues = "self_k_0" in self.prefiller.inputs  # format 8 on: a call goes on from the calls before
        if self.offset != 0 or (len(tokens) > width and not continues):
            raise IndexError(f"a prefill takes at most {width} tokens, from the first position")
        self._give_audio(self.prefiller)
        for first in range(0, len(tokens), width):
            part = tokens[first : first + width]
            if continues and not self.compiled and first:
                for cache in self.rows.values():  # the interpreter's caches are its own: the filled slots
                    self.prefiller.input_view(cache)[:, : self.offset] = self.decoder.input_view(cache)[:, : self.offset]
            padded = np.full([1, width], part[-1], np.int32)
            padded[0, : len(part)] = part
            self.prefiller.run(tokens=padded, **_at(self.prefiller, self.offset))
            self._write_rows(self.prefiller)
            self.offset += len(part)

    def _read_decoder_caches(self, model) -> None:
        """`model`'s cache inputs read decoder_step's (compiled: the same memory; else zeros, filled per call)."""
        if not self.compiled:
            self._zero_caches(model)
            return
        for cache in self.rows.values():
            model.share(cache, self.decoder.input_view(cache))

    def alignment_weights(self, tokens: list[int]) -> np.ndarray | None:
        """[heads, width, 1500], or None if the tokens are more than the width; rows past `tokens` see end-of-text
        padding. The cross K/V go into the aligner only when words are asked for."""
        if self.aligner is None:
            self.aligner = self._load("alignment")
        width = self.aligner.input_shapes["tokens"][-1]
        if len(tokens) > width:
            return None
        self._give_audio(self.aligner)
        padded = np.full([1, width], tokens[-1], np.int32)
        padded[0, : len(tokens)] = tokens
        self.aligner.run(tokens=padded, **_at(self.aligner, 0))
        return self.aligner.output("weights")

    def step(self, token: int) -> np.ndarray:
        if self.offset >= self.n_ctx:
            raise IndexError(f"the decoder's {self.n_ctx}-token context is full")
        self.decoder.run(tokens=np.array([[token]], np.int32), offset=np.array([self.offset], np.int32))
        logits = self.decoder.output("logits")[0, -1]
        self._write_rows(self.decoder)
        self.offset += 1
        return logits

    def _write_rows(self, model: LiteRtModel) -> None:
        """The rows a call returned into decoder_step's cache from the offset on (those past its last slot
        dropped: padding)."""
        for new, cache in self.rows.items():
            rows = model.output(new)[:, : self.n_ctx - self.offset]
            self.decoder.input_view(cache)[:, self.offset : self.offset + rows.shape[1]] = rows

    def _zero_caches(self, model: LiteRtModel) -> None:
        """Masked slots are multiplied by 0, so uninitialized NaNs in the interpreter's arena would leak. Compiled,
        the caches are arrays of ours allocated zeroed (`aligned_zeros`) or hold another model's finite rows:
        writing zeros would only make every untouched page resident (5.5 MB for tiny.en's decoder_step)."""
        if self.compiled:
            return
        for cache in self.rows.values():
            model.input_view(cache)[...] = 0.0

    @property
    def batch_slots(self) -> int:
        """The loaded batch model's cache slots (0 before the first fork)."""
        return self.batch_decoder.input_shapes["self_k_0"][2] if self.batch_decoder is not None else 0

    def fork(self, slots: int | None = None) -> None:
        """Every row of the batch continues the sequence fed so far: its filled cache slots are copied in.
        `slots`: how many cache slots the rows will have filled at most (the whole context if not given).

        The batch model with the fewest cache slots that has that many runs the rows: each row's attention reads
        its whole cache at every step, so fewer slots run faster (`benchmarks/beam.py` times each batch model's
        step)."""
        if not self.batch_roles:
            raise RuntimeError("this bundle has no decoder_batch model")
        needed = slots or self.n_ctx
        role = min((role for role, count in self.batch_roles.items() if count >= needed),
                   key=self.batch_roles.__getitem__)
        if role not in self._batch_models:
            self._batch_models[role] = self._load(role)
            if self.compiled:
                self._share_batch_caches(self._batch_models[role])
            self._zero_caches(self._batch_models[role])
        self.batch_decoder = self._batch_models[role]
        self._give_audio(self.batch_decoder)
        for cache in self.rows.values():
            self.batch_decoder.input_view(cache)[:, :, : self.offset] = self.decoder.input_view(cache)[:, : self.offset]

    def _share_batch_caches(self, model: compiled_api.CompiledSignature) -> None:
        """Every batch model keeps its caches in the same memory, sized for the most slots (tiny.en: 14 MB less
        with decoder_batch_short beside decoder_batch). One runs at a time, and a fork writes each row's filled
        slots anew; slots past the offset are masked, and what another model left there is finite."""
        if not self._batch_cache_memory:
            slots = max(self.batch_roles.values())
            for cache in self.rows.values():
                rows, heads, _, width = model.input_shapes[cache]
                self._batch_cache_memory[cache] = compiled_api.aligned_zeros([rows, heads, slots, width], np.float32)
        for cache, memory in self._batch_cache_memory.items():
            shape = model.input_shapes[cache]
            model.share(cache, memory.reshape(-1)[: int(np.prod(shape))].reshape(shape))

    def step_batch(self, tokens: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """Feeds tokens[j] to row j and returns the logits [batch, vocab]. With `origins`, row j first takes over
        row origins[j]'s sequence (a beam continues another beam): only the filled slots are permuted."""
        if self.offset >= self.batch_slots:
            raise IndexError(f"the batch decoder's {self.batch_slots} cache slots are full")
        logits = step_rows(self.batch_decoder, self.rows, self.offset, tokens, origins)
        self.offset += 1
        return logits


def step_rows(model: LiteRtModel, rows: dict[str, str], offset: int, tokens: np.ndarray,
              origins: np.ndarray | None) -> np.ndarray:
    """One call of a model of rows (a batch decoder): row j first takes over row origins[j]'s sequence (only the
    filled slots are permuted), then is fed tokens[j] at `offset`; its new K/V rows go into its caches in place
    (`rows`: new output -> cache input). Returns the logits [rows, vocab]."""
    count = len(tokens)
    origins = np.asarray(origins) if origins is not None else np.arange(count)
    moved = np.flatnonzero(origins != np.arange(count))
    if len(moved):  # only the rows that take over another's sequence: most beams continue their own
        for cache in rows.values():  # no view may outlive the loop: the interpreter refuses to run
            taken_over = model.input_view(cache)[origins[moved], :, :offset]  # a copy: sources may move
            model.input_view(cache)[moved, :, :offset] = taken_over
    model.run(tokens=np.asarray(tokens, np.int32).reshape(-1, 1), offset=np.array([offset], np.int32))
    for new, cache in rows.items():
        model.input_view(cache)[:, :, offset] = model.output(new)[:, :, 0]
    return model.output("logits")[:, 0]
