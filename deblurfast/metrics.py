"""PSNR and SSIM as the motion-deblurring papers report them.

    from deblurfast.metrics import psnr, ssim
    psnr(pred, target)                                  # RGB, data range 1, batch mean
    ssim(pred_u8, target_u8, mode="matlab")             # the GoPro / HIDE tables' SSIM
    psnr(pred, target, channel="y", crop_border=4)      # BasicSR-style Y-channel PSNR
    ssim(pred, target, reduction="none")                # one value per image, shape (N,)

Inputs
------
``pred`` and ``target`` are images of the same shape and kind:

* torch tensors ``(N, C, H, W)`` or ``(C, H, W)``;
* numpy arrays ``(N, H, W, C)``, ``(H, W, C)`` or ``(H, W)`` (HWC, as images are read).

``C`` is 3 (RGB, in that order) or 1 (grey). Values are floating point in
``[0, data_range]`` (``data_range`` defaults to 1.0) or ``uint8`` (data range 255;
``data_range`` must then be left at ``None`` or given as 255). Both inputs must be
uint8, or both floating point. Nothing is clamped or rounded: to evaluate the way
the papers do (results written as 8-bit PNGs, then read back), quantize first with
:func:`to_uint8`. Everything is computed in float64 on the inputs' device; the
result is a float64 tensor, 0-d for ``reduction="mean"`` (the mean over the batch)
and, for ``reduction="none"``, shape ``(N,)`` for a batch or 0-d for one image.
Gradients are not tracked (inputs are detached).

``crop_border=b`` drops ``b`` pixels on each side of H and W before anything else.

Y channel (``channel="y"``)
---------------------------
ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr`` computes it, the "Y channel" of the
BasicSR-style metrics: with R, G, B scaled to [0, 1],

    Y = 16 + 65.481 R + 128.553 G + 24.966 B        (range [16, 235])

and the metric is computed on Y with data range 255 (on the same scale). Y is not
rounded; MATLAB's ``rgb2ycbcr`` of a *uint8* image rounds Y to uint8, BasicSR's
float path does not (we follow BasicSR). The RGB order is R, G, B (BasicSR's
``bgr2ycbcr`` takes cv2's B, G, R order: same formula, reversed coefficients).

PSNR
----
``10 log10(data_range^2 / MSE)`` per image, the MSE over all channels and pixels
(after the crop); ``inf`` for identical images. Equal to MATLAB's ``psnr(A, ref)``
on uint8 images and to ``skimage.metrics.peak_signal_noise_ratio``.

SSIM modes
----------
All modes use Wang et al. (2004)'s SSIM with K1 = 0.01, K2 = 0.03,
C1 = (K1 L)^2, C2 = (K2 L)^2 (L = the data range) and a Gaussian weighting of
sigma 1.5, radius 5 (11 taps, weights exp(-x^2 / 2 sigma^2) normalised to sum 1;
MATLAB's ``fspecial('gaussian', 11, 1.5)`` and its 3-D counterpart are products
of this 1-D window), and the map

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

with population (weighted) moments. They differ in border handling, colour and
scale:

``mode="gaussian"``
    Per channel, the window applied only where it fits ("valid": the map is
    (H-10) x (W-10)), the mean of the map averaged over the channels. Equal to
    ``skimage.metrics.structural_similarity(x, y, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L)``: scikit-image filters the whole image with reflect padding
    but then crops the 5-pixel strip where the window does not fit before taking
    the mean, which leaves exactly the valid region. (DeepDeblur-PyTorch's SSIM,
    ``src/loss/metric.py``, is this computation too.) Needs H, W >= 11 after the crop.

``mode="matlab"`` (the SSIM of the GoPro / HIDE tables)
    MATLAB's built-in ``ssim(A, ref)`` (Image Processing Toolbox, R2014a on) with
    its defaults, called on the uint8 RGB images, as in MPRNet's
    ``Deblurring/evaluate_GOPRO_HIDE.m`` (``ssim_val = ssim(input, gt)``), the
    script behind the GoPro / HIDE numbers of MPRNet, Restormer and the papers
    that reuse it (e.g. RDAFNet's ``evaluate/evaluate_PSNR_SSIM.m``). What that
    function does, from its source (``ssim.m``, "Copyright 2013-2014 The
    MathWorks"): an H x W x 3 array is *a 3-D volume* ("RGB images will also be
    processed as 3D volumetric images"; in later releases the default
    ``'DataFormat'`` is ``'SSS'``, three spatial dimensions), so the weighting is
    the 3-D Gaussian ``exp(-(x^2+y^2+z^2) / 2 sigma^2)`` on an 11 x 11 x 11 grid
    (radius ``ceil(3 sigma)`` = 5), normalised; every filter is
    ``imfilter(., w, 'conv', 'replicate')``: same-size output, edges (including
    the 3-sample channel axis) replicated; L = 255 for uint8 (1 for double); the
    result is the mean of the map over all H x W x 3 voxels, borders included.
    No downsampling. Along the channel axis the 11-tap Gaussian over the
    replicated R, G, B slices mixes the channels, so this is *not* the average of
    per-channel SSIMs (that is ``ssim(A, ref, 'DataFormat', 'SSC')``). A 2-D
    image (grey, or ``channel="y"``) gets the 2-D 11 x 11 window with replicate
    padding. MATLAB's ``psnr(input, gt)`` in the same script is :func:`psnr`.

``mode="wang"``
    Zhou Wang's reference MATLAB code ``ssim.m`` ("SSIM Index with automatic
    downsampling, Version 1.0", 2009; the 2003 ``ssim_index.m`` is the same
    without the downsampling) on each channel plane, averaged over channels
    (that code takes one grey plane; use ``channel="y"`` for a single plane). Per
    plane: ``f = max(1, round(min(H, W) / 256))`` (MATLAB rounds halves up); if
    f > 1, the plane is filtered with the f x f box ``ones(f, f) / f^2`` by
    ``imfilter(., lpf, 'symmetric', 'same')`` and subsampled
    ``img(1:f:end, 1:f:end)``; then ``filter2(window, ., 'valid')`` with
    ``fspecial('gaussian', 11, 1.5)`` and ``mean2`` of the map. For an even f the
    box covers offsets -f/2 .. f/2-1 around each pixel: where ``imfilter`` puts
    the centre of an even kernel, taken from the MATLAB-matched tests of the
    ssim.js port (obartra/ssim), not checked against MATLAB here; 720p frames
    (GoPro, HIDE) give f = 3, where no such choice arises. Needs H, W >= 11 after
    the crop.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "rgb_to_y", "to_uint8", "SSIM_MODES"]

SSIM_MODES = ("gaussian", "matlab", "wang")
_CHANNELS = ("rgb", "y")
_REDUCTIONS = ("mean", "none")

K1, K2 = 0.01, 0.03
SIGMA = 1.5
RADIUS = 5  # skimage: int(3.5 * sigma + 0.5); MATLAB ssim: ceil(3 * sigma); Wang: fspecial('gaussian', 11, 1.5)

# BT.601 luma on [0, 1] RGB giving [16, 235] (MATLAB rgb2ycbcr, BasicSR).
Y_COEFFS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0


# ---------------------------------------------------------------------------
# input handling


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _to_nchw(fn: str, name: str, img) -> tuple[torch.Tensor, bool]:
    """`img` as an (N, C, H, W) tensor in its own dtype, and whether it was batched."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
            raise TypeError(
                f"{fn}: {name} must be floating point (values in [0, data_range]) or uint8 (data range 255), "
                f"got numpy {img.dtype}"
            )
        t = torch.from_numpy(np.array(img))  # a copy: the input may be read-only (torch wants writable memory)
        if img.ndim == 2:
            t, batched = t[None, None], False
        elif img.ndim == 3:
            t, batched = t.permute(2, 0, 1)[None], False
        elif img.ndim == 4:
            t, batched = t.permute(0, 3, 1, 2), True
        else:
            raise ValueError(
                f"{fn}: {name} must be a numpy image (H, W), (H, W, C) or (N, H, W, C), got shape {_shape(img.shape)}"
            )
        layout = "(N, H, W, C) / (H, W, C)"
    elif isinstance(img, torch.Tensor):
        if img.dim() == 3:
            t, batched = img.detach()[None], False
        elif img.dim() == 4:
            t, batched = img.detach(), True
        else:
            raise ValueError(f"{fn}: {name} must be a tensor (N, C, H, W) or (C, H, W), got shape {_shape(img.shape)}")
        layout = "(N, C, H, W) / (C, H, W)"
    else:
        raise TypeError(f"{fn}: {name} must be a torch.Tensor or a numpy.ndarray, got {type(img).__name__}")
    if t.dtype != torch.uint8 and not t.dtype.is_floating_point:
        raise TypeError(
            f"{fn}: {name} must be floating point (values in [0, data_range]) or uint8 (data range 255), got {t.dtype}"
        )
    if t.shape[1] not in (1, 3):
        raise ValueError(
            f"{fn}: {name} must have 3 (RGB) or 1 (grey) channels in layout {layout}, "
            f"got {t.shape[1]} channels (shape {_shape(img.shape)})"
        )
    return t, batched


