"""BANet and BANet+ (Tsai et al., TIP 2022): `banet` and `banet_plus`, checked against
shared/specs/models/banet.md."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblurfast
from deblurfast.engine import accelerable_layers
from deblurfast.models import CheckpointError, create, load_pretrained, num_parameters
from deblurfast.models.banet import BAM, BANet, BANetPlus
from deblurfast.nn import BlurAwareAttention
from deblurfast.testing import assert_close
from helpers import assert_training_parity

NAMES = ["banet", "banet_plus"]
NARROW = dict(channels=8, num_bams=2, stem_channels=8)  # BANet+ gets fuse_channels = 8 (= C) by default

TRITON_ON_CPU = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") or torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def narrow(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create(name, **{**NARROW, **kw})


def randomized(model, seed=0):
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1): unit-scale activations, so that attention maps
    and masks are far from 0 and 1 (PyTorch's default init, the authors', gives small ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.ConvTranspose2d) and p.dim() > 1:
                fan_in = p.shape[0] * 4  # (C_in, C_out, 4, 4), stride 2: each output sees C_in * 2 * 2 taps
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 1 else fan_in ** -0.5))
    return model


def images(N, H, W, seed=1):
    """BGR images in the model's range [-0.5, 0.5]."""
    return torch.rand(N, 3, H, W, generator=torch.Generator().manual_seed(seed)) - 0.5


# ----------------------------------------------------------------------------- state_dict, parameters

def _conv(prefix, cout, cin, kh=3, kw=None, bias=True):
    keys = [(f"{prefix}.weight", (cout, cin, kh, kh if kw is None else kw))]
    return keys + ([(f"{prefix}.bias", (cout,))] if bias else [])


def expected_keys(C, F_):
    """Spec §4: en_layer1, en_layer2, BAM_1..BAM_10 (30 keys each, BA last), de_layer1..3."""
    m = C // 2
    keys = _conv("en_layer1.0", 64, 3) + _conv("en_layer2.0", C, 64)
    for k in range(1, 11):
        p = f"BAM_{k}"
        keys += _conv(f"{p}.input_conv", C, C)
        for suffix in ("d1", "d3", "d5", "d1_2", "d3_2", "d5_2"):
            keys += _conv(f"{p}.content_conv_{suffix}", m, C)
        keys += _conv(f"{p}.fuse_conv_1", C, 3 * m) + _conv(f"{p}.final_conv", C, 5 * m)
        b = f"{p}.BA"
        keys += _conv(f"{b}.conv_1_h", m, C, 3, 1, bias=False) + _conv(f"{b}.conv_1_w", m, C, 1, 3, bias=False)
        for n in (3, 5, 7):
            keys += _conv(f"{b}.conv_{n}", m, C, bias=False)
        keys += _conv(f"{b}.fuse_conv", F_, 4 * m, 1, bias=False) + _conv(f"{b}.conv_final", C, F_, 1)
        keys += _conv(f"{b}.mask_conv_1", C, C) + _conv(f"{b}.mask_conv_2", C, C)
    keys += [("de_layer1.0.weight", (C, 64, 4, 4)), ("de_layer1.0.bias", (64,))]
    return keys + _conv("de_layer2.0", 64, 128) + _conv("de_layer3.0", 3, 64)


