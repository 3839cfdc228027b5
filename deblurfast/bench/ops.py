"""Op benchmarks: every backend of every op, and the peers users would otherwise
run (the eager reference, torch.compile of it, torchvision's deform_conv2d, the
unfold-based dynamic filter of ASPDC's authors), on the shapes of
shared/specs/benchmarks.md.

Each row: max error of the forward and of every input gradient against the
reference run in float64 on the same inputs, whether that is within the
tolerance table (deblurfast.testing), median/min/p90/max forward and
forward+backward times, GB/s, TFLOP/s, % of roofline (GPU) and peak extra
memory of the forward and of forward+backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .. import ops
from ..dispatch import BACKENDS, OPS
from ..testing import check_close, max_abs_error
from .core import onnxruntime_session_options, peak_extra_memory, roofline_percent, summarize, sync, time_interleaved


@dataclass
class OpCase:
    op: str  # name in deblurfast.dispatch.OPS
    shape: str  # human-readable
    make: Callable[[torch.device, torch.dtype], tuple]  # -> positional arguments of `run`
    run: Callable  # run(*args, backend=...) -> tensor or nested sequence of tensors
    flops: float
    layout: str = "NCHW"
    peers: dict[str, Callable] = field(default_factory=dict)  # name -> fn(*args)
    compile_refusal: dict[str, str] = field(default_factory=dict)  # device type -> why the compile peer is not run
    static_checks: bool = False  # the backends' checks see no arguments (`run` takes other ones than the op)
    forward_only: tuple[str, ...] = ()  # peers without a backward (timed forward only)
    time_reference: bool = True  # False: the reference is the correctness baseline only (too slow to time)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.to(memory_format=torch.channels_last) if layout == "channels_last" and t.dim() == 4 else t


def _torchvision_deform(x, offset, weight, bias, stride, padding, dilation, mask):
    import torchvision

    return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)


class OnnxruntimeDeformConv:
    """onnxruntime's DeformConv (opset 19) as a peer: a one-node model per geometry, run on the
    CPU with as many intra-op threads as torch uses. Forward only (onnxruntime has no backward)."""

    def __init__(self):
        self.sessions = {}

    def session(self, x, offset, weight, bias, mask, stride, padding, dilation):
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper

        key = (tuple(x.shape), tuple(offset.shape), tuple(weight.shape), bias is not None, mask is not None, x.dtype,
               stride, padding, dilation)
        if key not in self.sessions:
            elem = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE}[x.dtype]
            names = ["X", "W", "offset", "B" if bias is not None else "", "mask" if mask is not None else ""]
            shapes = {"X": x.shape, "W": weight.shape, "offset": offset.shape, "B": getattr(bias, "shape", None),
                      "mask": getattr(mask, "shape", None)}
            inputs = [helper.make_tensor_value_info(nm, elem, list(shapes[nm])) for nm in names if nm]
            n, _, h, w = x.shape
            ho, wo = offset.shape[2:]
            node = helper.make_node(
                "DeformConv", names, ["Y"], kernel_shape=list(weight.shape[2:]), strides=[stride] * 2,
                pads=[padding] * 4, dilations=[dilation] * 2, group=x.shape[1] // weight.shape[1],
                offset_group=offset.shape[1] // (2 * weight.shape[2] * weight.shape[3]))
            output = helper.make_tensor_value_info("Y", elem, [n, weight.shape[0], ho, wo])
            model = helper.make_model(helper.make_graph([node], "deform_conv", inputs, [output]),
                                      opset_imports=[helper.make_opsetid("", 19)])
            self.sessions[key] = onnxruntime.InferenceSession(model.SerializeToString(), onnxruntime_session_options(),
                                                              providers=["CPUExecutionProvider"])
        return self.sessions[key]

    def __call__(self, x, offset, weight, bias, stride, padding, dilation, mask):
        sess = self.session(x, offset, weight, bias, mask, stride, padding, dilation)
        feeds = {"X": x, "W": weight, "offset": offset, "B": bias, "mask": mask}
        # NCHW numpy views (a channels_last input is copied, as a user of onnxruntime would have to)
        feeds = {k: v.detach().contiguous().numpy() for k, v in feeds.items() if v is not None}
        return torch.from_numpy(sess.run(None, feeds)[0])


def deform_case(n, c, h, w, k, label="", layout="NCHW", cout=None):
    cout = cout or c

    def make(device, dtype):
        g = _gen()
        r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
        # fractional parts kept off 0 and 1: a float32 position rounded across an integer flips the
        # bilinear gradient and the max error of the gradients would then say nothing about the kernel
        offset = r(n, 2 * k * k, h, w).floor() + 0.1 + 0.8 * torch.rand(n, 2 * k * k, h, w, generator=g)
        args = (r(n, c, h, w), offset, r(cout, c, k, k) / (c * k * k) ** 0.5, r(cout),
                1, k // 2, 1, torch.rand(n, k * k, h, w, generator=g))
        return tuple(_layout(a.to(device, dtype), layout) if isinstance(a, torch.Tensor) else a for a in args)

    peers = {}
    try:
        import torchvision  # noqa: F401

        peers["torchvision"] = _torchvision_deform
    except ImportError:
        pass
    forward_only = ()
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        peers["onnxruntime DeformConv"] = OnnxruntimeDeformConv()
        forward_only = ("onnxruntime DeformConv",)
    except ImportError:
        pass
    shape = f"{n}x{c}x{h}x{w} {k}x{k} {c}->{cout}" + (f" {label}" if label else "")
    # measured with torch 2.13: inductor's CPU code generation for the 5x5 reference graph did not
    # finish in 20 minutes (sympy simplification in its tiling selection)
    refusal = {"cpu": "not run: inductor's CPU codegen of this graph takes > 20 min (torch 2.13)"} if k * k > 9 else {}
    return OpCase("deform_conv2d", shape, make, ops.deform_conv2d, 2.0 * n * c * cout * k * k * h * w, layout, peers,
                  refusal, forward_only=forward_only)


def _unfold_dynamic_filter(x, kernel, kernel_size, dilation, padding_mode, normalize):
    """ASPDC's Dynamic_conv: ReflectionPad2d(1) + Unfold(3), softmax over the 9 taps, weighted sum."""
    n, c, h, w = x.shape
    cols = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3).view(n, c, 9, h, w)
    return (cols * kernel.softmax(1).unsqueeze(1)).sum(2)


