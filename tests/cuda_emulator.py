"""Builds and loads tests/cuda_emulation/emulate.cu: deblurfast's CUDA kernel
functors compiled by nvcc for the host, callable on CPU tensors."""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "cuda_emulation", "emulate.cu")
DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}  # csrc/common/dtype.h
MODES = {"zeros": 0, "reflect": 1, "replicate": 2}  # csrc/common/padding.h

_lib = None


def _sources_hash():
    h = hashlib.sha256()
    for folder in ("csrc", os.path.join("tests", "cuda_emulation")):
        for base, _, files in sorted(os.walk(os.path.join(ROOT, folder))):
            for f in sorted(files):
                with open(os.path.join(base, f), "rb") as fh:
                    h.update(f.encode() + fh.read())
    return h.hexdigest()[:16]


def library():
    """The emulation library (built once per source version); skips without nvcc."""
    global _lib
    if _lib is not None:
        return _lib
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("DEBLURFAST_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc not found but DEBLURFAST_REQUIRE_NVCC=1")
        pytest.skip("nvcc not found: cannot build the CUDA emulation")
    out_dir = os.path.join(ROOT, "build", "cuda_emulation", _sources_hash())
    path = os.path.join(out_dir, "libemulate.so")
    if not os.path.exists(path):
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so")
        os.close(fd)
        cmd = [nvcc, "-std=c++17", "-O1", "-Xcompiler", "-fPIC", "-shared", "-I", os.path.join(ROOT, "csrc"),
               "-arch=sm_80", "-Werror", "all-warnings", SOURCE, "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(f"building the CUDA emulation failed:\n{' '.join(cmd)}\n{res.stderr}")
        os.replace(tmp, path)
    lib = ctypes.CDLL(path)
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    geometry = [i64] * 7 + [i32, i32]  # N C H W groups k dilation, mode softmax
    lib.emulate_dynamic_filter2d_forward.argtypes = [i32, ptr, ptr, ptr] + geometry + [i64]
    lib.emulate_dynamic_filter2d_workspace.argtypes = [i32] + geometry + [i32]
    lib.emulate_dynamic_filter2d_workspace.restype = i64
    lib.emulate_dynamic_filter2d_backward.argtypes = [i32, ptr, ptr, ptr, ptr, ptr, ptr] + geometry + [i64]
    _lib = lib
    return lib


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None and t.numel() else None


def _nan_like(t, dtype=None):
    return torch.full(t.shape, float("nan"), dtype=dtype or t.dtype)


def _geometry(x, kernel, k, dilation, mode, softmax):
    N, C, H, W = x.shape
    return [N, C, H, W, kernel.shape[1] // (k * k), k, dilation, MODES[mode], int(softmax)]


def dynamic_filter2d_forward(x, kernel, k, dilation, mode, softmax, min_items=1):
    """The CUDA forward on CPU tensors; min_items > N*G*H*W makes it split channels into chunks."""
    lib = library()
    x, kernel = x.contiguous(), kernel.contiguous()
    out = _nan_like(x)  # an element the kernel forgets stays NaN
    err = lib.emulate_dynamic_filter2d_forward(DTYPES[x.dtype], _ptr(x), _ptr(kernel), _ptr(out),
                                               *_geometry(x, kernel, k, dilation, mode, softmax), min_items)
    assert err == 0, f"emulated launch returned cudaError {err}"
    return out


def dynamic_filter2d_backward(grad_out, x, kernel, k, dilation, mode, softmax, mask=(True, True), min_items=1):
    lib = library()
    grad_out, x, kernel = grad_out.contiguous(), x.contiguous(), kernel.contiguous()
    geometry = _geometry(x, kernel, k, dilation, mode, softmax)
    gx = _nan_like(x) if mask[0] else None
    gk = _nan_like(kernel) if mask[1] else None
    nbytes = lib.emulate_dynamic_filter2d_workspace(DTYPES[x.dtype], *geometry, int(mask[0]))
    workspace = torch.full((nbytes,), 255, dtype=torch.uint8)  # garbage until written
    err = lib.emulate_dynamic_filter2d_backward(DTYPES[x.dtype], _ptr(grad_out), _ptr(x), _ptr(kernel), _ptr(gx),
                                                _ptr(gk), _ptr(workspace), *geometry, min_items)
    assert err == 0, f"emulated launch returned cudaError {err}"
    return gx, gk
