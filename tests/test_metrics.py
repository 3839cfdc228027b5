"""deblurfast.metrics against independent implementations on the same images:
scikit-image (PSNR, Gaussian SSIM), loop-level float64 transcriptions of MATLAB's
built-in ``ssim`` and of Wang's ``ssim.m`` written here from their definitions
(no filtering library), and values known by hand."""

import math

import numpy as np
import pytest
import torch

from deblurfast.metrics import SSIM_MODES, psnr, rgb_to_y, ssim, to_uint8

try:
    from skimage.metrics import peak_signal_noise_ratio as sk_psnr
    from skimage.metrics import structural_similarity as sk_ssim
except ImportError:  # pragma: no cover - depends on the environment
    sk_psnr = sk_ssim = None

needs_skimage = pytest.mark.skipif(
    sk_ssim is None, reason="scikit-image is not installed (pip install scikit-image): the independent reference"
)

SIGMA = 1.5
EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------
# images


def _pair(h, w, c=3, seed=0, noise=0.08, batch=None):
    """A smooth-ish RGB image in [0, 1] and a noisy, slightly blurred version (float64, HWC)."""
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if batch is None else (batch, h, w, c)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)[..., None] * np.linspace(0.6, 1.0, c)
    tex = rng.random(shape)
    target = np.clip(0.6 * base + 0.4 * tex, 0, 1)
    pred = target.copy()
    ax = -2  # shift-average along W as a mild blur, plus noise
    pred = 0.5 * pred + 0.5 * np.roll(pred, 1, axis=ax)
    pred = np.clip(pred + noise * rng.standard_normal(shape), 0, 1)
    return pred, target


def _u8(a):
    return np.floor(a * 255 + 0.5).astype(np.uint8)


def _chw(a):
    """numpy HWC / NHWC -> torch CHW / NCHW."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.permute(2, 0, 1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def _y_numpy(rgb01):
    """MATLAB rgb2ycbcr / BasicSR Y of [0, 1] RGB, on the [16, 235] scale."""
    return 16.0 + 65.481 * rgb01[..., 0] + 128.553 * rgb01[..., 1] + 24.966 * rgb01[..., 2]


# ---------------------------------------------------------------------------
# independent loop-level references


def _matlab_kernel(ndim):
    """MATLAB ssim.m's getGaussianWeightingFilter: radius ceil(3 sigma); fspecial for
    2-D, the explicit 3-D grid for 3-D; values < eps * max set to 0; normalised."""
    r = math.ceil(3 * SIGMA)
    grid = np.arange(-r, r + 1, dtype=np.float64)
    if ndim == 2:
        y, x = np.meshgrid(grid, grid, indexing="ij")
        k = np.exp(-(x * x + y * y) / (2 * SIGMA * SIGMA))
    else:
        x, y, z = np.meshgrid(grid, grid, grid, indexing="ij")
        k = np.exp(-(x * x + y * y + z * z) / (2 * SIGMA * SIGMA))
    k[k < EPS * k.max()] = 0
    return k / k.sum()


def _matlab_ssim_operands(a, b):
    """(a, b) as float64 (H, W, C), MATLAB's 2-D or 3-D Gaussian window as (k, k, kz), its radius
    r and its radius rz along channels (0 for a 2-D window)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    vol = a.ndim == 3 and a.shape[2] > 1
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    k = _matlab_kernel(3 if vol else 2)
    r = k.shape[0] // 2
    return a, b, (k if vol else k[..., None]), r, (r if vol else 0)


