import numpy as np
"""deblurfast.train.losses: every paper's loss against values computed by hand on tiny tensors,
then on the real (narrow) models."""

import math

import pytest
import torch
from torch import nn

from deblurfast.models import IOConvention, create
from deblurfast.train.losses import build_loss, list_losses, unwrap


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Stub(nn.Module):
    """A 'model' returning fixed images (parameters, so gradients can be checked)."""

    def __init__(self, io, outputs, kind="tuple"):
        super().__init__()
        self.io = io
        self.outs = nn.ParameterList([nn.Parameter(o.clone()) for o in outputs])
        self.kind = kind

    def forward(self, x):
        outs = [o.expand(x.shape[0], *o.shape[1:]) for o in self.outs]
        return {"tuple": tuple, "list": list}[self.kind](outs) if self.kind != "tensor" else outs[0]


def batch(h, w, blur=0.5, sharp=0.5, n=1):
    return {"blur": torch.full((n, 3, h, w), blur), "sharp": torch.full((n, 3, h, w), sharp), "name": ["a"] * n}


# -- attentive_msnet (Xu et al.) -------------------------------------------------------------------------------

IO_ATT = IOConvention("RGB", (0.0, 1.0), 16, "replicate", True, -1)


def test_attentive_gradient_term_hand_computed():
    # G = 0; o_2 = a white pixel at (1, 1): MSE_2 = 3 / 48; gray = 0.9999 at that pixel; 2 of the 12
    # horizontal and 2 of the 12 vertical differences are +-0.9999:
    # L = 1/16 + 2.5 * 2 * (2 * 0.9999^2 / 12) = 0.0625 + 2.5 * 0.9999^2 / 3.
    o2 = torch.zeros(1, 3, 4, 4)
    o2[0, :, 1, 1] = 1.0
    model = Stub(IO_ATT, [torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 2, 2), o2], kind="list")
    loss, logs = build_loss("attentive_msnet")(model, batch(4, 4, sharp=0.0))
    assert loss.item() == pytest.approx(0.0625 + 2.5 * 0.9999 ** 2 / 3, rel=1e-6)
    assert logs["mse_2"] == pytest.approx(0.0625) and logs["mse_0"] == 0 and logs["mse_1"] == 0
    assert logs["grad"] == pytest.approx(0.9999 ** 2 / 3, rel=1e-6)
    loss1, _ = build_loss("attentive_msnet", grad_weight=1.0)(model, batch(4, 4, sharp=0.0))
    assert loss1.item() == pytest.approx(0.0625 + 0.9999 ** 2 / 3, rel=1e-6)


def test_attentive_multiscale_targets_are_decimated():
    # G[y, x] = (4y + x + 1) / 16 in every channel; o_2 = G (no fine/gradient loss), o_0 = o_1 = 0.
    # TF legacy resize = decimation: level 0 target G[0, 0] = 1/16, level 1 G[0::2, 0::2] = {1, 3, 9, 11}/16.
    # L = (1/16)^2 + (1 + 9 + 81 + 121) / 4 / 256 = 54 / 256.
    g = ((torch.arange(16.0) + 1) / 16).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    model = Stub(IO_ATT, [torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 2, 2), g])
    b = {"blur": torch.zeros(1, 3, 4, 4), "sharp": g.clone()}
    loss, logs = build_loss("attentive_msnet")(model, b)
    assert loss.item() == pytest.approx(54 / 256, rel=1e-6)
    assert logs["mse_0"] == pytest.approx(1 / 256) and logs["mse_1"] == pytest.approx(53 / 256)
    assert logs["grad"] == 0 and logs["mse_2"] == 0
    weighted, _ = build_loss("attentive_msnet", scale_weights=(0, 1, 1))(model, b)
    assert weighted.item() == pytest.approx(53 / 256, rel=1e-6)


