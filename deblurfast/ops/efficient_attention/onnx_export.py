"""efficient_attention from standard ONNX operators (ops.md §3): two Softmax and two MatMul."""

from onnxscript import opset19 as op

from .._onnx import int64s, onnx_translation


@onnx_translation("deblurfast::efficient_attention_triton")
def efficient_attention_onnx(value, key, query, gate):
    flat = int64s(0, 0, -1)  # (N, C, L), whatever the spatial rank
    v, k, q = op.Reshape(value, flat), op.Reshape(key, flat), op.Reshape(query, flat)
    context = op.MatMul(v, op.Transpose(op.Softmax(k, axis=2), perm=[0, 2, 1]))  # (N, C, C2)
    out = op.MatMul(context, op.Softmax(q, axis=1))  # (N, C, Lout)
    if gate is not None:
        out = op.Mul(out, op.Unsqueeze(gate, int64s(2)))
    return op.Reshape(out, op.Concat(op.Shape(value, start=0, end=2), op.Shape(query, start=2), axis=0))