def _matlab_ssim_scalar_loops(a, b, L):
    """MATLAB's ssim(A, ref) with default arguments, one voxel and one tap at a time:
    imfilter(., w, 'conv', 'replicate') (same size, clamped indices) for the five
    moments, the SSIM map, mean over every element. a, b: (H, W) or (H, W, C) arrays."""
    a, b, k, r, rz = _matlab_ssim_operands(a, b)
    H, W, C = a.shape
    A, B, K = a.tolist(), b.tolist(), k.tolist()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    total = 0.0
    for i in range(H):
        for j in range(W):
            for c in range(C):
                mx = my = sxx = syy = sxy = 0.0
                for di in range(-r, r + 1):
                    ii = min(max(i + di, 0), H - 1)
                    for dj in range(-r, r + 1):
                        jj = min(max(j + dj, 0), W - 1)
                        for dc in range(-rz, rz + 1):
                            cc = min(max(c + dc, 0), C - 1)
                            w = K[di + r][dj + r][dc + rz]
                            u, v = A[ii][jj][cc], B[ii][jj][cc]
                            mx += w * u
                            my += w * v
                            sxx += w * u * u
                            syy += w * v * v
                            sxy += w * u * v
                vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
                total += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return total / (H * W * C)


def _matlab_ssim_tap_loops(a, b, L):
    """The same definition as _matlab_ssim_scalar_loops, looping over the kernel taps
    (every voxel at once through clamped index arrays) for larger images."""
    a, b, k, r, rz = _matlab_ssim_operands(a, b)
    H, W, C = a.shape
    I, J, Cc = np.meshgrid(np.arange(H), np.arange(W), np.arange(C), indexing="ij")
    sums = [np.zeros((H, W, C)) for _ in range(5)]
    for di in range(-r, r + 1):
        ii = np.clip(I + di, 0, H - 1)
        for dj in range(-r, r + 1):
            jj = np.clip(J + dj, 0, W - 1)
            for dc in range(-rz, rz + 1):
                cc = np.clip(Cc + dc, 0, C - 1)
                w = k[di + r, dj + r, dc + rz]
                u, v = a[ii, jj, cc], b[ii, jj, cc]
                for s, q in zip(sums, (u, v, u * u, v * v, u * v)):
                    s += w * q
    mx, my, sxx, syy, sxy = sums
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    m = ((2 * mx * my + c1) * (2 * (sxy - mx * my) + c2)) / (
        (mx * mx + my * my + c1) * ((sxx - mx * mx) + (syy - my * my) + c2)
    )
    return m.mean()


def _filter2_valid(window, img):
    """MATLAB filter2(window, img, 'valid'): correlation where the window fits."""
    kh, kw = window.shape
    H, W = img.shape[0] - kh + 1, img.shape[1] - kw + 1
    out = np.zeros((H, W))
    for p in range(kh):
        for q in range(kw):
            out += window[p, q] * img[p : p + H, q : q + W]
    return out


def _sym(i, n):
    """MATLAB 'symmetric' padding index (mirror including the edge)."""
    if i < 0:
        return -i - 1
    if i >= n:
        return 2 * n - 1 - i
    return i


def _wang_ssim(img1, img2, L):
    """Zhou Wang's ssim.m (2009, automatic downsampling) with the default window,
    K and L on one grey plane: f = max(1, round(min(M, N) / 256)) with MATLAB's
    half-up round; imfilter(., ones(f)/f^2, 'symmetric', 'same') (box over offsets
    -floor(f/2) .. f-1-floor(f/2)); img(1:f:end, 1:f:end); filter2 'valid'; mean2."""
    img1 = np.asarray(img1, np.float64)
    img2 = np.asarray(img2, np.float64)
    M, N = img1.shape
    f = max(1, int(math.floor(min(M, N) / 256 + 0.5)))
    if f > 1:
        lo = -(f // 2)
        rows = [[_sym(i + d, M) for d in range(lo, lo + f)] for i in range(0, M, f)]
        cols = [[_sym(j + d, N) for d in range(lo, lo + f)] for j in range(0, N, f)]
        out = []
        for im in (img1, img2):
            d = np.zeros((len(rows), len(cols)))
            for a in range(f):
                for b in range(f):
                    ri = np.array([r[a] for r in rows])
                    ci = np.array([c[b] for c in cols])
                    d += im[np.ix_(ri, ci)] / (f * f)
            out.append(d)
        img1, img2 = out
    window = _matlab_kernel(2)  # fspecial('gaussian', 11, 1.5)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mu1, mu2 = _filter2_valid(window, img1), _filter2_valid(window, img2)
    s1 = _filter2_valid(window, img1 * img1) - mu1 * mu1
    s2 = _filter2_valid(window, img2 * img2) - mu2 * mu2
    s12 = _filter2_valid(window, img1 * img2) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s1 + s2 + c2))
    return m.mean(), f


