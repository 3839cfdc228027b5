"""strip_pool, strip_expand and blur_aware_mask from standard ONNX operators (ops.md §4).

Pooling is a MatMul with a 0/1 bin-membership matrix built in the graph from the dynamic size L
(bin b of n covers [floor(bL/n), ceil((b+1)L/n)), PyTorch's adaptive bins, exact for every L),
divided by the bin's count. Expansion gathers with the integer index floor(i n / L)."""

from onnxscript import opset19 as op

from .._onnx import int64s, onnx_translation


def _range(length):
    """0, 1, ..., L - 1 for a 1-D int64 length [L]."""
    return op.Range(op.Constant(value_int=0), op.Squeeze(length), op.Constant(value_int=1))


def _bins(length, sizes):
    """(membership (L, K) 0/1 int64, counts (K,) int64) of the adaptive bins of every n in sizes."""
    positions = op.Unsqueeze(_range(length), int64s(1))  # (L, 1)
    members, counts = [], []
    for n in sizes:
        b = int64s(*range(n))
        start = op.Div(op.Mul(b, length), int64s(n))
        end = op.Div(op.Add(op.Mul(op.Add(b, int64s(1)), length), int64s(n - 1)), int64s(n))
        members.append(op.And(op.GreaterOrEqual(positions, start), op.Less(positions, end)))  # (L, n)
        counts.append(op.Sub(end, start))
    return op.Concat(*members, axis=1), op.Concat(*counts, axis=0)


@onnx_translation("deblurfast::strip_pool_triton")
def strip_pool_onnx(x, sizes):
    """The op's buffer (N, C, H*K + K*W): every v_n (N, C, H, n) side by side, then every h_n."""
    col_member, col_count = _bins(op.Shape(x, start=3, end=4), sizes)  # (W, K), (K,)
    row_member, row_count = _bins(op.Shape(x, start=2, end=3), sizes)  # (H, K), (K,)
    v = op.Div(op.MatMul(x, op.CastLike(col_member, x)), op.CastLike(col_count, x))  # (N, C, H, K)
    h = op.Div(op.MatMul(op.CastLike(op.Transpose(row_member, perm=[1, 0]), x), x),
               op.CastLike(op.Unsqueeze(row_count, int64s(1)), x))  # (N, C, K, W)
    flat = int64s(0, 0, -1)
    return op.Concat(op.Reshape(v, flat), op.Reshape(h, flat), axis=2)


def _nearest(t, axis: int, length):
    """t nearest-expanded along `axis` to `length` (1-D int64) with floor(i * n / length)."""
    n = op.Shape(t, start=axis, end=axis + 1)
    index = op.Div(op.Mul(_range(length), n), length)
    return op.Gather(t, index, axis=axis)


@onnx_translation("deblurfast::strip_expand_triton")
def strip_expand_onnx(v, h, size):
    # The sizes come from the tensors (v has H rows, h has W columns), so they stay dynamic.
    return op.Add(_nearest(v, 3, op.Shape(h, start=3, end=4)), _nearest(h, 2, op.Shape(v, start=2, end=3)))


@onnx_translation("deblurfast::blur_aware_mask_triton")
def blur_aware_mask_onnx(x, row_table, col_index, col_table, row_index, weight, bias):
    z = op.Relu(op.Add(op.Gather(row_table, col_index, axis=3), op.Gather(col_table, row_index, axis=2)))
    kernel = op.Reshape(weight, int64s(weight.shape[0], weight.shape[1], 1, 1))
    u = op.Conv(z, kernel, bias) if bias is not None else op.Conv(z, kernel)
    return op.Mul(x, op.Sigmoid(u))