def _xu_loss_numpy(outs, sharp):
    """attentive_msnet.md §7 by hand: decimated targets (TF1 legacy resize by 2 and 4), MSE per
    scale, plus 2.5 x the squared differences of grayscale forward differences at full size."""
    s, o = sharp.double().numpy(), [t.detach().double().numpy() for t in outs]
    mse = ((s[..., ::4, ::4] - o[0]) ** 2).mean() + ((s[..., ::2, ::2] - o[1]) ** 2).mean() + ((s - o[2]) ** 2).mean()
    gray = lambda a: 0.2989 * a[:, 0] + 0.5870 * a[:, 1] + 0.1140 * a[:, 2]  # noqa: E731
    gs, go = gray(s), gray(o[2])
    gx = ((np.diff(gs, axis=2) - np.diff(go, axis=2)) ** 2).mean()
    gy = ((np.diff(gs, axis=1) - np.diff(go, axis=1)) ** 2).mean()
    return mse + 2.5 * (gx + gy)


def real_model_loss(name, shape, **config):
    """A small `name` network (seed 0), a random batch of `shape` and its training loss:
    (model, batch, loss, logs)."""
    torch.manual_seed(0)
    model = create(name, **config)
    b = {"blur": torch.rand(*shape), "sharp": torch.rand(*shape)}
    loss, logs = build_loss(name)(model, b)
    return model, b, loss, logs