def dynamic_filter_case(n, c, h, w, k=3, label=""):
    def make(device, dtype):
        g = _gen()
        return (torch.randn(n, c, h, w, generator=g).to(device, dtype),
                torch.randn(n, k * k, h, w, generator=g).to(device, dtype), k, 1, "reflect", "softmax")

    peers = {"unfold (authors)": _unfold_dynamic_filter} if k == 3 else {}
    shape = f"{n}x{c}x{h}x{w} {k}x{k} softmax reflect" + (f" {label}" if label else "")
    return OpCase("dynamic_filter2d", shape, make, ops.dynamic_filter2d, 2.0 * n * c * h * w * k * k, peers=peers)


def attention_case(n, c, c2, h, w, label=""):
    def make(device, dtype):
        g = _gen()
        r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
        return r(n, c, h, w), r(n, c2, h, w), r(n, c2, h, w), torch.rand(n, c, generator=g).to(device, dtype)

    shape = f"{n}x{c}x{h}x{w} C2={c2}" + (f" {label}" if label else "")
    return OpCase("efficient_attention", shape, make, ops.efficient_attention, 4.0 * n * c * c2 * h * w)


def strip_pool_case(n, c, h, w, label=""):
    def make(device, dtype):
        return torch.randn(n, c, h, w, generator=_gen()).to(device, dtype), (1, 3, 5, 7)

    shape = f"{n}x{c}x{h}x{w} sizes 1,3,5,7" + (f" {label}" if label else "")
    return OpCase("strip_pool", shape, make, ops.strip_pool, 8.0 * n * c * h * w)


def strip_expand_case(n, c, h, w, nv, nh):
    def make(device, dtype):
        g = _gen()
        return (torch.randn(n, c, h, nv, generator=g).to(device, dtype),
                torch.randn(n, c, nh, w, generator=g).to(device, dtype), (h, w))

    return OpCase("strip_expand", f"{n}x{c}x{h}x{w} from {nv}, {nh}", make, ops.strip_expand, 1.0 * n * c * h * w)