# ---------------------------------------------------------------------------
# against scikit-image


@needs_skimage
@pytest.mark.parametrize("as_u8", [False, True], ids=["float", "uint8"])
def test_psnr_rgb_matches_skimage(as_u8):
    pred, target = _pair(37, 45)
    if as_u8:
        pred, target, L = _u8(pred), _u8(target), 255
    else:
        L = 1.0
    ref = sk_psnr(target, pred, data_range=L)
    assert float(psnr(pred, target)) == pytest.approx(ref, abs=1e-10)
    assert float(psnr(_chw(pred), _chw(target))) == pytest.approx(ref, abs=1e-10)


@needs_skimage
def test_psnr_y_matches_skimage():
    pred, target = _pair(33, 41, seed=3)
    ref = sk_psnr(_y_numpy(target), _y_numpy(pred), data_range=255)
    assert float(psnr(pred, target, channel="y")) == pytest.approx(ref, abs=1e-10)
    u8p, u8t = _u8(pred), _u8(target)
    ref_u8 = sk_psnr(_y_numpy(u8t / 255.0), _y_numpy(u8p / 255.0), data_range=255)
    assert float(psnr(u8p, u8t, channel="y")) == pytest.approx(ref_u8, abs=1e-10)


def _sk_gauss(a, b, L, channel_axis=-1):
    return sk_ssim(
        a, b, channel_axis=channel_axis, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L
    )


@needs_skimage
@pytest.mark.parametrize("as_u8", [False, True], ids=["float", "uint8"])
@pytest.mark.parametrize("hw", [(11, 11), (29, 52), (64, 47)])
def test_ssim_gaussian_rgb_matches_skimage(hw, as_u8):
    pred, target = _pair(*hw, seed=hw[1])
    if as_u8:
        pred, target = _u8(pred), _u8(target)
        ref = _sk_gauss(pred, target, 255)  # skimage computes uint8 in float64
    else:
        ref = _sk_gauss(pred, target, 1.0)
    assert float(ssim(pred, target)) == pytest.approx(ref, abs=1e-12)
    assert float(ssim(_chw(pred), _chw(target), mode="gaussian")) == pytest.approx(ref, abs=1e-12)


@needs_skimage
def test_ssim_gaussian_y_and_grey_match_skimage():
    pred, target = _pair(40, 35, seed=5)
    ref = _sk_gauss(_y_numpy(pred), _y_numpy(target), 255, channel_axis=None)
    assert float(ssim(pred, target, channel="y")) == pytest.approx(ref, abs=1e-12)
    ref_grey = _sk_gauss(pred[..., 1], target[..., 1], 1.0, channel_axis=None)
    assert float(ssim(pred[..., 1], target[..., 1])) == pytest.approx(ref_grey, abs=1e-12)
    assert float(ssim(_chw(pred[..., 1:2]), _chw(target[..., 1:2]))) == pytest.approx(ref_grey, abs=1e-12)


@needs_skimage
def test_crop_border_matches_skimage_on_the_cropped_images():
    pred, target = _pair(48, 50, seed=7)
    b = 4
    pc, tc = pred[b:-b, b:-b], target[b:-b, b:-b]
    assert float(ssim(pred, target, crop_border=b)) == pytest.approx(_sk_gauss(pc, tc, 1.0), abs=1e-12)
    assert float(psnr(pred, target, crop_border=b)) == pytest.approx(sk_psnr(tc, pc, data_range=1.0), abs=1e-10)
    ref_y = _sk_gauss(_y_numpy(pc), _y_numpy(tc), 255, channel_axis=None)
    assert float(ssim(pred, target, crop_border=b, channel="y")) == pytest.approx(ref_y, abs=1e-12)


