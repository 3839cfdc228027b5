"""deform_conv2d / pixel_adaptive_conv2d as ONNX DeformConv (opset 19; ops.md §1).

offset=None becomes all-zero offsets, so the node is a DeformConv either way (sampling at integer
positions reads the pixels themselves, which is the op's offset=None meaning)."""

from onnxscript import opset19 as op

from .._onnx import int64s, onnx_translation


def _output_extent(size, kernel: int, stride: int, padding: int, dilation: int):
    """(size + 2p - d(k-1) - 1) // s + 1 of a 1-D int64 size tensor (the reference's output_size)."""
    span = op.Sub(op.Add(size, int64s(2 * padding)), int64s(dilation * (kernel - 1) + 1))
    return op.Add(op.Div(span, int64s(stride)), int64s(1))


@onnx_translation("deblurfast::deform_conv2d_triton", "deblurfast::deform_conv2d")
def deform_conv2d_onnx(input, offset, weight, bias, stride, padding, dilation, mask):
    cin_per_group, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    taps = kh * kw
    groups = input.shape[1] // cin_per_group
    if offset is not None:
        offset_groups = offset.shape[1] // (2 * taps)
    else:
        offset_groups = mask.shape[1] // taps if mask is not None else 1
        if mask is not None:
            extents = op.Shape(mask, start=2)
        else:
            extents = op.Concat(
                _output_extent(op.Shape(input, start=2, end=3), kh, stride[0], padding[0], dilation[0]),
                _output_extent(op.Shape(input, start=3, end=4), kw, stride[1], padding[1], dilation[1]),
                axis=0)
        offset_shape = op.Concat(op.Shape(input, start=0, end=1), int64s(2 * offset_groups * taps), extents,
                                 axis=0)
        offset = op.Expand(op.CastLike(op.Constant(value_float=0.0), input), offset_shape)
    return op.DeformConv(
        input, weight, offset, bias, mask,
        dilations=list(dilation), group=groups, kernel_shape=[kh, kw], offset_group=offset_groups,
        pads=[padding[0], padding[1], padding[0], padding[1]], strides=list(stride),
    )