def test_attentive_real_model_matches_the_formula():
    model, b, loss, logs = real_model_loss("attentive_msnet", (2, 3, 16, 32), widths=(16, 16, 16), num_blocks=1)
    with torch.no_grad():
        expected = _xu_loss_numpy(model(b["blur"]), b["sharp"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert set(logs) == {"mse_0", "mse_1", "mse_2", "grad", "psnr"}


# -- RDAFNet --------------------------------------------------------------------------------------------------

IO_RDAF = IOConvention("RGB", (-1.0, 1.0), 2, "reflect", True, -1)


def rdaf_stages():
    # in [-1, 1]; the target (sharp 0.5) is 0.
    s1 = torch.zeros(1, 3, 4, 4)
    s1[0, 0, 1, 1] = 0.5  # a shifted impulse: |DFT| = 0.5 at all 12 one-sided bins of one channel
    s3 = torch.full((1, 3, 4, 4), 0.2)  # a constant: DFT = 3.2 at DC only
    return [s1, torch.zeros(1, 3, 4, 4), s3]


# per stage: L1 + 0.1 * mean |rfft2 diff| over 3 * 4 * 3 = 36 bins
RDAF_S1 = 0.5 / 48 + 0.1 * (12 * 0.5) / 36
RDAF_S3 = 0.2 + 0.1 * (3 * 3.2) / 36


def test_rdafnet_hand_computed():
    model = Stub(IO_RDAF, rdaf_stages())
    loss, logs = build_loss("rdafnet_ms")(model, batch(4, 4))
    assert loss.item() == pytest.approx(RDAF_S1 + RDAF_S3, rel=1e-6)
    assert logs["fft_1"] == pytest.approx(0.5 / 3, rel=1e-6)  # the complex modulus, not |Re| + |Im|
    assert logs["l1_1"] == pytest.approx(0.5 / 48) and logs["fft_2"] == 0 and logs["l1_3"] == pytest.approx(0.2)
    weighted, _ = build_loss("rdafnet_ms", stage_weights=(0, 0, 1), fft_weight=1.0)(model, batch(4, 4))
    assert weighted.item() == pytest.approx(0.2 + 3 * 3.2 / 36, rel=1e-6)


def test_rdafnet_single_stage_and_perceptual_term():
    model = Stub(IO_RDAF, rdaf_stages()[:1], kind="tensor")
    loss, _ = build_loss("rdafnet_ss")(model, batch(4, 4))
    assert loss.item() == pytest.approx(RDAF_S1, rel=1e-6)
    # identity "features": + 0.01 * MSE = 0.01 * 0.25 / 48
    loss, logs = build_loss("rdafnet_ss", perceptual_weight=0.01, perceptual=nn.Identity())(model, batch(4, 4))
    assert loss.item() == pytest.approx(RDAF_S1 + 0.01 * 0.25 / 48, rel=1e-6)
    assert logs["perceptual_1"] == pytest.approx(0.25 / 48)
    with pytest.raises(ValueError, match="perceptual"):
        build_loss("rdafnet_ms", perceptual_weight=0.01)


def test_rdafnet_real_models_sum_stage_terms():
    model, b, loss, logs = real_model_loss("rdafnet_ms", (1, 3, 8, 8), width=4, num_blocks=(2, 2, 2))
    with torch.no_grad():
        outs, t = model(b["blur"] * 2 - 1), b["sharp"] * 2 - 1
    expected = sum((o - t).abs().mean() + 0.1 * (torch.fft.rfft2(o) - torch.fft.rfft2(t)).abs().mean() for o in outs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"l1_1", "l1_2", "l1_3", "fft_1", "fft_2", "fft_3"} <= set(logs)
    loss.backward()
    assert model.last_conv.weight.grad is not None


# -- ASPDC ----------------------------------------------------------------------------------------------------

IO_ASPDC = IOConvention("RGB", (-1.0, 1.0), 4, "replicate", True, 0)


class StubDeblur(nn.Module):
    io = IO_ASPDC

    def __init__(self):
        super().__init__()
        r = torch.zeros(1, 3, 8, 8)
        r[0, 1, 2, 3] = 0.2  # green channel, ImageNet std 0.224
        self.r = nn.Parameter(r)

    def forward(self, x):
        return x + self.r, self.r


class StubReblur(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, blurred, sharp):
        self.seen.append((blurred.detach().clone(), sharp.detach().clone(), self.training))
        return 0.5 * (blurred + sharp) * self.w


def test_aspdc_hand_computed_and_reblur_frozen():
    reblur = StubReblur().train()
    loss_fn = build_loss("aspdc", reblur_model=reblur)
    loss_fn.train()  # the trainer may do this: the reblurring net must stay in eval mode
    model = StubDeblur()
    b = batch(8, 8)  # blurred = sharp = 0.5 -> 0 in [-1, 1]
    loss, logs = loss_fn(model, b)
    s = 2 * 0.224
    # PL(I_d, I_s) = (0.2 / s)^2 / 192; I_r = 0.5 * (0 + I_d) -> PL(I_b, I_r) = (0.1 / s)^2 / 192
    assert logs["deblur"] == pytest.approx((0.2 / s) ** 2 / 192, rel=1e-6)
    assert logs["reblur"] == pytest.approx((0.1 / s) ** 2 / 192, rel=1e-6)
    assert loss.item() == pytest.approx(((0.2 / s) ** 2 + 0.1 * (0.1 / s) ** 2) / 192, rel=1e-6)
    blurred_in, sharp_in, training = reblur.seen[-1]
    assert torch.equal(blurred_in, torch.zeros(1, 3, 8, 8))  # blurred image first ...
    assert sharp_in[0, 1, 2, 3].item() == pytest.approx(0.2)  # ... the deblurred image in the sharp slot
    assert training is False
    loss.backward()
    # the gradient reaches I_d through the reblurring net: d/dr = 2 (0.2 + 0.1 * 0.1 * 0.5) / (s^2 * 192)
    assert model.r.grad[0, 1, 2, 3].item() == pytest.approx(2 * (0.2 + 0.005) / (s * s * 192), rel=1e-5)
    assert reblur.w.grad is None and not reblur.w.requires_grad and reblur.w.item() == 1.0


def test_aspdc_plain_mse_and_no_reblur():
    b = batch(8, 8)
    loss, logs = build_loss("aspdc", pixel="mse", reblur_model=StubReblur())(StubDeblur(), b)
    assert loss.item() == pytest.approx((0.04 + 0.1 * 0.01) / 192, rel=1e-6)
    loss, logs = build_loss("aspdc")(StubDeblur(), b)  # initial training: no consistency term
    assert set(logs) == {"deblur", "psnr"} and loss.item() == pytest.approx((0.2 / 0.448) ** 2 / 192, rel=1e-6)
    with pytest.raises(ValueError, match="pixel"):
        build_loss("aspdc", pixel="l1")


ASPDC_NARROW = dict(channels=(4, 8, 8), head_res_blocks=1, group_res_blocks=1, mask_res_blocks=1)


def test_aspdc_real_models_and_reblur_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create("aspdc", **ASPDC_NARROW, batch_independent=True)
    reblur = create("aspdc_reblur", channels=(4, 6, 8, 8))
    before = {k: v.clone() for k, v in reblur.state_dict().items()}
    b = {"blur": torch.rand(1, 3, 16, 16), "sharp": torch.rand(1, 3, 16, 16)}
    with_reblur = build_loss("aspdc", reblur_model=reblur)
    loss, logs = with_reblur(model, b)
    with torch.no_grad():
        x, t = b["blur"] * 2 - 1, b["sharp"] * 2 - 1
        d = model(x)[0]
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        pl = lambda a, c: (((a - c) / (2 * std)) ** 2).mean()  # noqa: E731
        expected = pl(d, t) + 0.1 * pl(x, reblur(x, d))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in reblur.parameters())
    assert all(torch.equal(v, before[k]) for k, v in reblur.state_dict().items())
    g_with = model.tail[-1].weight.grad.clone()
    model.zero_grad()
    build_loss("aspdc", reblur_model=reblur, reblur_weight=0.0)(model, b)[0].backward()
    assert not torch.allclose(g_with, model.tail[-1].weight.grad)  # the consistency term has a gradient

    # reblur_model as a checkpoint path (the trainer's YAML): loaded, frozen
    full = create("aspdc_reblur")
    path = str(tmp_path / "ReBlurringNet.pth")
    torch.save({"blurring_state_dict": full.state_dict()}, path)
    from_path = build_loss("aspdc", reblur_model=path)
    assert not any(p.requires_grad for p in from_path.reblur.parameters()) and not from_path.reblur.training
    assert torch.equal(from_path.reblur.tail.weight, full.tail.weight)


def test_aspdc_reblur_training_loss():
    reblur = StubReblur()
    b = {"blur": torch.zeros(1, 3, 8, 8), "sharp": torch.full((1, 3, 8, 8), 0.6)}  # 0.2 in [-1, 1]
    reblur.io = IOConvention("RGB", (-1.0, 1.0), 8, "replicate", False, None)
    loss, logs = build_loss("aspdc_reblur", pixel="mse")(reblur, b)
    # I_r = 0.5 (-1 + 0.2) = -0.4 against I_b = -1: MSE = 0.36
    assert loss.item() == pytest.approx(0.36, rel=1e-6) and logs == {"reblur": pytest.approx(0.36, rel=1e-6)}


# -- SAPHNet --------------------------------------------------------------------------------------------------

IO_SAPH = IOConvention("RGB", (0.0, 1.0), 16, "reflect", True, None)


class StubHierarchy(nn.Module):
    io = IO_SAPH

    def __init__(self):
        super().__init__()
        self.levels = nn.Parameter(torch.tensor([0.3, 0.2, 0.1]))  # B + r3, B + r2, B + r1 (offsets)
        self.calls = []

    def forward(self, x, return_all=False):
        self.calls.append(return_all)
        images = [x + v for v in self.levels]
        return images if return_all else images[-1]


def test_saphnet_output_mse_by_default_and_level_weights():
    model = StubHierarchy()
    b = batch(4, 4, blur=0.5, sharp=0.5)
    loss, logs = build_loss("saphnet")(model, b)
    assert loss.item() == pytest.approx(0.01, rel=1e-5) and model.calls == [False]
    loss, logs = build_loss("saphnet", level_weights=(1.0, 0.5, 0.25))(model, b)
    assert model.calls[-1] is True
    assert loss.item() == pytest.approx(0.01 + 0.5 * 0.04 + 0.25 * 0.09, rel=1e-5)
    assert logs["mse_level3"] == pytest.approx(0.09, rel=1e-5)
    with pytest.raises(ValueError, match="levels"):
        build_loss("saphnet", level_weights=(1.0, 0.5))(model, b)


def test_saphnet_real_model_levels():
    model, b, loss, _ = real_model_loss("saphnet", (1, 3, 16, 16), channels=16, attention_maps=4, num_blocks=1)
    with torch.no_grad():
        out = model(b["blur"])
        images = model(b["blur"], return_all=True)
    assert loss.item() == pytest.approx((out - b["sharp"]).square().mean().item(), rel=1e-5)
    loss2, logs = build_loss("saphnet", level_weights=(1.0, 1.0, 1.0))(model, b)
    expected = sum((i - b["sharp"]).square().mean() for i in images)
    assert loss2.item() == pytest.approx(expected.item(), rel=1e-5)
    loss2.backward()
    assert model.levels[2].decoder.out.weight.grad is not None  # the bottom level is supervised


# -- BANet ----------------------------------------------------------------------------------------------------

IO_BANET = IOConvention("BGR", (-0.5, 0.5), 2, "reflect", True, None)


def test_banet_hand_computed_with_clamp():
    # sharp 0.5 -> 0; the output has 0.9 at (1, 1) of one channel, clamped to 0.5 before the loss.
    # Charbonnier: (sqrt(0.25 + 1e-6) + 47e-3) / 48. Full DFT of the impulse: 0.5 * e^{-i pi/2 (k+l)}, so
    # exactly one of |Re|, |Im| is 0.5 at each of the 16 bins: L1 over 3*16*2 values = 16*0.5 / 96 = 1/12.
    o = torch.zeros(1, 3, 4, 4)
    o[0, 0, 1, 1] = 0.9
    model = Stub(IO_BANET, [o], kind="tensor")
    loss, logs = build_loss("banet")(model, batch(4, 4))
    charb = (math.sqrt(0.25 + 1e-6) + 47e-3) / 48
    assert logs["charbonnier"] == pytest.approx(charb, rel=1e-6)
    assert logs["fft"] == pytest.approx(1 / 12, rel=1e-6)
    assert loss.item() == pytest.approx(charb + 0.01 / 12, rel=1e-6)
    unclamped, logs = build_loss("banet", clamp=False)(model, batch(4, 4))
    assert logs["fft"] == pytest.approx(0.9 / 6, rel=1e-6)
    loss.backward()
    assert model.outs[0].grad[0, 0, 1, 1] == 0  # saturated: no gradient (as in the authors' training)
    perfect = Stub(IO_BANET, [torch.zeros(1, 3, 4, 4)], kind="tensor")
    assert build_loss("banet")(perfect, batch(4, 4))[0].item() == pytest.approx(1e-3, rel=1e-6)  # eps


# -- common --------------------------------------------------------------------------------------------------


def test_build_loss_errors_and_names():
    assert {"attentive_msnet", "rdafnet_ss", "rdafnet_ms", "aspdc", "aspdc_reblur", "saphnet", "banet"} <= set(
        list_losses())
    with pytest.raises(ValueError, match="no training loss"):
        build_loss("unet")
    with pytest.raises(TypeError, match="saphnet"):
        build_loss("saphnet", lambda_=1)
    with pytest.raises(ValueError, match="differ"):
        build_loss("saphnet")(StubHierarchy(), {"blur": torch.zeros(1, 3, 4, 4), "sharp": torch.zeros(1, 3, 4, 8)})
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build_loss("saphnet")(StubHierarchy(), {"blur": torch.zeros(3, 4, 4), "sharp": torch.zeros(3, 4, 4)})


def test_wrapped_model_and_low_precision_outputs():
    model = StubHierarchy()
    wrapped = nn.DataParallel(model)  # no `io` of its own: read from the wrapped module
    assert unwrap(wrapped) is model
    b = batch(4, 4)
    assert build_loss("saphnet")(wrapped, b)[0].item() == pytest.approx(0.01, rel=1e-5)
    o = torch.zeros(1, 3, 4, 4, dtype=torch.bfloat16)
    loss, _ = build_loss("banet")(Stub(IO_BANET, [o], kind="tensor"), batch(4, 4))
    assert loss.dtype == torch.float32  # the loss is computed in float32


def test_psnr_log_uses_the_model_convention():
    # BANet output 0.1 in [-0.5, 0.5] = 0.6 in [0, 1] against sharp 0.5: PSNR = 20 dB
    model = Stub(IO_BANET, [torch.full((1, 3, 4, 4), 0.1)], kind="tensor")
    _, logs = build_loss("banet")(model, batch(4, 4))
    assert logs["psnr"] == pytest.approx(20.0, abs=1e-4)


def test_banet_real_model_bgr_and_clamp():
    model, b, loss, logs = real_model_loss("banet", (1, 3, 8, 8), channels=8, num_bams=1, stem_channels=4)
    with torch.no_grad():
        x, t = b["blur"].flip(1) - 0.5, b["sharp"].flip(1) - 0.5  # BGR in [-0.5, 0.5]
        o = model(x).clamp(-0.5, 0.5)
    fft = (torch.view_as_real(torch.fft.fft2(o)) - torch.view_as_real(torch.fft.fft2(t))).abs().mean()
    expected = torch.sqrt((o - t) ** 2 + 1e-6).mean() + 0.01 * fft
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.de_layer3[0].weight.grad is not None
    assert build_loss("banet_plus").fft_weight == 0.01