def _prepare(fn, pred, target, data_range, crop_border, channel):
    """Both images as float64 (N, C, H, W) scaled to [0, 1] (the data range becomes 1), cropped, Y taken."""
    if channel not in _CHANNELS:
        raise ValueError(f"{fn}: channel must be one of {_CHANNELS}, got {channel!r}")
    x, batched = _to_nchw(fn, "pred", pred)
    y, _ = _to_nchw(fn, "target", target)
    if x.shape != y.shape:
        raise ValueError(
            f"{fn}: pred and target must have the same shape, got pred {_shape(pred.shape)} and target "
            f"{_shape(target.shape)}" + ("" if type(pred) is type(target) else " (compared as (N, C, H, W))")
        )
    if (x.dtype == torch.uint8) != (y.dtype == torch.uint8):
        raise TypeError(
            f"{fn}: pred and target must both be uint8 or both floating point, got pred {x.dtype} and target {y.dtype}"
        )
    if x.device != y.device:
        raise ValueError(f"{fn}: pred is on {x.device} but target is on {y.device}; expected the same device")
    if data_range is not None and (isinstance(data_range, bool) or not isinstance(data_range, numbers.Real)):
        raise TypeError(f"{fn}: data_range must be a positive number or None, got {data_range!r}")
    if x.dtype == torch.uint8:
        if data_range is not None and float(data_range) != 255.0:
            raise ValueError(f"{fn}: data_range must be 255 (or None) for uint8 images, got {data_range!r}")
        data_range = 255.0
    elif data_range is None:
        data_range = 1.0
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"{fn}: data_range must be a positive finite number, got {data_range!r}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"{fn}: crop_border must be an int >= 0, got {crop_border!r}")
    H, W = x.shape[-2:]
    if 2 * crop_border >= min(H, W):
        raise ValueError(f"{fn}: crop_border={crop_border} leaves nothing of a {H} x {W} image")
    if crop_border:
        b = crop_border
        x, y = x[..., b:-b, b:-b], y[..., b:-b, b:-b]
    x = x.to(torch.float64) / data_range
    y = y.to(torch.float64) / data_range
    if channel == "y":
        if x.shape[1] != 3:
            raise ValueError(f"{fn}: channel='y' needs RGB images (3 channels), got {x.shape[1]} channel(s)")
        x, y = _luma(x), _luma(y)
    return x, y, batched


