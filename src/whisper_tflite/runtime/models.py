"""LiteRT models of a bundle, run by index with as few copies as possible (no TensorFlow here)."""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from ..audio import N_SAMPLES, pad_or_trim
from ..bundle import Bundle
from ..errors import BundleError


class LiteRtModel:
    """One .tflite file's serving signature. Inputs persist between calls, so unchanged ones are set once."""

    def __init__(self, bundle: Bundle, role: str, threads: int | None):
        path = bundle.path(role)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
            runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{path} is not a loadable TFLite model ({e}); convert the bundle again") from None
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        self.inputs = {name: d["index"] for name, d in inputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        entry = bundle.models[role]
        for listed, actual in ((entry.get("inputs"), inputs), (entry.get("outputs"), outputs)):
            expected = {spec["name"]: list(spec["shape"]) for spec in listed or []}
            if expected != {name: [int(n) for n in d["shape"]] for name, d in actual.items()}:
                raise BundleError(f"{path} does not have the inputs and outputs its manifest lists "
                                  "(a model from another bundle?); convert the bundle again")

    def set(self, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():
            self.interpreter.set_tensor(self.inputs[name], array)

    def run(self, **arrays: np.ndarray) -> None:
        self.set(**arrays)
        self.interpreter.invoke()

    def output(self, name: str) -> np.ndarray:
        """A copy of an output (the interpreter reuses its buffers at the next call)."""
        return self.interpreter.get_tensor(self.outputs[name])


class TfliteStepper:
    """Runs a bundle's features, encoder and decoder_step for one 30 s window at a time.

    `begin` encodes a window and hands its cross K/V to the decoder once; `step` feeds one token at the next
    position and returns that position's logits; `reset` starts a new token sequence on the same audio.
    """

    def __init__(self, bundle: Bundle, threads: int | None):
        self.features = LiteRtModel(bundle, "features", threads)
        self.encoder = LiteRtModel(bundle, "encoder", threads)
        self.decoder = LiteRtModel(bundle, "decoder_step", threads)
        self.layers = bundle.manifest["dims"]["decoder_layers"]
        self.n_ctx = bundle.manifest["dims"]["n_text_ctx"]
        self.cache_names = [f"self_{kv}_{i}" for i in range(self.layers) for kv in "kv"]
        shapes = {d["index"]: tuple(d["shape"]) for d in self.decoder.interpreter.get_input_details()}
        self._zero_caches = {name: np.zeros(shapes[self.decoder.inputs[name]], np.float32)
                             for name in self.cache_names}
        self.offset = 0

    def log_mel(self, window: np.ndarray) -> np.ndarray:
        self.features.run(pcm=pad_or_trim(window.astype(np.float32, copy=False), N_SAMPLES))
        return self.features.output("log_mel")

    def begin(self, window: np.ndarray) -> None:
        """Encodes up to 30 s of 16 kHz samples (zero-padded) and loads its cross K/V into the decoder."""
        self.encoder.run(log_mel=self.log_mel(window))
        for name in self.encoder.outputs:
            if name.startswith("cross_"):
                self.decoder.set(**{name: self.encoder.output(name)})
        self.reset()

    def reset(self) -> None:
        self.decoder.set(**self._zero_caches)
        self.offset = 0

    def step(self, token: int) -> np.ndarray:
        if self.offset >= self.n_ctx:
            raise IndexError("the decoder's 448-token context is full")
        self.decoder.run(tokens=np.array([[token]], np.int32), offset=np.array([self.offset], np.int32))
        for name in self.cache_names:
            self.decoder.set(**{name: self.decoder.output(name)})
        self.offset += 1
        return self.decoder.output("logits")[0, -1]