def blur_aware_mask_case(n, c, f, h, w, label=""):
    """BANet's fused BA mask on tables built as BlurAwareAttention builds them."""

    def make(device, dtype):
        from ..nn.blur_aware_attention import strip_segments

        g = _gen()
        col_index, col_src = strip_segments(w, 3, False, dtype, device)
        row_index, row_src = strip_segments(h, 2, False, dtype, device)
        r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
        return (r(n, c, h, w), r(n, f, h, col_src.shape[1]), col_index, r(n, f, row_src.shape[1], w), row_index,
                r(c, f) / f ** 0.5, r(c))

    shape = f"{n}x{c}x{h}x{w} F={f}" + (f" {label}" if label else "")
    return OpCase("blur_aware_mask", shape, make, ops.blur_aware_mask, 2.0 * n * c * f * h * w)


def ba_block_case(n, c, h, w, label="", fuse=None):
    """BANet's whole blur-aware attention block (nn.BlurAwareAttention): the fused path (strip_pool
    + blur_aware_mask) against the authors' composition ("reference"), gradients of x and of every
    weight included. FLOPs: its two 3x3 C->C convolutions, which dominate."""
    import copy

    from ..nn import BlurAwareAttention

    template = BlurAwareAttention(c, fuse)
    names = [name for name, _ in template.named_parameters()]
    shapes = [p.shape for p in template.parameters()]
    per_backend = {}

    def make(device, dtype):
        g = _gen()
        params = [torch.randn(s, generator=g) * (0.1 if len(s) == 1 else s[1:].numel() ** -0.5) for s in shapes]
        return tuple(t.to(device, dtype) for t in (torch.randn(n, c, h, w, generator=g), *params))

    def run(x, *params, backend=None):
        if backend not in per_backend:
            per_backend[backend] = copy.deepcopy(template)
            per_backend[backend].backend = backend
            per_backend[backend].fused = backend != "reference"  # this case's reference: the authors' chain
        return torch.func.functional_call(per_backend[backend], dict(zip(names, params)), (x,))

    shape = f"{n}x{c}x{h}x{w} F={fuse or c // 2} whole block" + (f" {label}" if label else "")
    return OpCase("blur_aware_mask", shape, make, run, 36.0 * n * c * c * h * w, static_checks=True)


def cases(device: torch.device, quick: bool) -> list[OpCase]:
    """The shapes of shared/specs/benchmarks.md on a GPU; on CPU the 1/4-resolution
    (180x320, 64 channels) versions, or small ones for --quick."""
    if quick and device.type == "cpu":
        return [deform_case(1, 16, 48, 64, 3), dynamic_filter_case(1, 32, 128, 128),
                attention_case(1, 64, 16, 64, 64), strip_pool_case(1, 32, 128, 128),
                strip_expand_case(1, 32, 128, 128, 7, 7), blur_aware_mask_case(1, 32, 16, 128, 128)]
    if quick:
        return [deform_case(1, 64, 720, 1280, 3), dynamic_filter_case(1, 64, 720, 1280),
                attention_case(1, 64, 64, 720, 1280), strip_pool_case(1, 64, 720, 1280),
                strip_expand_case(1, 64, 720, 1280, 7, 7), blur_aware_mask_case(1, 64, 32, 720, 1280)]
    if device.type == "cpu":
        return [deform_case(1, 64, 180, 320, 3), deform_case(1, 64, 180, 320, 3, layout="channels_last"),
                deform_case(1, 64, 180, 320, 5), dynamic_filter_case(1, 64, 180, 320),
                attention_case(1, 64, 32, 180, 320), strip_pool_case(1, 64, 180, 320),
                strip_expand_case(1, 64, 180, 320, 7, 7), blur_aware_mask_case(1, 128, 64, 180, 320, "BANet"),
                ba_block_case(1, 128, 90, 160, "BANet")]
    return [
        deform_case(1, 64, 720, 1280, 3, "720p sweep"),
        deform_case(1, 64, 720, 1280, 3, "720p sweep", layout="channels_last"),
        deform_case(1, 128, 180, 320, 3, "ASPDC"),
        deform_case(4, 128, 90, 160, 5, "SAPHNet PDF, 4 patches"),
        deform_case(2, 128, 90, 320, 5, "SAPHNet PDF, 2 patches"),
        deform_case(1, 128, 180, 320, 5, "SAPHNet PDF, 1 patch"),
        deform_case(8, 64, 256, 256, 3, "training crops"),
        dynamic_filter_case(1, 64, 720, 1280, label="720p sweep"),
        dynamic_filter_case(1, 16, 720, 1280, label="ASPDC reblur H"),
        dynamic_filter_case(1, 32, 360, 640, label="ASPDC reblur H/2"),
        dynamic_filter_case(1, 64, 180, 320, label="ASPDC reblur H/4"),
        dynamic_filter_case(1, 128, 90, 160, label="ASPDC reblur H/8"),
        attention_case(1, 64, 64, 720, 1280, "720p sweep"),
        attention_case(4, 128, 32, 90, 160, "SAPHNet, 4 patches"),
        attention_case(2, 128, 32, 90, 320, "SAPHNet, 2 patches"),
        attention_case(1, 128, 32, 180, 320, "SAPHNet, 1 patch"),
        attention_case(1, 64, 32, 2160, 3840, "4K: memory stays linear"),
        strip_pool_case(1, 64, 720, 1280, "720p sweep"),
        strip_pool_case(1, 128, 360, 640, "BANet"),
        strip_expand_case(1, 64, 720, 1280, 7, 7),
        blur_aware_mask_case(1, 128, 64, 360, 640, "BANet"),
        blur_aware_mask_case(1, 192, 192, 360, 640, "BANet+"),
        ba_block_case(1, 128, 360, 640, "BANet"),
        ba_block_case(1, 192, 360, 640, "BANet+", fuse=192),
    ]