@needs_skimage
def test_data_range_255_floats_match_skimage():
    pred, target = _pair(30, 30, seed=9)
    p255, t255 = pred * 255, target * 255
    assert float(ssim(p255, t255, data_range=255)) == pytest.approx(_sk_gauss(p255, t255, 255), abs=1e-12)
    assert float(psnr(p255, t255, data_range=255)) == pytest.approx(sk_psnr(t255, p255, data_range=255), abs=1e-10)


# ---------------------------------------------------------------------------
# MATLAB built-in ssim (mode="matlab") against the loop transcriptions


def test_matlab_rgb_matches_scalar_loops():
    pred, target = _u8(np.stack(_pair(8, 9, seed=11)))  # tiny: the reference loops over 11^3 taps per voxel
    ref = _matlab_ssim_scalar_loops(pred.astype(np.float64), target.astype(np.float64), 255)
    assert float(ssim(pred, target, mode="matlab")) == pytest.approx(ref, abs=1e-12)
    assert float(ssim(pred / 255.0, target / 255.0, mode="matlab")) == pytest.approx(ref, abs=1e-12)


def test_matlab_grey_matches_scalar_loops():
    pred, target = _pair(12, 10, c=1, seed=12)
    ref = _matlab_ssim_scalar_loops(pred[..., 0], target[..., 0], 1.0)
    assert float(ssim(pred[..., 0], target[..., 0], mode="matlab")) == pytest.approx(ref, abs=1e-12)


def test_matlab_scalar_and_tap_references_agree():
    pred, target = _pair(7, 8, seed=13)
    assert _matlab_ssim_tap_loops(pred, target, 1.0) == pytest.approx(
        _matlab_ssim_scalar_loops(pred, target, 1.0), abs=1e-13
    )


@pytest.mark.parametrize("hw", [(40, 53), (5, 7)])
def test_matlab_rgb_matches_tap_loops(hw):
    pred, target = _pair(*hw, seed=14)
    ref = _matlab_ssim_tap_loops(pred, target, 1.0)
    assert float(ssim(pred, target, mode="matlab")) == pytest.approx(ref, abs=1e-12)


def test_matlab_y_and_crop_match_tap_loops():
    pred, target = _pair(36, 31, seed=15)
    ref = _matlab_ssim_tap_loops(_y_numpy(pred), _y_numpy(target), 255)
    assert float(ssim(pred, target, mode="matlab", channel="y")) == pytest.approx(ref, abs=1e-12)
    b = 3
    ref_c = _matlab_ssim_tap_loops(pred[b:-b, b:-b], target[b:-b, b:-b], 1.0)
    assert float(ssim(pred, target, mode="matlab", crop_border=b)) == pytest.approx(ref_c, abs=1e-12)


def test_matlab_rgb_is_volumetric_not_a_channel_average():
    pred, target = _pair(30, 30, seed=16)
    vol = float(ssim(pred, target, mode="matlab"))
    per_channel = np.mean([float(ssim(pred[..., c], target[..., c], mode="matlab")) for c in range(3)])
    assert abs(vol - per_channel) > 1e-4  # the 3-D window mixes R, G, B
    # A grey image repeated in R, G, B: the channel mixing is the identity.
    g_p, g_t = pred[..., :1].repeat(3, -1), target[..., :1].repeat(3, -1)
    assert float(ssim(g_p, g_t, mode="matlab")) == pytest.approx(
        float(ssim(pred[..., 0], target[..., 0], mode="matlab")), abs=1e-13
    )


# ---------------------------------------------------------------------------
# Wang's ssim.m (mode="wang") against the loop transcription


