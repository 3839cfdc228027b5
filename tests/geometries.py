"""deform_conv2d's named test geometries, defined once for every file that tests the op (the
backends, the op contract, the CUDA kernels' emulation). A test that needs another size says so
with dict(NAME, n=...) where it uses one."""

import torch

# torchvision's odd geometry: stride (2,1), padding (1,0), dilation (2,1), kernel 3x2, 2 weight groups, 3 offset groups
ODD = dict(n=2, cin=6, cout=4, h=9, w=7, kh=3, kw=2, stride=(2, 1), padding=(1, 0), dilation=(2, 1), groups=2, G=3)
PLAIN = dict(n=1, cin=4, cout=3, h=6, w=7, kh=3, kw=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, G=1)
FIVE = dict(n=1, cin=3, cout=5, h=8, w=9, kh=5, kw=5, stride=(1, 1), padding=(2, 2), dilation=(1, 1), groups=1, G=1)
# Cout/groups = 18 > 16 (two output blocks, the second padded), offset groups of 5 channels straddle the
# 8-channel data tiles and the 4-channel weight-gradient tiles; stride 2 and dilation 2 with a 3x3 kernel.
WIDE = dict(n=1, cin=20, cout=18, h=9, w=8, kh=3, kw=3, stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=1,
            G=4)
# A generic kernel size (not 3x3 / 5x5) with groups > 1 and G > 1 nested inside the weight groups.
GENERIC = dict(n=2, cin=8, cout=6, h=7, w=6, kh=2, kw=3, stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=2,
               G=4)
CONV = ("stride", "padding", "dilation")


def out_size(g):
    """(Ho, Wo) of geometry g."""
    ho = (g["h"] + 2 * g["padding"][0] - g["dilation"][0] * (g["kh"] - 1) - 1) // g["stride"][0] + 1
    wo = (g["w"] + 2 * g["padding"][1] - g["dilation"][1] * (g["kw"] - 1) - 1) // g["stride"][1] + 1
    return ho, wo


def deform_inputs(g, dtype=torch.float64, device="cpu", offsets=True, masks=True, bias=True, offset_scale=2.0,
                  generator=None, signed_mask=False):
    """(input, offset, weight, bias, mask) of geometry g, drawn in float64 (from `generator`, else
    torch's global one) and then cast, so every dtype sees the same values; an absent tensor is None.
    The mask is in [0, 1) unless signed_mask (the op takes any real mask)."""
    K = g["kh"] * g["kw"]
    ho, wo = out_size(g)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype)

    x = randn(g["n"], g["cin"], g["h"], g["w"])
    offset = offset_scale * randn(g["n"], 2 * g["G"] * K, ho, wo) if offsets else None
    if masks:
        shape = (g["n"], g["G"] * K, ho, wo)
        mask = randn(*shape) if signed_mask else torch.rand(*shape, generator=generator,
                                                            dtype=torch.float64).to(device, dtype)
    else:
        mask = None
    weight = randn(g["cout"], g["cin"] // g["groups"], g["kh"], g["kw"])
    b = randn(g["cout"]) if bias else None
    return x, offset, weight, b, mask