def _luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 Y of [0, 1] RGB, on the [0, 1] scale of the 255 data range: Y_[16, 235] / 255."""
    r, g, b = x.unbind(1)
    return ((Y_OFFSET + Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b) / 255.0).unsqueeze(1)


def _reduce(fn: str, values: torch.Tensor, reduction: str, batched: bool) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values if batched else values[0]
    raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# ---------------------------------------------------------------------------
# public helpers


def rgb_to_y(img: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """BT.601 luma of an RGB tensor (..., 3, H, W) in [0, data_range], as MATLAB's
    ``rgb2ycbcr`` / BasicSR: ``16 + 65.481 R + 128.553 G + 24.966 B`` on [0, 1]
    RGB, returned (..., 1, H, W) in float64 on the [16, 235] scale (not rounded)."""
    if not isinstance(img, torch.Tensor) or img.dim() < 3 or img.shape[-3] != 3:
        shape = _shape(img.shape) if hasattr(img, "shape") else type(img).__name__
        raise ValueError(f"rgb_to_y: img must be a tensor (..., 3, H, W), got {shape}")
    x = img.detach().to(torch.float64) / float(data_range)
    r, g, b = x.unbind(-3)
    return (Y_OFFSET + Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b).unsqueeze(-3)


def to_uint8(img, data_range: float = 1.0):
    """Quantize a floating image in [0, data_range] to uint8, as results are saved
    as 8-bit PNGs before the papers' evaluation: clamp to [0, 1] after scaling,
    ``floor(255 x + 0.5)`` (halves up, as MATLAB's ``im2uint8``; writers that
    round halves to even differ only on exact halves). Keeps the type (tensor or
    numpy array) and layout."""
    if isinstance(img, np.ndarray):
        x = np.clip(img.astype(np.float64) / float(data_range), 0.0, 1.0)
        return np.floor(x * 255.0 + 0.5).astype(np.uint8)
    if isinstance(img, torch.Tensor):
        x = (img.detach().to(torch.float64) / float(data_range)).clamp(0.0, 1.0)
        return torch.floor(x * 255.0 + 0.5).to(torch.uint8)
    raise TypeError(f"to_uint8: img must be a torch.Tensor or a numpy.ndarray, got {type(img).__name__}")


# ---------------------------------------------------------------------------
# PSNR


def psnr(
    pred,
    target,
    data_range: float | None = None,
    crop_border: int = 0,
    channel: str = "rgb",
    reduction: str = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` per image,
    the MSE over all channels and pixels after the crop (inf for identical images).

    ``data_range`` is 1.0 for floating inputs unless given, 255 for uint8. With
    ``channel="y"`` the PSNR of the BT.601 luma (see the module docstring) with
    data range 255 on its [16, 235] scale. ``reduction="mean"`` averages the
    per-image values (as the papers' tables do); ``"none"`` returns them."""
    x, y, batched = _prepare("psnr", pred, target, data_range, crop_border, channel)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"psnr: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    mse = (x - y).square().flatten(1).mean(1)
    # Scaled to data range 1: 10 log10(1 / mse); mse == 0 gives +inf.
    values = -10.0 * torch.log10(mse)
    return _reduce("psnr", values, reduction, batched)