@pytest.mark.parametrize(
    "hw, f",
    [((40, 33), 1), ((383, 400), 1), ((384, 400), 2), ((420, 390), 2), ((640, 700), 3)],
    ids=["f1-small", "f1-383", "f2-384", "f2-390", "f3-640-half-up"],
)
def test_wang_matches_loops(hw, f):
    pred, target = _pair(*hw, c=1, seed=hw[0])
    p, t = _u8(pred[..., 0]), _u8(target[..., 0])
    ref, ref_f = _wang_ssim(p, t, 255)
    assert ref_f == f
    assert float(ssim(p, t, mode="wang")) == pytest.approx(ref, abs=1e-12)


def test_wang_rgb_and_y():
    pred, target = _pair(400, 388, seed=17)  # f = 2
    ref_rgb = np.mean([_wang_ssim(pred[..., c], target[..., c], 1.0)[0] for c in range(3)])
    assert float(ssim(pred, target, mode="wang")) == pytest.approx(ref_rgb, abs=1e-12)
    ref_y, _ = _wang_ssim(_y_numpy(pred), _y_numpy(target), 255)
    assert float(ssim(pred, target, mode="wang", channel="y")) == pytest.approx(ref_y, abs=1e-12)


def test_wang_without_downsampling_is_gaussian_mode():
    pred, target = _pair(100, 120, seed=18)
    assert float(ssim(pred, target, mode="wang")) == pytest.approx(float(ssim(pred, target)), abs=1e-14)


# ---------------------------------------------------------------------------
# known values


@pytest.mark.parametrize("mode", SSIM_MODES)
@pytest.mark.parametrize("channel", ["rgb", "y"])
def test_identical_images(mode, channel):
    _, target = _pair(24, 26, seed=19)
    assert math.isinf(float(psnr(target, target, channel=channel))) and float(psnr(target, target)) > 0
    assert float(ssim(target, target, mode=mode, channel=channel)) == pytest.approx(1.0, abs=1e-14)
    u8 = _u8(target)
    assert math.isinf(float(psnr(u8, u8, channel=channel)))
    assert float(ssim(u8, u8, mode=mode, channel=channel)) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("d", [0.05, 1 / 255, 0.2])
def test_constant_offset_psnr_by_hand(d):
    _, target = _pair(20, 21, seed=20)
    target = 0.1 + 0.6 * target  # keeps target + d inside [0, 1]
    pred = target + d
    assert float(psnr(pred, target)) == pytest.approx(-20 * math.log10(d), abs=1e-9)
    assert float(psnr(pred * 255, target * 255, data_range=255)) == pytest.approx(-20 * math.log10(d), abs=1e-9)
    # Y of an offset in every channel is offset by d * (65.481 + 128.553 + 24.966) = 219 d on the 255 scale.
    assert float(psnr(pred, target, channel="y")) == pytest.approx(-20 * math.log10(219 * d / 255), abs=1e-9)


def test_uint8_offset_psnr_by_hand():
    t = np.full((16, 16, 3), 100, np.uint8)
    p = t + np.uint8(3)
    assert float(psnr(p, t)) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-10)


@pytest.mark.parametrize("mode", SSIM_MODES)
def test_ssim_of_constant_images_by_hand(mode):
    # Constant images: every variance is 0, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) everywhere.
    a, b = 0.3, 0.5
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    x = torch.full((3, 20, 24), a, dtype=torch.float64)
    y = torch.full((3, 20, 24), b, dtype=torch.float64)
    assert float(ssim(x, y, mode=mode)) == pytest.approx(expected, abs=1e-12)  # E[x^2] - E[x]^2 rounding


