"""Each op's ONNX translation (deblurfast/ops/<op>/onnx_export.py) run by onnxruntime equals the op's
reference: odd geometry, non-dividing adaptive bins, every dynamic_filter2d padding mode. The
comparison is the suite's same-input rule: float32 result vs a float64 reference run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from deblurfast.export import onnx_model  # noqa: E402
from deblurfast.ops.deform_conv2d import deform_conv2d, deform_conv2d_reference  # noqa: E402
from deblurfast.ops.dynamic_filter2d import dynamic_filter2d  # noqa: E402
from deblurfast.ops.dynamic_filter2d.reference import dynamic_filter2d_reference  # noqa: E402
from deblurfast.ops.efficient_attention import efficient_attention, efficient_attention_reference  # noqa: E402
from deblurfast.ops.strip_pool import (blur_aware_mask, blur_aware_mask_reference, strip_expand,  # noqa: E402
                                       strip_expand_reference, strip_pool, strip_pool_reference)
from deblurfast.testing import assert_close  # noqa: E402

Dim = torch.export.Dim


class Call(nn.Module):
    """fn(*tensors, **fixed): the op with its non-tensor arguments fixed."""

    def __init__(self, fn, **fixed):
        super().__init__()
        self.fn, self.fixed = fn, fixed

    def forward(self, *tensors):
        return self.fn(*tensors, **self.fixed)


def run_onnx(module, args, dynamic_shapes=None, runs=None):
    """onnxruntime's outputs of the exported `module`, on `args` and on each tuple of `runs`."""
    # forward(*tensors): torch.export takes the tensors' dynamic shapes as one tuple
    proto = onnx_model(module.eval(), args, (dynamic_shapes,) if dynamic_shapes else None)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    results = []
    for inputs in [args, *(runs or [])]:
        feed = {n: t.numpy() for n, t in zip(names, (t for t in inputs if t is not None))}
        results.append([torch.from_numpy(o) for o in session.run(None, feed)])
    return proto, results


def check(got, reference, inputs, what):
    """got (float32, onnxruntime) vs the reference in float64 (expected) and float32 (ref_lowp)."""
    wide = reference(*(t.double() if t is not None and t.is_floating_point() else t for t in inputs))
    assert_close(got, wide, torch.float32, ref_lowp=reference(*inputs), what=what)


# ------------------------------------------------------------------------------------------ deform_conv2d


