"""LiteRT's CompiledModel, with every input and output in numpy memory of our own (no TensorFlow here).

Two things the interpreter cannot do. XNNPACK packs a file's weights once for all its signatures, into a weight
cache file that the next process maps instead of packing again (the interpreter packs a shared weight once a
signature, in memory of each process). And the tensors are arrays we own: a KV cache row is written in place,
and the encoder's cross K/V outputs are the decoders' inputs, never copied.

The Python wrapper of ai-edge-litert 2.3 makes host-memory buffers of one dimension only, which a model's
multi-dimensional input refuses (and an unaligned array it copies, silently). These buffers are made through
LiteRT's C API (`LiteRtCreateTensorBufferFromHostMemory`, litert/c/litert_tensor_buffer.h) in the library the
wrapper itself loaded, with the tensor's own shape, and handed to the wrapper as the capsule it makes. Where any
of that is missing (an older or other runtime), `available()` is False and the interpreter runs the bundle.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from ..bundle import user_cache_folder
from ..native_log import native_stderr_hidden
from .pages import settle_file_pages

ALIGNMENT = 64  # LiteRT's host memory alignment: it copies a less aligned array instead of using it
_ELEMENT_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 2}  # LiteRtElementType, TfLiteType's values
_CAPSULE = ctypes.create_string_buffer(b"LiteRtTensorBuffer")  # the wrapper's capsule name; lives as long as we do


class _Layout(ctypes.Structure):  # LiteRtLayout
    _fields_ = [("rank", ctypes.c_uint, 7), ("has_strides", ctypes.c_uint, 1),
                ("dimensions", ctypes.c_int32 * 8), ("strides", ctypes.c_uint32 * 8)]


class _RankedTensorType(ctypes.Structure):  # LiteRtRankedTensorType
    _fields_ = [("element_type", ctypes.c_int), ("layout", _Layout)]


@functools.cache
def _api():
    """(LiteRT's C library, CompiledModel, Options, CpuOptions, TensorBuffer), or None where this runtime lacks
    any of them."""
    try:
        import ai_edge_litert
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, Options
        from ai_edge_litert.tensor_buffer import TensorBuffer

        library = ctypes.CDLL(os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so"))
        create, destroy = library.LiteRtCreateTensorBufferFromHostMemory, library.LiteRtDestroyTensorBuffer
    except (ImportError, OSError, AttributeError):
        return None
    if ctypes.sizeof(_RankedTensorType) != 72:  # the C API's struct, as litert_model_types.h lays it out
        return None
    create.argtypes = [ctypes.POINTER(_RankedTensorType), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_void_p)]
    destroy.argtypes = [ctypes.c_void_p]
    return create, destroy, CompiledModel, Options, CpuOptions, TensorBuffer


def available() -> bool:
    return _api() is not None


def aligned_zeros(shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype, _new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]


def _host_buffer(array: np.ndarray):
    """A TensorBuffer over `array` (aligned, C-contiguous) with its shape: LiteRT reads and writes the array."""
    create, destroy, _, _, _, TensorBuffer = _api()
    tensor_type = _RankedTensorType()
    tensor_type.element_type = _ELEMENT_TYPES[array.dtype]
    tensor_type.layout.rank = array.ndim
    for axis, size in enumerate(array.shape):
        tensor_type.layout.dimensions[axis] = size
    handle = ctypes.c_void_p()
    if create(ctypes.byref(tensor_type), array.ctypes.data, array.nbytes, None, ctypes.byref(handle)) != 0:
        raise RuntimeError(f"LiteRT refused a host buffer of shape {array.shape}")
    buffer = TensorBuffer(_new_capsule(handle.value, ctypes.addressof(_CAPSULE), None))
    buffer.host_array = array  # the memory must outlive the buffer
    weakref.finalize(buffer, destroy, handle.value)
    return buffer


def weight_cache_path(model: Path, sha256: str) -> str:
    """Where the packed weights of `model` are kept: one file per model content, runtime and CPU, in the user's
    cache folder. XNNPACK keys a cache by buffer index, not content: a cache of other weights would be read as
    these, so the name holds the file's sha256. ":memory" (shared within the process only) where there is no
    writable cache folder."""
    folder = user_cache_folder() / "xnnpack"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ":memory"
    return str(folder / f"{model.stem}-{sha256[:16]}-{_runtime_identity()}.xnnpack")


UNUSED_CACHE_DAYS = 30  # a packed-weights file not mapped for this long is removed when another is written
_PARTIAL_DAYS = 1  # a ".partial" file this old was left by a process that died while packing


def _touch(cache: str) -> None:
    """Marks a cache as used now: its modification time is what `_forget_unused_caches` reads."""
    try:
        os.utime(cache)
    except OSError:
        pass


def _forget_unused_caches(folder: str) -> None:
    """Removes the caches of bundles, runtimes or CPUs not used for `UNUSED_CACHE_DAYS`, and packing leftovers:
    each conversion, runtime upgrade or new bundle adds a file of its packed weights, and none would go away. A
    process still mapping a removed file keeps its pages."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        days = UNUSED_CACHE_DAYS if entry.name.endswith(".xnnpack") else _PARTIAL_DAYS \
            if entry.name.endswith(".partial") else None
        try:
            if days is not None and now - entry.stat().st_mtime > days * 86400:
                os.remove(entry.path)
        except OSError:
            pass


@functools.cache
def _runtime_identity() -> str:
    """The LiteRT version and the CPU's flags, hashed: packed weights suit the kernels of one runtime and CPU."""
    import ai_edge_litert

    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), platform.machine())
    except OSError:
        flags = platform.machine()
    return hashlib.sha256(f"{getattr(ai_edge_litert, '__version__', '')} {flags}".encode()).hexdigest()[:12]