def test_crop_border_ignores_the_border():
    pred, target = _pair(30, 34, seed=21)
    pred = target.copy()
    pred[:3] = 0.0
    pred[:, -2:] = 1.0
    assert math.isfinite(float(psnr(pred, target)))
    assert math.isinf(float(psnr(pred, target, crop_border=3)))
    for mode in SSIM_MODES:
        assert float(ssim(pred, target, mode=mode)) < 0.99
        assert float(ssim(pred, target, mode=mode, crop_border=3)) == pytest.approx(1.0, abs=1e-14)
    assert float(ssim(pred, target, crop_border=5)) == pytest.approx(
        float(ssim(pred[5:-5, 5:-5], target[5:-5, 5:-5])), abs=1e-15
    )


# ---------------------------------------------------------------------------
# input kinds, batches


@pytest.mark.parametrize("mode", SSIM_MODES)
@pytest.mark.parametrize("channel", ["rgb", "y"])
def test_uint8_and_float_give_the_same_numbers(mode, channel):
    pred, target = _pair(40, 44, seed=22)
    pu, tu = _u8(pred), _u8(target)
    pf, tf = pu / 255.0, tu / 255.0
    for fn, kw in ((psnr, {}), (ssim, {"mode": mode})):
        a = float(fn(pu, tu, channel=channel, **kw))
        assert float(fn(pf, tf, channel=channel, **kw)) == pytest.approx(a, abs=1e-12)
        assert float(fn(_chw(pu), _chw(tu), channel=channel, **kw)) == pytest.approx(a, abs=1e-12)
        assert float(fn(_chw(pf).float(), _chw(tf).float(), channel=channel, **kw)) == pytest.approx(a, abs=1e-6)
        assert float(fn(pu.astype(np.float64), tu.astype(np.float64), data_range=255, channel=channel, **kw)) == (
            pytest.approx(a, abs=1e-12)
        )


@pytest.mark.parametrize("mode", SSIM_MODES)
def test_batches(mode):
    pred, target = _pair(26, 30, seed=23, batch=4)
    p, t = _chw(pred), _chw(target)
    for fn, kw in ((psnr, {}), (ssim, {"mode": mode})):
        per = fn(p, t, reduction="none", **kw)
        assert per.shape == (4,) and per.dtype == torch.float64
        singles = torch.stack([fn(p[i], t[i], **kw) for i in range(4)])
        torch.testing.assert_close(per, singles, rtol=0, atol=1e-14)
        torch.testing.assert_close(fn(p, t, **kw), per.mean(), rtol=0, atol=1e-14)
        assert fn(p[0], t[0], reduction="none", **kw).shape == ()
        # numpy NHWC batches and uint8 batches
        torch.testing.assert_close(fn(pred, target, reduction="none", **kw), per, rtol=0, atol=1e-14)
        assert fn(_u8(pred), _u8(target), reduction="none", **kw).shape == (4,)


def test_batch_with_an_identical_image():
    pred, target = _pair(20, 20, seed=24, batch=2)
    pred[1] = target[1]
    per = psnr(pred, target, reduction="none")
    assert math.isfinite(float(per[0])) and math.isinf(float(per[1]))
    assert math.isinf(float(psnr(pred, target)))


def test_half_precision_inputs_are_computed_in_float64():
    pred, target = _pair(24, 24, seed=25)
    ph, th = _chw(pred).half(), _chw(target).half()
    ref = float(ssim(ph.double(), th.double()))
    assert float(ssim(ph, th)) == pytest.approx(ref, abs=1e-14)
    assert ssim(ph, th).dtype == torch.float64


def test_helpers():
    x = torch.tensor([[[0.0]], [[1.0]], [[0.5]]], dtype=torch.float64)  # R=0, G=1, B=0.5
    assert float(rgb_to_y(x)) == pytest.approx(16 + 128.553 + 0.5 * 24.966)
    assert float(rgb_to_y(x * 255, data_range=255)) == pytest.approx(16 + 128.553 + 0.5 * 24.966)
    assert float(rgb_to_y(torch.ones(3, 1, 1))) == pytest.approx(235.0)
    assert float(rgb_to_y(torch.zeros(3, 1, 1))) == pytest.approx(16.0)
    v = torch.tensor([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.2])
    assert to_uint8(v).tolist() == [0, 0, 1, 2, 128, 255, 255]
    assert to_uint8(v.numpy()).tolist() == [0, 0, 1, 2, 128, 255, 255]
    assert to_uint8(v.numpy()).dtype == np.uint8


