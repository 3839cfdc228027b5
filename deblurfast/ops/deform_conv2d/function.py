"""Public deform_conv2d / pixel_adaptive_conv2d: argument checks, then the
backend the dispatcher picks (declaration.py)."""

from __future__ import annotations

import torch

from ..._checks import INT64_MAX, ArgumentError, autocast_inputs, check_like, check_shape, check_tensor, pair
from .._fx import fx_leaf
from .declaration import OP
from .reference import output_size


def _check(op, input, offset, weight, bias, stride, padding, dilation, mask, mask_name="mask"):
    """Validates the arguments; returns (stride, padding, dilation) as pairs."""
    check_tensor(op, "input", input, 4, "(N, Cin, H, W)")
    check_tensor(op, "weight", weight, 4, "(Cout, Cin/groups, kh, kw)")
    check_like(op, "weight", weight, "input", input)
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    N, Cin, H, W = input.shape
    Cout, Cin_g, kh, kw = weight.shape
    if Cin_g == 0 or Cin % Cin_g:
        raise ArgumentError(
            f"{op}: input channels Cin={Cin} must be a multiple of weight.shape[1]={Cin_g} (Cin/groups)"
        )
    groups = Cin // Cin_g
    if Cout % groups:
        raise ArgumentError(
            f"{op}: weight's Cout={Cout} must be divisible by groups={groups} (= Cin / weight.shape[1])")
    if kh == 0 or kw == 0:
        raise ArgumentError(f"{op}: weight must have a non-empty kernel, got kh={kh}, kw={kw}")
    for axis, size, pad in (("H", H, padding[0]), ("W", W, padding[1])):
        if size + 2 * pad > INT64_MAX:
            raise ArgumentError(
                f"{op}: the padded size {axis} + 2*padding = {size + 2 * pad} does not fit in 64-bit integers "
                f"(padding {padding})"
            )
    Ho = output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = output_size(W, kw, stride[1], padding[1], dilation[1])
    if Ho <= 0 or Wo <= 0:
        raise ArgumentError(
            f"{op}: output size (Ho, Wo) = ({Ho}, {Wo}) is not positive for input {H}x{W}, kernel {kh}x{kw}, "
            f"stride {stride}, padding {padding}, dilation {dilation}"
        )
    K = kh * kw
    G = None
    if offset is not None:
        check_tensor(op, "offset", offset, 4, "(N, 2*G*kh*kw, Ho, Wo)")
        check_like(op, "offset", offset, "input", input)
        if offset.shape[1] == 0 or offset.shape[1] % (2 * K):
            raise ArgumentError(
                f"{op}: offset must have 2*G*kh*kw channels with kh*kw = {K}, i.e. a positive multiple of "
                f"{2 * K}, got {offset.shape[1]}"
            )
        G = offset.shape[1] // (2 * K)
        check_shape(op, "offset", offset, (N, 2 * G * K, Ho, Wo), "(N, 2*G*kh*kw, Ho, Wo)")
    if mask is not None:
        check_tensor(op, mask_name, mask, 4, "(N, G*kh*kw, Ho, Wo)")
        check_like(op, mask_name, mask, "input", input)
        if G is None:
            if mask.shape[1] == 0 or mask.shape[1] % K:
                raise ArgumentError(
                    f"{op}: {mask_name} must have G*kh*kw channels with kh*kw = {K}, got {mask.shape[1]}"
                )
            G = mask.shape[1] // K
        check_shape(op, mask_name, mask, (N, G * K, Ho, Wo), "(N, G*kh*kw, Ho, Wo)")
    if G is not None and Cin % G:
        raise ArgumentError(f"{op}: input channels Cin={Cin} must be divisible by the offset groups G={G}")
    if bias is not None:
        check_tensor(op, "bias", bias, 1, "(Cout,)")
        check_like(op, "bias", bias, "input", input)
        check_shape(op, "bias", bias, (Cout,), "(Cout,)")
    return stride, padding, dilation


@fx_leaf
def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = (1, 1),
    padding: int | tuple[int, int] = (0, 0),
    dilation: int | tuple[int, int] = (1, 1),
    mask: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Modulated deformable convolution (DCNv2), a drop-in for torchvision.ops.deform_conv2d (ops.md §1).

    out[n, o, ho, wo] = bias[o] + sum_{c in o's group} sum_t weight[o, c', i, j] * mask[n, g*K+t, ho, wo]
                        * bilinear(input[n, c], ho*sh - ph + i*dh + dy, wo*sw - pw + j*dw + dx)

    with (dy, dx) = offset[n, 2(g*K+t) : 2(g*K+t)+2, ho, wo], g = c // (Cin/G) the
    offset group and t = i*kw + j. A sample at or beyond one pixel outside the
    image reads 0 (torchvision's rule); so does a non-finite position. A bilinear
    corner outside the image reads nothing, so a NaN/inf pixel reaches only the
    samples it is a corner of (with offset=None, only those at its position).
    Gradients of any order: with create_graph=True the compiled and Triton
    backends' first-order gradients run through the reference (differentiable).

    Args:
        input: (N, Cin, H, W).
        offset: (N, 2*G*kh*kw, Ho, Wo), (dy, dx) pairs, or None (all zero: no interpolation).
        weight: (Cout, Cin/groups, kh, kw).
        bias: (Cout,) or None.
        stride, padding, dilation: int or (h, w).
        mask: (N, G*kh*kw, Ho, Wo) or None (all one); any real value (no sigmoid applied). A NaN/inf
            mask value makes that output pixel unspecified (the CUDA kernel skips taps that sample
            outside the image, so 0 * inf may not appear); other pixels are unaffected.
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.
    """
    input, offset, weight, bias, mask = autocast_inputs(input, offset, weight, bias, mask)
    stride, padding, dilation = _check(
        "deform_conv2d", input, offset, weight, bias, stride, padding, dilation, mask
    )
    return OP(backend, input, offset, weight, bias, stride, padding, dilation, mask)


@fx_leaf
def pixel_adaptive_conv2d(
    input: torch.Tensor,
    kernel: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Pixel-adaptive convolution (Su et al., CVPR 2019) and, with offsets, the
    pixel-dependent filtering of Suin et al. (CVPR 2020, Eq. 11).

    The same op as deform_conv2d with mask = `kernel`, a per-pixel kernel V of
    shape (N, G*kh*kw, Ho, Wo) taking any real values.
    """
    input, kernel, weight, bias, offset = autocast_inputs(input, kernel, weight, bias, offset)
    check_tensor("pixel_adaptive_conv2d", "kernel", kernel, 4, "(N, G*kh*kw, Ho, Wo)")
    stride, padding, dilation = _check(
        "pixel_adaptive_conv2d", input, offset, weight, bias, stride, padding, dilation, kernel, mask_name="kernel"
    )
    return OP(backend, input, offset, weight, bias, stride, padding, dilation, kernel)