@functools.cache
def _environment():
    """One LiteRT environment for every compiled model: each would otherwise make its own, and look for NPU and GPU
    accelerators again (and log it)."""
    import ai_edge_litert
    from ai_edge_litert.environment import Environment, EnvironmentOptions

    atexit.register(_quiet_end)
    return Environment.create(options=EnvironmentOptions(runtime_path=os.path.dirname(ai_edge_litert.__file__)))


def _quiet_end() -> None:
    """LiteRT logs the end of each accelerator to fd 2 as the process ends, after Python's last output: once
    Python has flushed its streams, fd 2 goes to /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


class CompiledFile:
    """One .tflite file compiled for the CPU, its weights packed once for all its signatures.

    XNNPACK's weight cache keys packed weights by (packing, weight buffer, bias buffer), not by content. In
    ai-edge-litert 2.3.0 some graphs make signatures of one file get each other's packed weights: slices of a
    dense layer's output (alignment heads taken per head, prefill's cross-attention in chunks of queries) did on
    tiny.en's text decoder. The graphs avoid them, and a test holds every role of the default bundle, cache
    written and mapped, to the interpreter's outputs."""

    def __init__(self, path: Path, sha256: str, threads: int | None):
        _, _, CompiledModel, Options, CpuOptions, _ = _api()
        cache = weight_cache_path(path, sha256)
        # A new cache is written under a name of this process's and moved into place whole once written, so a
        # process never maps another's half-written file.
        building = cache if cache == ":memory" or os.path.exists(cache) else \
            f"{cache}.{os.getpid()}-{os.urandom(4).hex()}.partial"
        options = Options(cpu_options=CpuOptions(num_threads=threads or 0, xnnpack_weight_cache_path=building))
        try:
            self.model = CompiledModel.from_file(str(path), environment=_environment(), options=options)
        finally:
            if building != cache and os.path.exists(building):
                os.replace(building, cache)
                _forget_unused_caches(os.path.dirname(cache))
            elif building == cache != ":memory":
                _touch(cache)
        self.pages = settle_file_pages(path)  # the packed weights are the cache's; few ops read the file

    def signature(self, key: str) -> "CompiledSignature":
        return CompiledSignature(self, key)


class CompiledSignature:
    """A signature of a `CompiledFile`, with `LiteRtModel`'s interface: its inputs and outputs are arrays of ours
    that persist between calls (an input set once stays set)."""

    def __init__(self, file: CompiledFile, key: str):
        self._file, self._model, self._key = file, file.model, key
        self._ran = False
        inputs, outputs = (details(key) for details in (file.model.get_input_tensor_details,
                                                         file.model.get_output_tensor_details))
        self._in = {name: aligned_zeros(d["shape"], d["dtype"]) for name, d in inputs.items()}
        self._out = {name: aligned_zeros(d["shape"], d["dtype"]) for name, d in outputs.items()}
        self._in_buffers = {name: _host_buffer(array) for name, array in self._in.items()}
        self._out_buffers = {name: _host_buffer(array) for name, array in self._out.items()}
        self.inputs = dict.fromkeys(self._in)
        self.outputs = dict.fromkeys(self._out)
        self.input_shapes = {name: array.shape for name, array in self._in.items()}
        self.output_shapes = {name: array.shape for name, array in self._out.items()}

    def share(self, name: str, array: np.ndarray) -> None:
        """Reads input `name` from `array` (another model's output, say) from now on, without copying it."""
        if array.shape != self._in[name].shape or array.dtype != self._in[name].dtype:
            raise ValueError(f"{name}: {array.shape} {array.dtype} for {self._in[name].shape} {self._in[name].dtype}")
        self._in[name] = array
        self._in_buffers[name] = _host_buffer(array)

    def output_buffers(self, arrays: dict[str, np.ndarray]) -> dict:
        """The output buffers of a `run` that writes the outputs named in `arrays` there (arrays of ours of their
        shapes, aligned: views of a larger array, say), the others into this signature's own."""
        buffers = dict(self._out_buffers)
        for name, array in arrays.items():
            own = self._out[name]
            if array.shape != own.shape or array.dtype != own.dtype or not array.flags.c_contiguous or \
                    array.ctypes.data % ALIGNMENT:
                raise ValueError(f"{name}: {array.shape} {array.dtype} for {own.shape} {own.dtype}, or unaligned")
            buffers[name] = _host_buffer(array)
        return buffers

    def set(self, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():
            np.copyto(self._in[name], array, casting="same_kind")

    def run(self, outputs: dict | None = None, **arrays: np.ndarray) -> None:
        """`outputs`: buffers from `output_buffers` (default: this signature's own)."""
        self.set(**arrays)
        if self._ran:
            self._model.run_by_name(self._key, self._in_buffers, outputs or self._out_buffers)
            return
        with native_stderr_hidden():  # a signature's first run logs the making of an environment
            self._model.run_by_name(self._key, self._in_buffers, outputs or self._out_buffers)
        self._ran = True

    def output(self, name: str) -> np.ndarray:
        return self._out[name].copy()

    def input_view(self, name: str) -> np.ndarray:
        return self._in[name]

    def output_view(self, name: str) -> np.ndarray:
        return self._out[name]

    @property
    def file_pages(self) -> list[tuple[int, int]]:
        """Where this process maps the model file (its roles share them)."""
        return self._file.pages