@pytest.mark.parametrize("name,C,F_,total,per_bam,per_ba", [
    ("banet", 128, 64, 17_988_547, 1_770_624, 590_208),
    ("banet_plus", 192, 192, 40_768_131, 4_038_336, 1_382_976),
])
def test_state_dict_paper_size(name, C, F_, total, per_bam, per_ba):
    with torch.device("meta"):  # paper size without allocating 70-160 MB
        m = create(name)
    sd = m.state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert len(got) == 310
    assert got == expected_keys(C, F_)  # keys, shapes and order
    assert num_parameters(m) == total
    assert all(isinstance(b, BAM) and list(b._modules)[-1] == "BA" for b in m.bams())
    assert all(num_parameters(b) == per_bam and num_parameters(b.BA) == per_ba for b in m.bams())
    assert len(m.bams()) == 10 and len({id(b) for b in m.bams()}) == 10  # ten separate instances
    assert all(v.dtype == torch.float32 for v in sd.values()) and not list(m.buffers())
    # the accelerable layers: one BlurAwareAttention per BAM, built on the reference path
    layers = accelerable_layers(m)
    assert [n for n, _ in layers] == [f"BAM_{k}.BA" for k in range(1, 11)]
    assert all(isinstance(b, BlurAwareAttention) and b.backend == "reference" and not b.fused for _, b in layers)
    assert type(m) is (BANet if name == "banet" else BANetPlus) and m.io.channel_order == "BGR"
    # the convs' geometry (spec §2): dilations/paddings of the CPDC, the strided stem, the transposed conv
    bam = m.BAM_4
    for suffix, d in (("d1", 1), ("d3", 3), ("d5", 5), ("d1_2", 1), ("d3_2", 3), ("d5_2", 5)):
        conv = getattr(bam, f"content_conv_{suffix}")
        assert conv.dilation == (d, d) and conv.padding == (d, d) and conv.stride == (1, 1)
    assert m.en_layer2[0].stride == (2, 2) and m.en_layer2[0].padding == (1, 1)
    ct = m.de_layer1[0]
    assert isinstance(ct, torch.nn.ConvTranspose2d) and ct.stride == (2, 2) and ct.padding == (1, 1)
    assert ct.output_padding == (0, 0)
    slopes = [a.negative_slope for a in m.modules() if isinstance(a, torch.nn.LeakyReLU)]
    assert len(slopes) == 4 + 3 * 10 and set(slopes) == {0.2}


def test_narrow_sizes_are_arguments():
    m = create("banet", channels=8, num_bams=3, stem_channels=6)
    assert len(m.bams()) == 3 and not hasattr(m, "BAM_4")
    assert m.en_layer1[0].out_channels == 6 and m.de_layer2[0].in_channels == 12
    assert m.BAM_1.BA.fuse_conv.out_channels == 4 and m.BAM_1.final_conv.in_channels == 20
    p = create("banet_plus", channels=8, num_bams=1, stem_channels=6)
    assert p.BAM_1.BA.fuse_conv.out_channels == 8 and p.BAM_1.BA.conv_final.in_channels == 8
    assert create("banet_plus", channels=8, fuse_channels=2, num_bams=1).BAM_1.BA.fuse_channels == 2
    with pytest.raises(ValueError, match="even"):
        create("banet", channels=7)
    with pytest.raises(ValueError, match="pad_mode"):
        create("banet", pad_mode="zeros", **NARROW)


# ----------------------------------------------------------------------------- forward shapes

@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name):
    m = narrow(name)
    with torch.no_grad():
        for N, H, W in [(2, 16, 16), (1, 18, 26), (1, 2, 2), (1, 10, 4)]:
            x = images(N, H, W)
            assert m(x).shape == x.shape
        y, att = m(images(2, 16, 20), return_attention=True)
        assert y.shape == (2, 3, 16, 20) and len(att) == 2
        F_ = 4 if name == "banet" else 8
        assert all(a.shape == (2, F_, 8, 10) and (a >= 0).all() for a in att)  # z' = ReLU(fuse_conv(...))
        assert torch.equal(y, m(images(2, 16, 20)))
    for bad in [(15, 16), (16, 15), (9, 9)]:  # H and W must be even (spec §5)
        with pytest.raises(ValueError, match="must be even"):
            m(images(1, *bad))


@pytest.mark.parametrize("pad_mode", ["replicate", "reflect"])
def test_pad_mode_option(pad_mode):
    m = narrow("banet")
    x = images(1, 13, 15)
    p = narrow("banet", pad_mode=pad_mode)
    with torch.no_grad():
        got = p(x)
        expected = m(F.pad(x, (0, 1, 0, 1), mode=pad_mode))[..., :13, :15]
        y, att = p(x, return_attention=True)
        even = images(1, 14, 16)
        assert torch.equal(p(even), m(even))  # even sizes: no padding
    assert got.shape == x.shape and torch.equal(got, expected) and torch.equal(y, got) and len(att) == 2


# ----------------------------------------------------------------------------- forward vs the spec