# ---------------------------------------------------------------------------
# SSIM


def _gauss1d(device) -> torch.Tensor:
    r = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(r * r) / (2.0 * SIGMA * SIGMA))
    return g / g.sum()


def _sep_filter(planes: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable correlation of every (H, W) plane of (B, H, W) with g x g', 'valid'.

    As weighted sums of shifted views, in place (several times faster than a
    float64 conv2d on CPU)."""
    taps = [float(v) for v in g.tolist()]
    k = len(taps)
    H, W = planes.shape[-2] - k + 1, planes.shape[-1] - k + 1
    rows = planes[..., 0:H, :] * taps[0]
    for i in range(1, k):
        rows.add_(planes[..., i : i + H, :], alpha=taps[i])
    out = rows[..., 0:W] * taps[0]
    for i in range(1, k):
        out.add_(rows[..., i : i + W], alpha=taps[i])
    return out


def _ssim_map(mx, my, sxx, syy, sxy) -> torch.Tensor:
    """Wang et al.'s SSIM map from the weighted moments E[x], E[y], E[x^2], E[y^2],
    E[xy], on the [0, 1] scale (L = 1)."""
    c1, c2 = K1 * K1, K2 * K2
    vx = sxx - mx * mx
    vy = syy - my * my
    cxy = sxy - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _moments_planes(x: torch.Tensor, y: torch.Tensor, filt) -> tuple[torch.Tensor, ...]:
    """filt applied to x, y, x^2, y^2, xy, each (N, C, H, W), in one batched call."""
    N, C = x.shape[:2]
    stack = torch.stack([x, y, x * x, y * y, x * y], 0).flatten(0, 2)  # (5 N C, H, W)
    out = filt(stack)
    return tuple(out.view(5, N, C, *out.shape[-2:]).unbind(0))


def _check_window_fits(fn: str, mode: str, H: int, W: int, what: str) -> None:
    k = 2 * RADIUS + 1
    if H < k or W < k:
        raise ValueError(
            f"{fn}: mode={mode!r} needs images of at least {k} x {k} {what}, got {H} x {W}"
        )


def _ssim_gaussian(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    g = _gauss1d(x.device)
    moments = _moments_planes(x, y, lambda p: _sep_filter(p, g))
    return _ssim_map(*moments).flatten(1).mean(1)


def _channel_mix(C: int, g: torch.Tensor) -> torch.Tensor:
    """(C, C) weights of the Gaussian along a C-sample axis with replicated ends:
    out[c] = sum_k g[k] in[clamp(c + k - R, 0, C - 1)]."""
    w = torch.zeros(C, C, dtype=g.dtype, device=g.device)
    for c in range(C):
        for k in range(g.numel()):
            w[c, min(max(c + k - RADIUS, 0), C - 1)] += g[k]
    return w


def _ssim_matlab(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    g = _gauss1d(x.device)
    C = x.shape[1]

    def filt(p):  # imfilter(p, gauss, 'conv', 'replicate'), 'same' size, per plane
        p = F.pad(p.unsqueeze(1), (RADIUS, RADIUS, RADIUS, RADIUS), mode="replicate").squeeze(1)
        return _sep_filter(p, g)

    moments = _moments_planes(x, y, filt)
    if C > 1:  # the third (channel) axis of MATLAB's 3-D volume
        w = _channel_mix(C, g)
        moments = tuple(torch.einsum("dc,nchw->ndhw", w, m) for m in moments)
    return _ssim_map(*moments).flatten(1).mean(1)


def _matlab_round(v: float) -> int:
    return int(math.floor(v + 0.5))  # MATLAB round() of a non-negative value: halves away from zero


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Indices of MATLAB's 'symmetric' padding (mirror including the edge sample)."""
    i = torch.arange(-before, n + after, device=device)
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _wang_downsample(x: torch.Tensor) -> torch.Tensor:
    H, W = x.shape[-2:]
    f = max(1, _matlab_round(min(H, W) / 256.0))
    if f == 1:
        return x
    before, after = f // 2, f - 1 - f // 2
    x = x.index_select(-2, _symmetric_index(H, before, after, x.device))
    x = x.index_select(-1, _symmetric_index(W, before, after, x.device))
    # 'same' box filter followed by img(1:f:end, 1:f:end): windows starting every f samples.
    N, C = x.shape[:2]
    out = F.avg_pool2d(x.flatten(0, 1).unsqueeze(1), kernel_size=f, stride=f)
    return out.view(N, C, *out.shape[-2:])


def _ssim_wang(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = _wang_downsample(x), _wang_downsample(y)
    _check_window_fits("ssim", "wang", *x.shape[-2:], "after its downsampling")
    return _ssim_gaussian(x, y)


def ssim(
    pred,
    target,
    data_range: float | None = None,
    crop_border: int = 0,
    channel: str = "rgb",
    mode: str = "gaussian",
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), 11-tap sigma 1.5 Gaussian
    weighting, K1 = 0.01, K2 = 0.03, per image.

    ``mode`` (see the module docstring for the exact definitions and sources):
    ``"gaussian"`` = scikit-image's ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``, valid window, mean over channels;
    ``"matlab"`` = MATLAB's built-in ``ssim(A, ref)`` on the H x W x 3 image as a
    3-D volume with replicate padding, the SSIM of the GoPro / HIDE tables
    (MPRNet's ``evaluate_GOPRO_HIDE.m``); ``"wang"`` = Wang's reference
    ``ssim.m`` with its automatic downsampling, per channel.

    ``data_range`` is 1.0 for floating inputs unless given, 255 for uint8;
    ``channel="y"`` computes it on BT.601 luma; ``reduction="mean"`` averages
    the per-image values, ``"none"`` returns them."""
    if mode not in SSIM_MODES:
        raise ValueError(f"ssim: mode must be one of {SSIM_MODES}, got {mode!r}")
    x, y, batched = _prepare("ssim", pred, target, data_range, crop_border, channel)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"ssim: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if mode == "gaussian":
        _check_window_fits("ssim", mode, *x.shape[-2:], "(after crop_border)")
        values = _ssim_gaussian(x, y)
    elif mode == "matlab":
        values = _ssim_matlab(x, y)
    else:
        _check_window_fits("ssim", mode, *x.shape[-2:], "(after crop_border)")
        values = _ssim_wang(x, y)
    return _reduce("ssim", values, reduction, batched)