@pytest.mark.parametrize("case", ["offset_mask", "offset_only", "mask_only", "neither"])
def test_deform_conv2d_is_one_deformconv(case):
    # Odd geometry: 2 weight groups, 3 offset groups, kernel 3x2, stride (2, 1), padding (1, 0), dilation (2, 1).
    g = torch.Generator().manual_seed(1)
    N, Cin, H, W, Cout, G, kh, kw = 2, 6, 9, 7, 4, 3, 3, 2
    stride, padding, dilation = (2, 1), (1, 0), (2, 1)
    Ho, Wo = (H + 2 - 2 * 2 - 1) // 2 + 1, (W - 1 - 1) // 1 + 1
    x = torch.randn(N, Cin, H, W, generator=g)
    weight = torch.randn(Cout, Cin // 2, kh, kw, generator=g)
    bias = torch.randn(Cout, generator=g)
    offset = 2 * torch.randn(N, 2 * G * kh * kw, Ho, Wo, generator=g)  # some samples leave the image
    mask = torch.rand(N, G * kh * kw, Ho, Wo, generator=g) * 2 - 0.5
    offset = offset if case in ("offset_mask", "offset_only") else None
    mask = mask if case in ("offset_mask", "mask_only") else None

    def op(x, weight, bias, offset=None, mask=None, fn=deform_conv2d):
        return fn(x, offset, weight, bias, stride, padding, dilation, mask)

    args = tuple(t for t in (x, weight, bias, offset, mask) if t is not None)
    if offset is None and mask is not None:
        module = Call(lambda x, w, b, m: op(x, w, b, None, m))
        reference = lambda x, w, b, m: op(x, w, b, None, m, fn=deform_conv2d_reference)  # noqa: E731
    else:
        module = Call(op)
        reference = lambda *a: op(*a, fn=deform_conv2d_reference)  # noqa: E731
    proto, [[got]] = run_onnx(module, args)
    assert [n.op_type for n in proto.graph.node if n.op_type == "DeformConv"] == ["DeformConv"]
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    check(got, reference, args, f"deform_conv2d {case}")


# --------------------------------------------------------------------------------------- dynamic_filter2d


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("normalize", [None, "softmax"])
def test_dynamic_filter2d_translation(padding_mode, normalize):
    # 2 kernel groups, k = 3, dilation 2; two sizes through the dynamic H and W.
    g = torch.Generator().manual_seed(2)
    k, d, G, C = 3, 2, 2, 4

    def inputs(n, h, w):
        return torch.randn(n, C, h, w, generator=g), torch.randn(n, G * k * k, h, w, generator=g)

    module = Call(dynamic_filter2d, kernel_size=k, dilation=d, padding_mode=padding_mode, normalize=normalize)
    h, w = Dim("h", min=3, max=64), Dim("w", min=3, max=64)
    args, other = inputs(1, 6, 5), inputs(2, 9, 11)
    _, results = run_onnx(module, args, ({0: Dim("n"), 2: h, 3: w}, {0: Dim("n"), 2: h, 3: w}), [other])
    for inp, [got] in zip((args, other), results):
        check(got, lambda x, kern: dynamic_filter2d_reference(x, kern, k, d, padding_mode, normalize == "softmax"),
              inp, f"dynamic_filter2d {padding_mode} {normalize}")


# ------------------------------------------------------------------------------------ efficient_attention


@pytest.mark.parametrize("case", ["self_gate", "cross_3d"])
def test_efficient_attention_translation(case):
    g = torch.Generator().manual_seed(3)
    if case == "self_gate":
        args = (torch.randn(2, 5, 4, 6, generator=g), torch.randn(2, 3, 4, 6, generator=g),
                torch.randn(2, 3, 4, 6, generator=g), torch.randn(2, 5, generator=g))
    else:  # cross attention: Lout != Lin, flat positions, no gate
        args = (torch.randn(2, 5, 24, generator=g), torch.randn(2, 3, 24, generator=g),
                torch.randn(2, 3, 7, generator=g))
    _, [[got]] = run_onnx(Call(efficient_attention), args)
    check(got, efficient_attention_reference, args, f"efficient_attention {case}")


# ----------------------------------------------------------------------------------- strip pooling (BANet)


def test_strip_pool_translation_non_dividing_bins():
    # H, W that 3, 5 and 7 do not divide (overlapping adaptive bins), at two sizes (dynamic axes).
    g = torch.Generator().manual_seed(4)
    sizes = (1, 3, 5, 7)

    def flat(pooled):  # the maps side by side, as one output
        v = torch.cat([v.flatten(2) for v, _ in pooled], 2)
        return torch.cat([v, torch.cat([h.flatten(2) for _, h in pooled], 2)], 2)

    module = Call(lambda x: flat(strip_pool(x, sizes)))
    args, other = (torch.randn(2, 3, 11, 13, generator=g),), (torch.randn(1, 3, 17, 8, generator=g),)
    dims = ({0: Dim("n"), 2: Dim("h", min=2, max=64), 3: Dim("w", min=2, max=64)},)
    _, results = run_onnx(module, args, dims, [other])
    for inp, [got] in zip((args, other), results):
        check(got, lambda x: flat(strip_pool_reference(x, sizes)), inp, f"strip_pool {tuple(inp[0].shape)}")


def test_strip_expand_translation():
    g = torch.Generator().manual_seed(5)
    v, h = torch.randn(2, 3, 10, 3, generator=g), torch.randn(2, 3, 5, 7, generator=g)
    module = Call(lambda v, h: strip_expand(v, h, (v.shape[2], h.shape[3])))
    _, [[got]] = run_onnx(module, (v, h))
    check(got, lambda v, h: strip_expand_reference(v, h, (v.shape[2], h.shape[3])), (v, h), "strip_expand")


def test_blur_aware_mask_translation():
    g = torch.Generator().manual_seed(6)
    N, C, Fc, H, W, KA, KB = 2, 4, 3, 6, 7, 4, 3
    x = torch.randn(N, C, H, W, generator=g)
    row_table, col_table = torch.randn(N, Fc, H, KA, generator=g), torch.randn(N, Fc, KB, W, generator=g)
    col_index = torch.randint(0, KA, (W,), generator=g, dtype=torch.int64)
    row_index = torch.randint(0, KB, (H,), generator=g, dtype=torch.int32)
    weight, bias = torch.randn(C, Fc, generator=g), torch.randn(C, generator=g)

    def op(x, row_table, col_table, weight, bias, fn=blur_aware_mask):
        return fn(x, row_table, col_index, col_table, row_index, weight, bias)

    args = (x, row_table, col_table, weight, bias)
    _, [[got]] = run_onnx(Call(op), args)
    check(got, lambda *a: op(*a, fn=blur_aware_mask_reference), args, "blur_aware_mask")


def test_every_op_is_one_opaque_node_while_exporting():
    # Whatever a call asks for (here the reference, which runs anywhere), tracing for export records
    # the op's GRAPH_BACKEND custom op, which every translation table entry covers.
    from deblurfast import dispatch
    from deblurfast.ops._onnx import translation_table

    cpu = torch.device("cpu")
    table = translation_table()
    for op in dispatch.OPS.values():
        assert op.select("reference", cpu, torch.float32) is op.impls["reference"].fn
        with dispatch.tracing_for_export():
            fn = op.select("reference", cpu, torch.float32)
        assert fn is op.impls[dispatch.GRAPH_BACKEND].fn, op.name
        qualnames = {str(k.name()) for k in table}
        assert any(q.startswith(f"deblurfast::{op.name}") for q in qualnames), f"{op.name} has no translation"
