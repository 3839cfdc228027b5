"""dynamic_filter2d from standard ONNX operators (ops.md §2): Pad, one Slice per tap, a product
with the (softmax-normalized) kernel and a sum over the taps.

With zeros padding a tap reading the padding multiplies its kernel value by 0 here, where the op
skips it: the results differ only where that kernel value is NaN or infinite."""

from onnxscript import opset19 as op

from .._onnx import int64s, onnx_translation

PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}


@onnx_translation("deblurfast::dynamic_filter2d_triton", "deblurfast::dynamic_filter2d")
def dynamic_filter2d_onnx(input, kernel, kernel_size, dilation, padding_mode, softmax):
    k, d = kernel_size, dilation
    taps = k * k
    channels, groups = input.shape[1], kernel.shape[1] // taps
    pad = d * (k - 1) // 2
    batch, size = op.Shape(input, start=0, end=1), op.Shape(input, start=2)  # [N], [H, W]
    w = op.Reshape(kernel, op.Concat(batch, int64s(groups, 1, taps), size, axis=0))  # (N, G, 1, k*k, H, W)
    if softmax:
        w = op.Softmax(w, axis=3)
    x = input
    if pad:
        x = op.Pad(input, int64s(0, 0, pad, pad, 0, 0, pad, pad), mode=PAD_MODES[padding_mode])
    windows = []
    for t in range(taps):
        start = int64s((t // k) * d, (t % k) * d)
        window = op.Slice(x, start, op.Add(start, size), int64s(2, 3))  # (N, C, H, W)
        windows.append(op.Unsqueeze(window, int64s(2)))
    stacked = op.Reshape(op.Concat(*windows, axis=2),
                         op.Concat(batch, int64s(groups, channels // groups, taps), size, axis=0))
    out = op.ReduceSum(op.Mul(stacked, w), int64s(3), keepdims=0)  # (N, G, C/G, H, W)
    return op.Reshape(out, op.Concat(batch, int64s(channels), size, axis=0))
