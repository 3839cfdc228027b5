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
    lib.emulate_divmod.argtypes = [i64, ptr, ptr, i64]
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


def divmod_quotients(divisor, dividends):
    """DivMod(divisor).div of each of dividends (an int64 tensor): the kernels' index division."""
    out = torch.empty_like(dividends)
    library().emulate_divmod(divisor, _ptr(dividends), _ptr(out), dividends.numel())
    return out


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


# ---- deform_conv2d (csrc/cuda/deform_conv2d.cuh) ----------------------------------


def _deform_library():
    lib = library()
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    geometry = ctypes.POINTER(ctypes.c_int64)
    lib.emulate_deform_conv2d_shape.argtypes = [geometry, geometry]
    lib.emulate_deform_conv2d_forward_workspace.argtypes = [i32, geometry, i64]
    lib.emulate_deform_conv2d_forward_workspace.restype = i64
    lib.emulate_deform_conv2d_forward.argtypes = [i32] + [ptr] * 7 + [geometry, i64]
    lib.emulate_deform_conv2d_backward_workspace.argtypes = [i32, geometry, i32, i64, i64]
    lib.emulate_deform_conv2d_backward_workspace.restype = i64
    lib.emulate_deform_conv2d_chunks.argtypes = [i32, geometry, i64, i64]
    lib.emulate_deform_conv2d_chunks.restype = i64
    lib.emulate_deform_conv2d_backward.argtypes = [i32] + [ptr] * 11 + [geometry, i64, i64]
    return lib


def _deform_geometry(x, offset, weight, bias, mask, stride, padding, dilation):
    N, Cin, H, W = x.shape
    Cout, Cin_g, kh, kw = weight.shape
    K = kh * kw
    G = offset.shape[1] // (2 * K) if offset is not None else (mask.shape[1] // K if mask is not None else 1)
    flags = int(offset is not None) | int(mask is not None) << 1 | int(bias is not None) << 2
    values = [N, Cin, H, W, Cout, kh, kw, *stride, *padding, *dilation, Cin // Cin_g, G, flags]
    return (ctypes.c_int64 * 16)(*values)


def _contiguous(*tensors):
    return [t.contiguous() if t is not None else None for t in tensors]


def _garbage(nbytes):
    return torch.full((nbytes,), 255, dtype=torch.uint8)  # 0xFF..: NaN until written


def deform_conv2d_forward(x, offset, weight, bias, mask, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                          min_items=1):
    """The CUDA forward on CPU tensors; min_items as on a GPU that wants that many items (picks the
    output-channel block: 16 when the image alone gives min_items items, else 8)."""
    lib = _deform_library()
    x, offset, weight, bias, mask = _contiguous(x, offset, weight, bias, mask)
    geometry = _deform_geometry(x, offset, weight, bias, mask, stride, padding, dilation)
    ho_wo = (ctypes.c_int64 * 2)()
    lib.emulate_deform_conv2d_shape(geometry, ho_wo)
    out = torch.full((x.shape[0], weight.shape[0], ho_wo[0], ho_wo[1]), float("nan"), dtype=x.dtype)
    workspace = _garbage(lib.emulate_deform_conv2d_forward_workspace(DTYPES[x.dtype], geometry, min_items))
    err = lib.emulate_deform_conv2d_forward(DTYPES[x.dtype], _ptr(x), _ptr(offset), _ptr(weight), _ptr(bias),
                                            _ptr(mask), _ptr(out), _ptr(workspace), geometry, min_items)
    assert err == 0, f"emulated launch returned cudaError {err}"
    return out


def deform_conv2d_chunks(x, offset, weight, bias, mask, stride, padding, dilation, min_items=1, min_chunk_pixels=64):
    """How many pixel chunks the weight gradient is split into."""
    lib = _deform_library()
    geometry = _deform_geometry(x, offset, weight, bias, mask, stride, padding, dilation)
    return lib.emulate_deform_conv2d_chunks(DTYPES[x.dtype], geometry, min_items, min_chunk_pixels)


def deform_conv2d_backward(grad_out, x, offset, weight, bias, mask, stride=(1, 1), padding=(0, 0),
                           dilation=(1, 1), output_mask=(True,) * 5, min_items=1, min_chunk_pixels=64):
    """The CUDA backward on CPU tensors, as the glue (csrc/cuda/deform_conv2d.cpp) calls it: returns
    (grad_input, grad_offset, grad_weight, grad_bias, grad_mask), an empty tensor for a gradient
    not requested or of an absent tensor; the others start as NaN, so an unwritten element shows."""
    lib = _deform_library()
    grad_out, x, offset, weight, bias, mask = _contiguous(grad_out, x, offset, weight, bias, mask)
    geometry = _deform_geometry(x, offset, weight, bias, mask, stride, padding, dilation)
    sources = (x, offset, weight, bias, mask)
    want = [bool(m) and t is not None for m, t in zip(output_mask, sources)]
    grads = [_nan_like(t) if w else torch.empty(0, dtype=x.dtype) for w, t in zip(want, sources)]
    wanted = sum(1 << i for i, w in enumerate(want) if w)
    nbytes = lib.emulate_deform_conv2d_backward_workspace(DTYPES[x.dtype], geometry, wanted, min_items,
                                                          min_chunk_pixels)
    workspace = _garbage(nbytes)
    err = lib.emulate_deform_conv2d_backward(DTYPES[x.dtype], _ptr(grad_out), _ptr(x), _ptr(offset), _ptr(weight),
                                             _ptr(mask), *[_ptr(g) if w else None for g, w in zip(grads, want)],
                                             _ptr(workspace), geometry, min_items, min_chunk_pixels)
    assert err == 0, f"emulated launch returned cudaError {err}"
    return tuple(grads)