def peer_cases() -> list[OpCase]:
    """The CPU peer comparison of issue 16: deform_conv2d at its three shapes beside torchvision and
    onnxruntime's DeformConv, and every other op at its 1/4-resolution CPU shape."""
    deform = [deform_case(1, 64, 180, 320, 3), deform_case(1, 128, 90, 160, 3, "ASPDC"),
              deform_case(1, 128, 45, 80, 5, "SAPHNet PDF")]
    for case in deform:  # its targets are ratios to the peers; the full sweep times the reference
        case.time_reference = False
    return [*deform, dynamic_filter_case(1, 64, 180, 320),
            attention_case(1, 64, 32, 180, 320), strip_pool_case(1, 64, 180, 320),
            strip_expand_case(1, 64, 180, 320, 7, 7), blur_aware_mask_case(1, 128, 64, 180, 320, "BANet")]


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flatten(item)]


def _with_grad(args: tuple, dtype=None) -> tuple:
    """Fresh leaves of the floating-point tensors (cast to dtype if given) that require grad."""
    return tuple(a.detach().to(dtype or a.dtype).requires_grad_() if isinstance(a, torch.Tensor) and
                 a.is_floating_point() else a for a in args)


def _fwd_bwd(fn: Callable, args: tuple, cotangents: list[torch.Tensor]):
    """Outputs, and the gradients of <outputs, cotangents> w.r.t. every floating-point argument."""
    args = _with_grad(args)
    outs = _flatten(fn(*args))
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(outs, inputs, [c.to(o.dtype) for c, o in zip(cotangents, outs)], allow_unused=True)
    return [o.detach() for o in outs], [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]


def _candidates(case: OpCase, device: torch.device, dtype: torch.dtype, args: tuple, compile_peer: bool) -> dict:
    """name -> (fn(*args), reason it cannot run or None)."""
    op = OPS[case.op]
    out = {}
    for backend in BACKENDS:
        try:
            why = op.refusal(backend, device, dtype, *(() if case.static_checks else args)) \
                if backend in op.impls else f"not implemented for {case.op}"
        except Exception as e:  # a check that breaks is reported, not fatal
            why = f"error in its check: {type(e).__name__}: {e}"
        out[backend] = (lambda *a, b=backend: case.run(*a, backend=b), why)
    if compile_peer and device.type in case.compile_refusal:
        out["compile(reference)"] = (None, case.compile_refusal[device.type])
    elif compile_peer:
        compiled = torch.compile(lambda *a: case.run(*a, backend="reference"))
        out["compile(reference)"] = (compiled, None)
    for name, fn in case.peers.items():
        out[name] = (fn, None)
    return out


