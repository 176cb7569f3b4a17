"""The fused CPU decode step (`decode_step.c`): built with the system's C compiler on first use, loaded
with ctypes, and bound to one `fast.Decoder`'s weights, caches and rope tables.

Optional by design: where there is no compiler (e.g. a Windows install with none), the build fails,
or the decode is not float32 on the CPU, `fast` runs its PyTorch step instead, with a warning once.
On by default where it builds; `COMFY_STAR_KERNEL=0` (or `fast.KERNEL = False`) turns it off.
The shared library is cached per (source, compiler flags, CPU),
under `$COMFY_STAR_CACHE` or `~/.cache/comfy_star`, and written atomically (compiled to a temporary
name, then renamed), so concurrent first uses cannot load a half-written file.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("decode_step.c")
# -fopenmp-simd: the `omp simd` reductions vectorise; no -ffast-math, whose startup code would change
# the whole process's floating-point mode (flush-to-zero) when the library is loaded.
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=fast", "-fno-math-errno", "-fPIC", "-shared"]

BUILD_TIMEOUT_S = 120  # it takes about a second


class BuildTimeout(RuntimeError):
    pass


_lib: ctypes.CDLL | None = None
_failed: str | None = None


class Layer(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("norm1", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
                                              "norm2", "wg", "bg", "wu", "bu", "wd", "bd", "k_cache", "v_cache")]
    _fields_ += [("eps1", ctypes.c_float), ("eps2", ctypes.c_float)]


class Part(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("rows", "dim", "heads", "kv_heads", "head_dim", "inter", "max_len",
                                              "n_layers")]
    _fields_ += [("scaling", ctypes.c_float), ("norm_eps", ctypes.c_float), ("norm", ctypes.c_void_p),
                 ("layers", ctypes.POINTER(Layer)), ("scratch", ctypes.c_void_p)]


def _cpu_id() -> str:
    try:  # -march=native code is only valid on this CPU: key the cache on its model and flags
        text = Path("/proc/cpuinfo").read_text()
        return "\n".join(sorted({l for l in text.splitlines() if l.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    return Path(os.environ.get("COMFY_STAR_CACHE") or Path.home() / ".cache" / "comfy_star")


def _compile(compiler: str, flags: list[str]) -> Path:
    """The cached library for these flags, compiled first if it is not there yet."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *flags]).encode() + _cpu_id().encode())
    target = _cache_dir() / f"decode_step-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:  # a compiler that hangs must not hang the first image: give up, and use the PyTorch step
            run = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BuildTimeout(f"{compiler} took over {BUILD_TIMEOUT_S} s to build {SOURCE.name}") from None
        if run.returncode != 0:
            why = run.stderr.strip()[-2000:]
            raise RuntimeError(f"{compiler} failed to build {SOURCE.name} (exit {run.returncode})"
                               + (f":\n{why}" if why else ""))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    try:
        target = _compile(compiler, FLAGS)
    except BuildTimeout:
        raise  # no second wait
    except RuntimeError:  # e.g. a compiler that knows no -march=native: portable code, still one call a step
        target = _compile(compiler, [f for f in FLAGS if f != "-march=native"])
    lib = ctypes.CDLL(str(target))
    lib.star_scratch_floats.restype = ctypes.c_size_t
    lib.star_scratch_floats.argtypes = [ctypes.c_int] * 7
    lib.star_linear.restype = None
    lib.star_linear.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_int, ctypes.c_void_p]
    lib.star_gelu.restype = None
    lib.star_gelu.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.star_part_step.restype = None
    lib.star_part_step.argtypes = [ctypes.POINTER(Part), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p]
    return lib


def library() -> ctypes.CDLL | None:
    """The built kernel, or None (disabled, or it could not be built: warned once, with the reason)."""
    global _lib, _failed
    if os.environ.get("COMFY_STAR_KERNEL", "1") == "0":
        return None
    if _lib is None and _failed is None:
        try:
            _lib = _build()
        except Exception as e:  # no compiler, a failed build, an unloadable file: the PyTorch step
            _failed = str(e)
            warnings.warn(f"comfy-star: the fused CPU decode step is unavailable ({e}); using the PyTorch step")
    return _lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"{name}: the fused step needs contiguous float32 CPU tensors")
    return t


class PartStep:
    """One text model's layers (weights, caches) bound for `star_part_step`; call with x (rows, dim), in place."""

    def __init__(self, lib, part, kv, rows: int, inter: int):
        self.lib = lib
        layers = []
        for i, layer in enumerate(part.layers):
            a, m = layer.self_attn, layer.mlp
            n1, n2 = layer.input_layernorm, layer.post_attention_layernorm
            k_cache, v_cache = kv.kv(i)
            mods = dict(wq=a.q_proj, wk=a.k_proj, wv=a.v_proj, wo=a.o_proj, wg=m.gate_proj, wu=m.up_proj, wd=m.down_proj)
            fields = {"norm1": _ptr(_check(n1.weight, "norm")), "norm2": _ptr(_check(n2.weight, "norm")),
                      "k_cache": _ptr(_check(k_cache, "k cache")), "v_cache": _ptr(_check(v_cache, "v cache")),
                      "eps1": n1.variance_epsilon, "eps2": n2.variance_epsilon}
            for w, mod in mods.items():
                fields[w] = _ptr(_check(mod.weight, w))
                fields["b" + w[1]] = _ptr(None if mod.bias is None else _check(mod.bias, "bias"))
            layers.append(Layer(**fields))
        self.layers = (Layer * len(layers))(*layers)
        # the tensors behind every address above, held for as long as the C step may read them
        self.tensors = [t for layer in part.layers for t in (*layer.parameters(), *layer.buffers())]
        self.tensors += [*kv.buffers(), part.norm.weight]
        dims = (rows, part.layers[0].self_attn.o_proj.out_features, part.heads, part.kv_heads, part.head_dim, inter,
                kv.max_len)
        self.scratch = torch.empty(lib.star_scratch_floats(*dims), dtype=torch.float32)
        self.part = Part(*dims, len(layers), part.scaling, part.norm.variance_epsilon,
                         _ptr(_check(part.norm.weight, "norm")), self.layers, self.scratch.data_ptr())
        self.ref = ctypes.byref(self.part)

    def __call__(self, x: torch.Tensor, column: int, cos_ptr: int, sin_ptr: int, mask_ptr: int | None):
        self.lib.star_part_step(self.ref, x.data_ptr(), column, cos_ptr, sin_ptr, mask_ptr)
        return x


class LinearStep:
    """An nn.Linear bound for `star_linear`: x (rows, in) contiguous float32 → a new (rows, out)."""

    def __init__(self, lib, mod):
        self.lib, self.out, self.inp = lib, mod.out_features, mod.in_features
        self.tensors = (mod.weight, mod.bias)  # held: the C call reads them by address
        self.w = _ptr(_check(mod.weight, "weight"))
        self.b = _ptr(None if mod.bias is None else _check(mod.bias, "bias"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(x.shape[0], self.out, dtype=torch.float32)
        self.lib.star_linear(x.data_ptr(), x.shape[0], self.inp, self.w, self.b, self.out, y.data_ptr())
        return y


class GeluStep:
    """nn.GELU() (erf form), in place on a contiguous float32 tensor."""

    def __init__(self, lib):
        self.lib = lib

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.lib.star_gelu(x.data_ptr(), x.numel())
        return x