# ---------------------------------------------------------------------------
# errors


def test_errors():
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"same shape.*pred \(1, 3, 16, 16\).*target \(1, 3, 16, 15\)"):
        psnr(a, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, torch.rand(2, 3, 16, 16))
    with pytest.raises(TypeError, match=r"pred must be floating point .* or uint8 .*got torch.int32"):
        psnr(a.to(torch.int32), a.to(torch.int32))
    with pytest.raises(TypeError, match=r"target must be floating point .*got numpy int64"):
        ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3), np.int64))
    with pytest.raises(TypeError, match="must both be uint8 or both floating point"):
        psnr((a * 255).to(torch.uint8), a)
    with pytest.raises(ValueError, match=r"pred must have 3 \(RGB\) or 1 \(grey\) channels.*got 4 channels"):
        ssim(torch.rand(1, 4, 16, 16), torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"pred must have 3 \(RGB\) or 1 \(grey\) channels.*got 16 channels"):
        psnr(torch.rand(16, 16, 3), torch.rand(16, 16, 3))  # HWC given as a tensor
    with pytest.raises(ValueError, match=r"channel='y' needs RGB images \(3 channels\), got 1"):
        psnr(torch.rand(1, 16, 16), torch.rand(1, 16, 16), channel="y")
    with pytest.raises(ValueError, match=r"pred must be a tensor \(N, C, H, W\) or \(C, H, W\), got shape \(16, 16\)"):
        psnr(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(TypeError, match="pred must be a torch.Tensor or a numpy.ndarray, got list"):
        psnr([[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="data_range must be 255 \\(or None\\) for uint8"):
        psnr(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), data_range=1.0)
    with pytest.raises(ValueError, match="data_range must be a positive finite number"):
        ssim(a, a, data_range=0)
    with pytest.raises(TypeError, match="data_range must be a positive number or None"):
        ssim(a, a, data_range="255")
    with pytest.raises(ValueError, match="mode must be one of"):
        ssim(a, a, mode="skimage")
    with pytest.raises(ValueError, match="channel must be one of"):
        ssim(a, a, channel="ycbcr")
    with pytest.raises(ValueError, match="reduction must be one of"):
        psnr(a, a, reduction="sum")
    with pytest.raises(ValueError, match="crop_border must be an int >= 0"):
        psnr(a, a, crop_border=-1)
    with pytest.raises(ValueError, match="crop_border=8 leaves nothing of a 16 x 16 image"):
        psnr(a, a, crop_border=8)
    with pytest.raises(ValueError, match=r"mode='gaussian' needs images of at least 11 x 11 .*got 10 x 10"):
        ssim(a, a, crop_border=3)
    with pytest.raises(ValueError, match=r"mode='wang' needs images of at least 11 x 11"):
        ssim(torch.rand(3, 10, 40), torch.rand(3, 10, 40), mode="wang")
    # MATLAB's ssim pads, so small images are fine there.
    assert float(ssim(torch.rand(3, 4, 5), torch.rand(3, 4, 5), mode="matlab")) <= 1.0


@pytest.mark.cuda
def test_cuda_matches_cpu():
    pred, target = _pair(48, 64, seed=26, batch=2)
    p, t = _chw(pred), _chw(target)
    for mode in SSIM_MODES:
        torch.testing.assert_close(
            ssim(p.cuda(), t.cuda(), mode=mode, reduction="none").cpu(), ssim(p, t, mode=mode, reduction="none")
        )
    torch.testing.assert_close(psnr(p.cuda(), t.cuda()).cpu(), psnr(p, t))