def run_case(case: OpCase, device: torch.device, dtype: torch.dtype, reps: int, env: dict,
             compile_peer: bool = False) -> list[dict]:
    args = case.make(device, dtype)
    with torch.no_grad():
        cot = [torch.randn(o.shape, generator=_gen(i), dtype=torch.float64).to(o)
               for i, o in enumerate(_flatten(case.run(*args, backend="reference")))]
    ref = lambda *a: case.run(*a, backend="reference")  # noqa: E731
    ref_out, ref_grads = _fwd_bwd(ref, _with_grad(args, torch.float64), cot)
    # the tolerance of a 16-bit result compares with the reference's own error in that dtype
    lowp = _fwd_bwd(ref, args, cot) if dtype != torch.float64 else None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    rows, runnable = [], {}
    for name, (fn, why) in _candidates(case, device, dtype, args, compile_peer).items():
        row = {"op": case.op, "shape": case.shape, "dtype": str(dtype).replace("torch.", ""),
               "layout": case.layout, "backend": name, **env}
        rows.append(row)
        if name == "reference" and not case.time_reference:
            why = "not timed here (correctness baseline only)"
        if why is not None:
            row["status"] = why
            continue
        backward = name not in case.forward_only
        try:
            if backward:
                outs, grads = _fwd_bwd(fn, args, cot)
            else:
                with torch.no_grad():
                    outs, grads = [o.to(device) for o in _flatten(fn(*args))], []
        except Exception as e:  # one broken candidate must not hide the others
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            continue
        results, expected = outs + grads, ref_out + (ref_grads if backward else [])
        fails = [m for i, (o, r) in enumerate(zip(results, expected))
                 if (m := check_close(o, r, dtype, (lowp[0] + lowp[1])[i] if lowp else None))]
        row["max_err_fwd"] = max((max_abs_error(o, r) for o, r in zip(outs, ref_out)), default=0.0)
        row["max_err_grad"] = max((max_abs_error(g, r) for g, r in zip(grads, ref_grads)), default=0.0)
        row["status"] = ("ok" if backward else "ok (forward only)") if not fails else "TOLERANCE EXCEEDED: " + fails[0]
        row["bytes_min"] = sum(t.numel() * t.element_size() for t in tensors + outs)
        row["flops"] = case.flops

        def fwd(fn=fn):
            with torch.no_grad():
                return fn(*args)

        runnable[name] = (row, fwd, (lambda fn=fn: _fwd_bwd(fn, args, cot)) if backward else None)
    for key, pick in (("fwd", 1), ("fwd_bwd", 2)):
        timed = {n: v[pick] for n, v in runnable.items() if v[pick] is not None}
        for name, ts in time_interleaved(timed, device, reps).items():
            runnable[name][0].update(summarize(ts, key))
    for name, (row, fwd, bwd) in runnable.items():
        ms = row["fwd_ms_median"]
        row["fwd_gbps"] = row["bytes_min"] / (ms / 1e3) / 1e9
        row["fwd_tflops"] = row["flops"] / (ms / 1e3) / 1e12
        row["fwd_roofline_pct"] = roofline_percent(env["device"], dtype, row["flops"], row["bytes_min"], ms)
        row["fwd_peak_extra_bytes"], row["memory_measured_by"] = peak_extra_memory(fwd, device)
        if bwd is not None:
            row["fwd_bwd_peak_extra_bytes"], _ = peak_extra_memory(bwd, device)
        sync(device)
    return rows


COLUMNS = [
    ("op", "op", ""), ("shape", "shape", ""), ("dtype", "dtype", ""), ("layout", "layout", ""),
    ("backend", "backend", ""), ("fwd ms", "fwd_ms_median", ".3f"), ("fwd+bwd ms", "fwd_bwd_ms_median", ".3f"),
    ("GB/s", "fwd_gbps", ".1f"), ("TFLOP/s", "fwd_tflops", ".2f"), ("% roofline", "fwd_roofline_pct", ".1f"),
    ("peak extra MB", "fwd_peak_mb", ".1f"), ("fwd+bwd peak extra MB", "fwd_bwd_peak_mb", ".1f"),
    ("max err fwd", "max_err_fwd", ".1e"),
    ("max err grad", "max_err_grad", ".1e"), ("status", "status", ""),
]