def adaptive_bins(L, n):
    """PyTorch's adaptive bins (spec §3, BA step 1): bin j covers [floor(jL/n), ceil((j+1)L/n))."""
    return [(j * L // n, -(-(j + 1) * L // n)) for j in range(n)]


def nearest_source(L, n, integer=False):
    """Source bin of output index i (spec §3, BA step 3): min(floor(i * s), n - 1), s = n / L as a
    float32 quotient and the product in float32; or floor(i * n / L) in integers."""
    i = torch.arange(L)
    if integer:
        return i * n // L
    s = torch.tensor(n, dtype=torch.float32) / torch.tensor(L, dtype=torch.float32)
    return torch.floor(i.to(torch.float32) * s).to(torch.int64).clamp(max=n - 1)


def ba_by_spec(ba, a, integer=False):
    h, w = a.shape[-2:]
    ys = []
    for n in (1, 3, 5, 7):
        s_h = torch.stack([a[..., lo:hi].mean(-1) for lo, hi in adaptive_bins(w, n)], -1)  # (N, C, h, n)
        s_w = torch.stack([a[..., lo:hi, :].mean(-2) for lo, hi in adaptive_bins(h, n)], -2)  # (N, C, n, w)
        if n == 1:
            g_h = F.conv2d(s_h, ba.conv_1_h.weight, padding=(1, 0))
            g_w = F.conv2d(s_w, ba.conv_1_w.weight, padding=(0, 1))
        else:  # one weight for both orientations
            weight = getattr(ba, f"conv_{n}").weight
            g_h, g_w = F.conv2d(s_h, weight, padding=1), F.conv2d(s_w, weight, padding=1)
        ys.append(g_h[..., :, nearest_source(w, n, integer)] + g_w[..., nearest_source(h, n, integer), :])
    z = F.relu(F.conv2d(torch.cat(ys, 1), ba.fuse_conv.weight))
    a1 = a * torch.sigmoid(F.conv2d(z, ba.conv_final.weight, ba.conv_final.bias))
    m1 = F.relu(F.conv2d(a1, ba.mask_conv_1.weight, ba.mask_conv_1.bias, padding=1))
    return a1 * torch.sigmoid(F.conv2d(m1, ba.mask_conv_2.weight, ba.mask_conv_2.bias, padding=1)), z


def conv(x, layer, dilation=1, stride=1):
    return F.conv2d(x, layer.weight, layer.bias, stride=stride, padding=dilation, dilation=dilation)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def bam_by_spec(bam, t, integer=False):
    a = lrelu(conv(t, bam.input_conv))
    b, z = ba_by_spec(bam.BA, a, integer)
    p1 = torch.cat([conv(a, bam.content_conv_d1, 1), conv(a, bam.content_conv_d3, 3),
                    conv(a, bam.content_conv_d5, 5)], 1)
    q = lrelu(conv(p1, bam.fuse_conv_1))
    p2 = torch.cat([conv(q, bam.content_conv_d1_2, 1), conv(q, bam.content_conv_d3_2, 3),
                    conv(q, bam.content_conv_d5_2, 5)], 1)
    return lrelu(conv(torch.cat([p2, b], 1), bam.final_conv) + t), z


def net_by_spec(m, x, integer=False):
    e1 = lrelu(conv(x, m.en_layer1[0]))
    f = lrelu(conv(e1, m.en_layer2[0], stride=2))
    zs = []
    for bam in m.bams():
        f, z = bam_by_spec(bam, f, integer)
        zs.append(z)
    ct = m.de_layer1[0]
    u = lrelu(F.conv_transpose2d(f, ct.weight, ct.bias, stride=2, padding=1))
    v = lrelu(conv(torch.cat([u, e1], 1), m.de_layer2[0]))
    return x + conv(v, m.de_layer3[0]), zs


def test_adaptive_bins_and_nearest_source():
    """The helpers above follow the spec's formulas: bins overlap when n does not divide L, and
    the float32 index moves a boundary at L = 123, n = 3 (none of the usual sizes)."""
    assert adaptive_bins(9, 5) == [(0, 2), (1, 4), (3, 6), (5, 8), (7, 9)]
    assert adaptive_bins(12, 3) == [(0, 4), (4, 8), (8, 12)]
    x = torch.randn(1, 1, 5, 9)
    assert_close(torch.stack([x[..., lo:hi].mean(-1) for lo, hi in adaptive_bins(9, 5)], -1),
                 F.adaptive_avg_pool2d(x, (5, 5)))
    differs = [L for L in range(1, 200) if not torch.equal(nearest_source(L, 3), nearest_source(L, 3, True))]
    assert differs[0] == 123
    for L in (32, 64, 90, 128, 160, 180, 256, 320, 360, 640):
        for n in (3, 5, 7):
            assert torch.equal(nearest_source(L, n), nearest_source(L, n, True))
    src = torch.arange(3, dtype=torch.float32).view(1, 1, 3, 1)
    assert torch.equal(F.interpolate(src, size=(123, 1), mode="nearest").view(-1).long(), nearest_source(123, 3))


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_spec(name):
    """The whole network by the spec's formulas (§3): adaptive-bin strips, shared strip convs, float32
    nearest expansion, [CPDC, BA] fusion with the BAM input as residual, [u, e1] concat, x + r."""
    m = randomized(narrow(name), seed=2)
    x = images(2, 18, 26, seed=3)  # half resolution 9x13: overlapping bins for n = 5, 7 (and 3 along W)
    with torch.no_grad():
        expected, zs = net_by_spec(m, x)
        got, att = m(x, return_attention=True)
        # a single BAM, standalone
        t = torch.randn(2, 8, 9, 13)
        bam_expected, _ = bam_by_spec(m.BAM_2, t)
        bam_got = m.BAM_2(t)
        a = F.relu(t)  # the BA alone, on a non-negative feature like LReLU's output
        ba_expected, z_expected = ba_by_spec(m.BAM_2.BA, a)
        ba_got, z_got = m.BAM_2.BA(a, return_attention=True)
    assert_close(got, expected, what="network")
    for z, a in zip(zs, att):
        assert_close(a, z, what="z'")
    assert_close(bam_got, bam_expected, what="BAM")
    assert_close(ba_got, ba_expected, what="BA")
    assert_close(z_got, z_expected, what="BA z'")
    # the order of each concat matters: swapping [u, e1] or [CPDC, BA] gives another function
    assert (got - x).abs().max() > 1e-3


def test_nearest_quirk_at_123():
    """Spec §3 / §8.6: half-resolution height 123 expands the 3-bin strips with F.interpolate's
    float32 index by default; exact_integer_nearest=True uses floor(i*n/L), which differs there
    (rows 41 and 82 read the next bin)."""
    rows = torch.stack([nearest_source(123, n) != nearest_source(123, n, True) for n in (3, 5, 7)]).any(0)
    assert rows.nonzero().flatten().tolist() == [41, 82]
    x = images(1, 246, 8, seed=4)
    cfg = dict(channels=8, num_bams=1, stem_channels=4)
    faithful = randomized(create("banet", **cfg), seed=4)
    clean = create("banet", exact_integer_nearest=True, **cfg)
    clean.load_state_dict(faithful.state_dict())
    assert clean.BAM_1.BA.exact_integer_nearest and not faithful.BAM_1.BA.exact_integer_nearest
    with torch.no_grad():
        f, (z_f,) = faithful(x, return_attention=True)
        c, (z_c,) = clean(x, return_attention=True)
        a = faithful.BAM_1.input_relu(faithful.BAM_1.input_conv(faithful.en_layer2(faithful.en_layer1(x))))
        assert a.shape[-2:] == (123, 4)
        spec_f, spec_c = ba_by_spec(faithful.BAM_1.BA, a), ba_by_spec(faithful.BAM_1.BA, a, integer=True)
        # the two formulas give visibly different attention maps on exactly the rows 41 and 82 ...
        diff = (spec_f[1] - spec_c[1]).abs().amax((0, 1, 3))
        assert (diff[rows] > 1e-2).all() and (diff[~rows] == 0).all()
        # ... and each model follows its own formula (its BA, its attention, its output)
        assert_close(faithful.BAM_1.BA(a), spec_f[0], what="BA, float32 index")
        assert_close(clean.BAM_1.BA(a), spec_c[0], what="BA, integer index")
        assert_close(z_f, spec_f[1], what="z', float32 index")
        assert_close(z_c, spec_c[1], what="z', integer index")
        assert_close(f, net_by_spec(faithful, x)[0], what="float32 index")
        assert_close(c, net_by_spec(clean, x, integer=True)[0], what="integer index")
        assert not torch.equal(f, c)


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("container", ["dataparallel", "resume", "state_dict", "bare"])
def test_checkpoint_containers(tmp_path, name, container):
    """Spec §6: BANet_GoPro.pth / BANet_Plus_GoPro.pth and best_/final_ files are flat state_dicts of
    a DataParallel model (`module.` prefix); last_*.pth is {epoch, model_state, scheduler_state,
    optimizer_state}."""
    src = narrow(name, seed=5)
    sd = src.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / {"dataparallel": "BANet_GoPro.pth", "resume": "last_banet.pth"}.get(container, "w.pth")
    if container == "dataparallel":
        torch.save(prefixed, path)
    elif container == "resume":
        opt = torch.optim.Adam(src.parameters(), lr=1e-4)
        src(images(1, 8, 8)).square().mean().backward()
        opt.step()
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3000, eta_min=1e-7)
        torch.save({"epoch": 7, "model_state": prefixed, "scheduler_state": sched.state_dict(),
                    "optimizer_state": opt.state_dict()}, path)
        sd = {k[len("module."):]: v for k, v in prefixed.items()}  # after the step
    elif container == "state_dict":
        torch.save({"state_dict": sd}, path)
    else:
        torch.save(sd, path)
    dst = load_pretrained(narrow(name, seed=6), str(path), strict=True)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = images(1, 12, 10)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_checkpoint_of_the_other_variant_is_refused(tmp_path):
    torch.save({f"module.{k}": v for k, v in narrow("banet").state_dict().items()}, tmp_path / "BANet_GoPro.pth")
    with pytest.raises(CheckpointError, match=r"BAM_1\.BA\.fuse_conv\.weight: checkpoint \(4, 16, 1, 1\) vs model "
                                              r"\(8, 16, 1, 1\)"):
        load_pretrained(narrow("banet_plus"), str(tmp_path / "BANet_GoPro.pth"))
    with pytest.raises(CheckpointError, match=r"unexpected \(30\): BAM_2\."):
        load_pretrained(narrow("banet", num_bams=1), str(tmp_path / "BANet_GoPro.pth"))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(tmp_path, name):
    src = narrow(name, seed=7)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = narrow(name, seed=8)
    x = images(2, 16, 12)
    with torch.no_grad():
        assert not torch.equal(dst(x), src(x))
        load_pretrained(dst, str(tmp_path / "w.pth"))
        assert torch.equal(dst(x), src(x))


# ----------------------------------------------------------------------------- accelerated vs reference

BACKENDS = [
    pytest.param("cpu,reference", id="fused-reference-ops"),  # the fused algorithm on the ops' reference backend
    pytest.param("triton,reference", id="triton",
                 marks=pytest.mark.skipif(not TRITON_ON_CPU, reason="Triton on CPU needs TRITON_INTERPRET=1")),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_accelerated_matches_reference(name, backend):
    m = narrow(name, seed=9)
    x = images(2, 16, 16, seed=10)
    fast = deblurfast.accelerate(copy.deepcopy(m), backend=backend)
    layers = accelerable_layers(fast)
    assert len(layers) == 2 and all(layer.backend == backend and layer.fused for _, layer in layers)
    with torch.no_grad():
        ref, ref_att = m(x, return_attention=True)
        got, att = fast(x, return_attention=True)
        assert_close(got, ref, what=f"{name} {backend}")
        for a, r in zip(att, ref_att):
            assert_close(a, r, what="z'")
        x_odd = images(1, 12, 18, seed=11)  # half resolution 6x9: bins overlap along W
        assert_close(fast(x_odd), m(x_odd), what=f"{name} {backend} 12x18")
    deblurfast.deaccelerate(fast)
    assert all(layer.backend == "reference" and not layer.fused for _, layer in layers)
    with torch.no_grad():
        assert torch.equal(fast(x), ref)


def banet_loss(out, gt):
    """Spec §7: Charbonnier (eps 1e-3) + 0.01 * L1 over the real and imaginary parts of the full 2-D
    DFT, on the output clamped to [-0.5, 0.5]."""
    out = out.clamp(-0.5, 0.5)
    charb = torch.sqrt((out - gt).square() + 1e-6).mean()
    fft = (torch.view_as_real(torch.fft.fft2(out)) - torch.view_as_real(torch.fft.fft2(gt))).abs().mean()
    return charb + 0.01 * fft


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_parity(name, backend):
    """Liger-style: 20 Adam steps (8 on the Triton interpreter) from one initialization on fixed
    random data, reference vs accelerated, losses within 1e-3 relative at every step (fp32)."""
    if backend == "triton,reference" and name == "banet_plus":
        cfg = dict(num_bams=1)  # the interpreter is slow: one BAM for the second variant
    else:
        cfg = {}
    m = narrow(name, seed=12, **cfg)
    fast = deblurfast.accelerate(copy.deepcopy(m), backend=backend)
    x, gt = images(2, 16, 16, seed=13), images(2, 16, 16, seed=14) * 0.8
    steps = 8 if backend == "triton,reference" and x.device.type == "cpu" else 20  # the interpreter is slow
    assert_training_parity(m, fast, lambda model, step: banet_loss(model(x), gt), steps=steps)
    # every BA parameter was trained through the fused ops (the strip convs included)
    for p in fast.BAM_1.BA.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for (k, p), q in zip(fast.named_parameters(), m.parameters()):
        assert_close(p.detach(), q.detach(), what=f"{k} after 20 steps")


# ----------------------------------------------------------------------------- deblur()

@pytest.mark.parametrize("name", NAMES)
def test_deblur_odd_size_rgb_to_bgr(name):
    """deblurfast.deblur takes RGB; the model sees BGR in [-0.5, 0.5] (x/255 - 0.5), padded to even,
    output clamped to [-0.5, 0.5] (+0.5, x255, round) and turned back to RGB."""
    m = narrow(name, seed=15)
    rgb = np.random.default_rng(0).integers(0, 256, (13, 15, 3), dtype=np.uint8)
    out = deblurfast.deblur(m, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    bgr = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255 - 0.5
    with torch.no_grad():
        y = m(F.pad(bgr, (0, 1, 0, 1), mode="replicate"))[..., :13, :15].clamp(-0.5, 0.5)
    expected = ((y + 0.5) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()[..., ::-1]
    assert np.array_equal(out, expected)
    # the same pixels through the torch float path
    t = deblurfast.deblur(m, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert t.shape == (3, 13, 15) and t.dtype == torch.float32
    assert np.abs(t.permute(1, 2, 0).numpy() * 255 - out).max() <= 0.5 + 1e-3
    # a model with pad_mode="replicate" gives the same pixels on the same unpadded BGR input
    with torch.no_grad():
        self_padded = narrow(name, seed=15, pad_mode="replicate")(bgr)[..., :13, :15].clamp(-0.5, 0.5)
    assert torch.equal(self_padded, y)


# ----------------------------------------------------------------------------- GPU (unverified without one)

@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_accelerated_matches_reference_cuda(name):
    """Paper size on the GPU, fp32 without TF32: the fused BA kernels vs the reference path."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(16)
        m = create(name).cuda()
        x = images(1, 128, 192, seed=17).cuda()
        fast = deblurfast.accelerate(copy.deepcopy(m), backend="auto")
        with torch.no_grad():
            ref, got = m(x), fast(x)
        assert_close(got, ref, what=f"{name} cuda fp32")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


# ----------------------------------------------------------------------------- paper size

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_paper_size_256(name):
    torch.set_num_threads(2)  # the module fixture restores its own setting afterwards
    torch.manual_seed(0)
    m = create(name)
    x = images(1, 256, 256, seed=18)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 3, 256, 256) and torch.isfinite(y).all()
    assert (y - x).abs().max() > 0
