"""ASPDC (Huo et al., CVPRW 2022): `aspdc` (DeblurringNet) and `aspdc_reblur` (BlurringNet),
checked against shared/specs/models/aspdc.md."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblurfast
from deblurfast.engine import accelerable_layers
from deblurfast.models import create, load_pretrained, num_parameters
from deblurfast.models.aspdc import GROUPS, d0_mask_mmcv, xavier_init_
from deblurfast.testing import assert_close
from helpers import assert_training_parity

NARROW = dict(channels=(4, 8, 8), head_res_blocks=1, group_res_blocks=1, mask_res_blocks=1)
NARROW_RE = dict(channels=(4, 6, 8, 8))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def randomized(model, seed=0):
    """The official training init (Xavier-normal conv weights) plus random biases, so offsets and
    masks are non-trivial (the constructors zero the offset/mask predictors)."""
    torch.manual_seed(seed)
    xavier_init_(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


# ----------------------------------------------------------------------------- state_dict, parameters

def _conv(prefix, cout, cin, k=3):
    return [(f"{prefix}.weight", (cout, cin, k, k)), (f"{prefix}.bias", (cout,))]


def _convT(prefix, cin, cout):
    return [(f"{prefix}.weight", (cin, cout, 3, 3)), (f"{prefix}.bias", (cout,))]


def _res(prefix, c):
    return _conv(f"{prefix}.model.0", c, c) + _conv(f"{prefix}.model.2", c, c)


def expected_deblurring_keys():
    keys = _conv("head.0", 32, 3) + _res("head.2", 32) + _res("head.3", 32) + _conv("head.4", 64, 32) \
        + _conv("head.6", 128, 64)
    for g in ("en_res_group1", "en_res_group2", "en_res_group3", "de_res_group3", "de_res_group2", "de_res_group1"):
        keys += _res(f"{g}_1.0", 128) + _res(f"{g}_1.1", 128)
        a = f"{g}_2"
        keys += _conv(f"{a}.res_conv.0", 128, 128)
        keys += _conv(f"{a}.hallucination_d0.m_conv", 9, 128) + _conv(f"{a}.hallucination_d0.dconv", 128, 128)
        for d in (1, 2, 3):
            b = f"{a}.hallucination_d{d}.hallucination_conv"
            keys += _conv(f"{b}.p_conv", 18, 128) + _conv(f"{b}.m_conv", 9, 128) + _conv(f"{b}.dconv", 128, 128)
        keys += _conv(f"{a}.mask_conv.0", 128, 128) + _res(f"{a}.mask_conv.2", 128) + _res(f"{a}.mask_conv.3", 128)
        keys += _conv(f"{a}.mask_conv.4", 4, 128, k=1) + _conv(f"{a}.fusion_conv", 128, 128)
    keys += _conv("dense_conv.0", 128, 768)
    keys += _convT("tail.0", 128, 64) + _convT("tail.2", 64, 32) + _conv("tail.4", 3, 32)
    return keys


def expected_blurring_keys():
    keys = _conv("head_conv.0", 16, 6) + _conv("kernel_head_conv", 9, 16)
    for i, (cin, c) in enumerate([(16, 32), (32, 64), (64, 128)], start=1):
        keys += _conv(f"body_conv_{i}.0", c, cin) + _res(f"body_conv_{i}.1", c) + _conv(f"kernel_conv_{i}", 9, c)
    for i, (c, cout) in zip((3, 2, 1), [(128, 64), (64, 32), (32, 16)]):
        keys += _res(f"body_dconv_{i}.0", c) + _convT(f"body_dconv_{i}.1", c, cout)
        keys += _conv(f"kernel_dconv_{i}", 9, cout)
    return keys + _conv("tail", 3, 16)


def test_deblurring_state_dict_paper_size():
    m = create("aspdc")
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert len(got) == 298
    assert got == expected_deblurring_keys()  # keys, shapes and order
    assert all(v.dtype == torch.float32 for v in m.state_dict().values()) and not list(m.buffers())
    assert num_parameters(m) == 15_016_503
    parts = {"head": 130_240, "en_res_group1_1": 590_336, "en_res_group1_2": 1_727_710, "dense_conv": 884_864,
             "tail": 93_123}
    assert {k: num_parameters(getattr(m, k)) for k in parts} == parts
    a = m.de_res_group1_2
    branch = {"res_conv": 147_584, "hallucination_d0": 157_961, "hallucination_d1": 178_715,
              "hallucination_d2": 178_715, "hallucination_d3": 178_715, "mask_conv": 738_436, "fusion_conv": 147_584}
    assert {k: num_parameters(getattr(a, k)) for k in branch} == branch
    # the dilations sit on the offset/mask predictors; the deformable convs are 3x3, dilation 1, padding 1
    for i, d in zip((1, 2, 3), (1, 2, 4)):
        b = getattr(a, f"hallucination_d{i}").hallucination_conv
        assert b.p_conv.dilation == b.m_conv.dilation == (d, d) and b.p_conv.padding == (d, d)
        assert b.dconv.dilation == (1, 1) and b.dconv.padding == (1, 1) and b.dconv.backend == "reference"
    assert a.hallucination_d0.m_conv.padding == (0, 0)  # the unpadded mask conv of the quirk
    assert type(m).checkpoint_keys == ("deblurring_state_dict",)


def test_blurring_state_dict_paper_size():
    m = create("aspdc_reblur")
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert len(got) == 54
    assert got == expected_blurring_keys()
    assert num_parameters(m) == 998_802 and not list(m.buffers())
    assert m.dynamic_conv.backend == "reference" and m.dynamic_conv.padding_mode == "reflect"
    assert type(m).checkpoint_keys == ("blurring_state_dict",)


def test_official_init():
    """Constructors zero every offset/mask predictor; xavier_init_ (the training script's) then
    redraws all conv weights and keeps biases."""
    m = create("aspdc", **NARROW)
    preds = [m.en_res_group1_2.hallucination_d0.m_conv, m.en_res_group1_2.hallucination_d2.hallucination_conv.p_conv,
             m.de_res_group1_2.hallucination_d3.hallucination_conv.m_conv]
    assert all(c.weight.abs().sum() == 0 and c.bias.abs().sum() == 0 for c in preds)
    xavier_init_(m)
    assert all(c.weight.abs().sum() > 0 and c.bias.abs().sum() == 0 for c in preds)
    assert m.en_res_group1_2.hallucination_d1.hallucination_conv.dconv.weight.std() > 0


# ----------------------------------------------------------------------------- forward shapes

@pytest.mark.parametrize("layout,independent", [("mmcv", False), ("mmcv", True), ("aligned", False),
                                                ("padded", False)])
def test_deblurring_forward_shapes(layout, independent):
    m = randomized(create("aspdc", d0_mask_layout=layout, batch_independent=independent, **NARROW))
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        out, res = m(x)
        assert out.shape == res.shape == x.shape
        torch.testing.assert_close(out, x + res, rtol=0, atol=0)
        y, offsets = m.en_res_group2_2(torch.randn(2, 8, 4, 5), return_offsets=True)
        assert y.shape == (2, 8, 4, 5) and offsets.shape == (2, 54, 4, 5)
    for bad in [(16, 18), (14, 16), (8, 16)]:  # not a multiple of 4, or H/4 < 3
        with pytest.raises(ValueError, match="multiples of 4"):
            m(torch.randn(1, 3, *bad))
    with pytest.raises(ValueError, match="d0_mask_layout"):
        create("aspdc", d0_mask_layout="nope", **NARROW)


def test_blurring_forward_shapes():
    m = randomized(create("aspdc_reblur", **NARROW_RE))
    b, s = torch.randn(2, 3, 16, 24), torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        assert m(b, s).shape == (2, 3, 16, 24)
        assert m(torch.randn(1, 3, 24, 16), torch.randn(1, 3, 24, 16)).shape == (1, 3, 24, 16)
    for bad in [(16, 20), (8, 16)]:  # not a multiple of 8, or H/8 < 2 (reflection padding)
        with pytest.raises(ValueError, match="multiples of 8"):
            m(torch.randn(1, 3, *bad), torch.randn(1, 3, *bad))
    with pytest.raises(TypeError, match="two images"):
        m(b)


# ----------------------------------------------------------------------------- d0 quirk (spec §3.1)

def _mask_by_loops(raw, h, w, independent=False):
    """μ0_eff[b, k, y, x] = m[b·9·P + k·h·w + y·w + x] (0 past the end), m the flat raw mask;
    decoded back into raw's (b', k', y', x') one element at a time."""
    N, K, h2, w2 = raw.shape
    P = h2 * w2
    out = torch.zeros(N, K, h, w, dtype=raw.dtype)
    for b in range(N):
        for k in range(K):
            for y in range(h):
                for x in range(w):
                    idx = (0 if independent else b * K * P) + k * h * w + y * w + x
                    if independent and idx >= K * P:
                        continue
                    src_b = b if independent else idx // (K * P)
                    if src_b >= N:
                        continue
                    rem = idx % (K * P) if not independent else idx
                    kk, r = divmod(rem, P)
                    yy, xx = divmod(r, w2)
                    out[b, k, y, x] = raw[src_b, kk, yy, xx]
    return out


def _mask_by_strided_view(raw, h, w):
    N, K = raw.shape[:2]
    P = raw.shape[2] * raw.shape[3]
    m = raw.reshape(-1)
    m = torch.cat([m, m.new_zeros((N - 1) * K * P + K * h * w - m.numel())])
    return m.as_strided((N, K, h, w), (K * P, h * w, w, 1))


def _conv_with_tap_mask(s, mask, weight, bias):
    """f0[o, y, x] = bias[o] + Σ_c Σ_ij weight[o, c, i, j] · mask[3i+j, y, x] · s_pad[c, y+i, x+j]."""
    N, C, h, w = s.shape
    cols = F.unfold(s, 3, padding=1).reshape(N, C, 9, h, w) * mask[:, None]
    return torch.einsum("ock,nckhw->nohw", weight.reshape(weight.shape[0], C, 9), cols) + bias[None, :, None, None]


def test_d0_mask_is_mmcvs_strided_view():
    torch.manual_seed(1)
    a = randomized(create("aspdc", **NARROW).en_res_group1_2, seed=1)
    d0 = a.hallucination_d0
    s = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        raw = torch.sigmoid(F.conv2d(s, d0.m_conv.weight, d0.m_conv.bias))  # (2, 9, 7, 9)
        assert raw.shape == (2, 9, 7, 9)
        expected = _mask_by_loops(raw, 9, 11)
        assert torch.equal(expected, _mask_by_strided_view(raw, 9, 11))
        got = d0.mask(s)
        assert torch.equal(got, expected)
        # sample 0 reads into sample 1's buffer where b*9*P + k*h*w + y*w + x >= 9*P (taps 5..8 here):
        # changing image 1 changes image 0's mask there, and only there, and image 0's output
        P, hw = 7 * 9, 9 * 11
        flat = torch.arange(9)[:, None] * hw + torch.arange(hw)[None, :]  # (tap, y*w + x) of sample 0
        foreign = (flat >= 9 * P).reshape(9, 9, 11)
        assert foreign[:5].sum() == 0 and foreign[5:].sum() > 0
        s2 = s.clone()
        s2[1] += 1.0
        got2 = d0.mask(s2)
        assert torch.equal(got2[0][~foreign], got[0][~foreign])
        assert (got2[0][foreign] != got[0][foreign]).all()
        assert not torch.equal(d0(s2)[0], d0(s)[0])
        # the last sample reads past the end of the buffer (index >= N*9*P): zeros there
        past = (9 * P + flat >= 2 * 9 * P).reshape(9, 9, 11)
        assert past.sum() > 0 and (got[1][past] == 0).all() and (got[1][~past] > 0).all()
        # the branch output is the plain 3x3 conv with this per-pixel per-tap mask (zero offsets)
        assert_close(d0(s), _conv_with_tap_mask(s, expected, d0.dconv.weight, d0.dconv.bias), what="d0 output")

        # batch_independent: every sample gets the N = 1 semantics, whatever its neighbours
        d0.batch_independent = True
        ind = d0.mask(s)
        assert torch.equal(ind, _mask_by_loops(raw, 9, 11, independent=True))
        assert torch.equal(ind[1], got[1])  # the last sample is the same either way
        d0.batch_independent = False
        for b in range(2):
            assert_close(d0.mask(s[b : b + 1])[0], ind[b], what="N = 1 run")  # the conv may round differently
        assert not torch.equal(ind[0], got[0])
        assert torch.equal(d0_mask_mmcv(raw, 9, 11, batch_independent=True), ind)


def test_d0_clean_layouts():
    a = randomized(create("aspdc", d0_mask_layout="aligned", **NARROW).en_res_group1_2, seed=2)
    d0 = a.hallucination_d0
    s = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        raw = torch.sigmoid(F.conv2d(s, d0.m_conv.weight, d0.m_conv.bias))
        aligned = d0.mask(s)
        # mask pixel (y, x) of the unpadded conv is centred on input pixel (y+1, x+1)
        assert torch.equal(aligned[..., 1:-1, 1:-1], raw)
        assert aligned[..., 0, :].abs().sum() == aligned[..., -1, :].abs().sum() == 0
        assert aligned[..., :, 0].abs().sum() == aligned[..., :, -1].abs().sum() == 0
        assert_close(d0.mask(s[1:]), aligned[1:])  # batch-independent by construction
        d0.layout = "padded"
        padded = d0.mask(s)
        assert_close(padded, torch.sigmoid(F.conv2d(s, d0.m_conv.weight, d0.m_conv.bias, padding=1)))
        assert_close(padded[..., 1:-1, 1:-1], raw)  # same interior, a real mask on the border
        assert (padded[..., 0, :] > 0).all()
        assert_close(d0(s), _conv_with_tap_mask(s, padded, d0.dconv.weight, d0.dconv.bias))


def test_d0_mask_gopro_undefined_region():
    """Spec §3.1: at 180x320 (GoPro / 4), N = 1, the mmcv read passes the end of the mask buffer
    only for tap 8 at row 151, columns 316-319, and rows 152-179: 8,964 positions (read as 0)."""
    h, w = 180, 320
    eff = d0_mask_mmcv(torch.ones(1, 9, h - 2, w - 2), h, w)
    zero = eff[0] == 0
    assert zero.sum() == 8964 and not zero[:8].any()
    assert zero[8, 151, 316:].all() and not zero[8, 151, :316].any() and zero[8, 152:].all()
    assert not zero[8, :151].any()


# ----------------------------------------------------------------------------- forward vs the spec

def _dcn(s, offset, mask, weight, bias):
    """mmcv's modulated DCN (stride 1, padding 1, dilation 1) by explicit bilinear sampling:
    grid_sample(align_corners=True, zeros) gives 0 for every neighbour outside the image."""
    N, C, h, w = s.shape
    ys = torch.arange(h, dtype=s.dtype)[:, None]
    xs = torch.arange(w, dtype=s.dtype)[None, :]
    out = bias[None, :, None, None].expand(N, -1, h, w).clone()
    for k in range(9):
        i, j = divmod(k, 3)
        py = ys - 1 + i + offset[:, 2 * k]
        px = xs - 1 + j + offset[:, 2 * k + 1]
        grid = torch.stack([2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1], -1)
        sample = F.grid_sample(s, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + torch.einsum("oc,nchw->nohw", weight[:, :, i, j], sample * mask[:, k : k + 1])
    return out


def _aspdc_by_spec(a, x):
    s = a.res_conv(x)
    d0 = a.hallucination_d0
    raw = torch.sigmoid(F.conv2d(s, d0.m_conv.weight, d0.m_conv.bias))
    fs = [_conv_with_tap_mask(s, _mask_by_strided_view(raw, *s.shape[-2:]), d0.dconv.weight, d0.dconv.bias)]
    for i in (1, 2, 3):
        b = getattr(a, f"hallucination_d{i}").hallucination_conv
        fs.append(_dcn(s, b.p_conv(s), torch.sigmoid(b.m_conv(s)), b.dconv.weight, b.dconv.bias))
    alpha = torch.softmax(a.mask_conv(x), 1)
    return a.fusion_conv(sum(alpha[:, i : i + 1] * f for i, f in enumerate(fs))) + x


def test_deblurring_forward_matches_spec():
    m = randomized(create("aspdc", **NARROW), seed=3)
    with torch.no_grad():  # offsets of a few pixels, fractional, some far outside the image
        m.en_res_group1_2.hallucination_d2.hallucination_conv.p_conv.bias.normal_(0, 3.0)
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        f = m.head(x)
        outs = []
        for g in GROUPS:  # en1, en2, en3, de3, de2, de1; no skips
            f = _aspdc_by_spec(getattr(m, f"{g}_2"), getattr(m, f"{g}_1")(f))
            outs.append(f)
        r = m.tail(m.dense_conv(torch.cat(outs, 1)))
        out, res = m(x)
    assert_close(res, r, what="residual")
    assert_close(out, x + r, what="output")


def _dynamic_filter_by_unfold(f, kappa):
    N, C, H, W = f.shape
    cols = F.unfold(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3).reshape(N, C, 9, H, W)
    return torch.einsum("nkhw,nckhw->nchw", torch.softmax(kappa, 1), cols)


def test_blurring_forward_matches_spec():
    m = randomized(create("aspdc_reblur", **NARROW_RE), seed=4)
    B, S = torch.randn(2, 3, 16, 24), torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        # pass 1 on concat(blurred, sharp): kernels
        h0 = m.head_conv(torch.cat([B, S], 1))
        e1 = m.body_conv_1(h0)
        e2 = m.body_conv_2(e1)
        e3 = m.body_conv_3(e2)
        u3 = m.body_dconv_3(e3) + e2
        u2 = m.body_dconv_2(u3) + e1
        u1 = m.body_dconv_1(u2)
        k = [m.kernel_head_conv(h0), m.kernel_conv_1(e1), m.kernel_conv_2(e2), m.kernel_conv_3(e3),
             m.kernel_dconv_3(u3), m.kernel_dconv_2(u2), m.kernel_dconv_1(u1)]
        dc = _dynamic_filter_by_unfold
        # pass 2 on concat(sharp, sharp): filtered features
        g0 = dc(m.head_conv(torch.cat([S, S], 1)), k[0])
        g1 = dc(m.body_conv_1(g0), k[1])
        g2 = dc(m.body_conv_2(g1), k[2])
        g3 = dc(m.body_conv_3(g2), k[3])
        v3 = dc(m.body_dconv_3(g3) + g2, k[4])
        v2 = dc(m.body_dconv_2(v3) + g1, k[5])
        v1 = dc(m.body_dconv_1(v2), k[6])
        expected = m.tail(v1)
        got = m(B, S)
    assert [t.shape[-2:] for t in k] == [(16, 24), (8, 12), (4, 6), (2, 3), (4, 6), (8, 12), (16, 24)]
    assert_close(got, expected, what="reblurred")
    assert not torch.allclose(m(S, B).detach(), got)  # blurred goes first


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_containers(tmp_path):
    deb = randomized(create("aspdc", **NARROW), seed=5)
    reb = randomized(create("aspdc_reblur", **NARROW_RE), seed=6)
    torch.save({"epoch": 1000, "deblurring_state_dict": deb.state_dict()}, tmp_path / "DeblurringNet_FT.pth")
    torch.save({"blurring_state_dict": reb.state_dict()}, tmp_path / "ReBlurringNet.pth")
    # a file holding both containers: each model picks its own (checkpoint_keys)
    torch.save({"deblurring_state_dict": deb.state_dict(), "blurring_state_dict": reb.state_dict()},
               tmp_path / "both.pth")
    for path in ("DeblurringNet_FT.pth", "both.pth"):
        got = load_pretrained(create("aspdc", **NARROW), str(tmp_path / path), strict=True)
        assert all(torch.equal(v, deb.state_dict()[k]) for k, v in got.state_dict().items())
    for path in ("ReBlurringNet.pth", "both.pth"):
        got = load_pretrained(create("aspdc_reblur", **NARROW_RE), str(tmp_path / path), strict=True)
        assert all(torch.equal(v, reb.state_dict()[k]) for k, v in got.state_dict().items())
    with pytest.raises(deblurfast.models.CheckpointError, match="missing"):
        load_pretrained(create("aspdc_reblur", **NARROW_RE), str(tmp_path / "DeblurringNet_FT.pth"))


@pytest.mark.parametrize("name", ["aspdc", "aspdc_reblur"])
def test_state_dict_round_trip(tmp_path, name):
    cfg = NARROW if name == "aspdc" else NARROW_RE
    src = randomized(create(name, **cfg), seed=7)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = load_pretrained(create(name, **cfg), str(tmp_path / "w.pth"))
    x = torch.randn(2, 3, 16, 16)
    args = (x,) if name == "aspdc" else (x, torch.randn(2, 3, 16, 16))
    with torch.no_grad():
        a, b = src(*args), dst(*args)
    a, b = (a[0], b[0]) if name == "aspdc" else (a, b)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- accelerated vs reference

def _models_and_inputs(name, N=2, H=16, W=16, seed=8):
    cfg = NARROW if name == "aspdc" else NARROW_RE
    m = randomized(create(name, **cfg), seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, H, W, generator=g)
    args = (x,) if name == "aspdc" else (x, torch.randn(N, 3, H, W, generator=g))
    return m, args


def _image(y):
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("name", ["aspdc", "aspdc_reblur"])
@pytest.mark.parametrize("backend,shape", [("cpu,reference", (2, 16, 20)), ("triton,reference", (1, 12, 16))])
def test_accelerated_matches_reference(name, backend, shape):
    if backend.startswith("triton") and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") \
            and not torch.cuda.is_available():
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    N, H, W = shape
    if name == "aspdc_reblur":
        H, W = 16, 24
    m, args = _models_and_inputs(name, N, H, W)
    fast = deblurfast.accelerate(copy.deepcopy(m), backend=backend)
    layers = accelerable_layers(fast)
    assert len(layers) == (24 if name == "aspdc" else 1) and all(layer.backend == backend for _, layer in layers)
    with torch.no_grad():
        ref, got = _image(m(*args)), _image(fast(*args))
    assert_close(got, ref, what=f"{name} {backend}")
    deblurfast.deaccelerate(fast)
    assert all(layer.backend == "reference" for _, layer in layers)


@pytest.mark.parametrize("name", ["aspdc", "aspdc_reblur"])
def test_training_parity(name):
    """Liger-style: 20 Adam steps from one initialization, reference vs accelerated (CPU kernels)."""
    m, args = _models_and_inputs(name, 2, 16, 16, seed=9)
    fast = deblurfast.accelerate(copy.deepcopy(m), backend="cpu,reference")
    target = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    assert_training_parity(m, fast, lambda model, step: (_image(model(*args)) - target).square().mean())
    # the offset/mask predictors are trained too (gradients flow through the DCN op)
    if name == "aspdc":
        p = fast.en_res_group1_2.hallucination_d1.hallucination_conv.p_conv.weight
        assert p.grad is not None and p.grad.abs().sum() > 0
        q = fast.en_res_group1_2.hallucination_d0.m_conv.weight
        assert q.grad is not None and q.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- deblur()

def test_deblur_odd_size():
    m = randomized(create("aspdc", **NARROW), seed=11)
    rgb = np.random.default_rng(0).integers(0, 256, (13, 15, 3), dtype=np.uint8)
    out = deblurfast.deblur(m, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # by hand: [-1, 1], replicate-pad to 16x16, element 0 of the output, crop, clamp
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        y = m(F.pad(x, (0, 1, 0, 3), mode="replicate"))[0][..., :13, :15].clamp(-1, 1)
    expected = ((y + 1) / 2 * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out, expected)
    with pytest.raises(TypeError, match="deblur applies to 'aspdc' only"):
        deblurfast.deblur(create("aspdc_reblur", **NARROW_RE), rgb)


# ----------------------------------------------------------------------------- paper size

@pytest.mark.slow
def test_paper_size_256():
    torch.manual_seed(0)
    deb, reb = create("aspdc"), create("aspdc_reblur")
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        out, res = deb(x)
        reblurred = reb(x, out)
    assert out.shape == res.shape == reblurred.shape == (1, 3, 256, 256)
    assert torch.isfinite(out).all() and torch.isfinite(reblurred).all()
