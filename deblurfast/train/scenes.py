"""Procedural scenes: unlimited, varied sharp training images from a seed.

``scene(rng, height, width)`` paints, back to front: a background (a smooth gradient, a grating or
band-limited noise), then 6 to 28 layers, each one of: a filled polygon, an ellipse, a rectangle
(flat, gradient or textured fill), a bundle of thin lines, a row of text-like strokes (real glyphs
of PIL's bundled font and random pen strokes), a sharp-edged texture patch. Shapes are painted at
twice the resolution and box-filtered down, so edges are anti-aliased the way a camera's are.
Everything random comes from the generator passed in: the same seed gives the same image.
"""

from __future__ import annotations

import string

import numpy as np

SUPERSAMPLE = 2  # shapes are drawn at this scale and averaged down (anti-aliased edges)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1]; a third of them near-grey, as in photos."""
    c = rng.random(3)
    if rng.random() < 0.33:
        c = np.full(3, c.mean()) + rng.normal(0.0, 0.03, 3)
    return np.clip(c, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """(height, width) band-limited noise in [0, 1]: white noise low-passed in the Fourier domain
    at a cut-off of `scale` pixels (larger: smoother)."""
    noise = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    spectrum = np.fft.rfft2(noise) * np.exp(-0.5 * (fy * fy + fx * fx) * (2 * np.pi * scale) ** 2)
    out = np.fft.irfft2(spectrum, s=(height, width))
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) texture in [0, 1]: a grating, a checkerboard, or coloured noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = _colour(rng), _colour(rng)
    kind = rng.integers(3)
    if kind == 0:  # sinusoidal or square grating at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(2.5, 40.0)
        t = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        t = (t > 0).astype(np.float64) if rng.random() < 0.5 else 0.5 + 0.5 * t
    elif kind == 1:
        cell = rng.uniform(3.0, 32.0)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float64)
    else:
        t = _smooth_noise(rng, height, width, rng.uniform(0.5, 12.0))
    return a + (b - a) * t[..., None]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    if rng.random() < 0.5:  # linear or radial gradient
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(angle) + yy * np.sin(angle)
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            t = np.hypot(yy - cy, xx - cx)
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
        a, b = _colour(rng), _colour(rng)
        return a + (b - a) * t[..., None]
    return _texture(rng, height, width)


def _random_text(rng: np.random.Generator) -> str:
    letters = string.ascii_letters + string.digits + "  .,-"
    return "".join(rng.choice(list(letters), size=int(rng.integers(3, 16))))


def _draw_shape(draw, rng: np.random.Generator, height: int, width: int, font_sizes) -> None:
    """One shape on a PIL "L" mask (white = covered), coordinates at the supersampled scale."""
    from PIL import ImageFont

    s = SUPERSAMPLE
    H, W = height * s, width * s
    kind = rng.choice(["polygon", "ellipse", "rectangle", "lines", "text", "strokes"],
                      p=[0.22, 0.2, 0.18, 0.12, 0.16, 0.12])
    size = rng.uniform(0.05, 0.6) * min(H, W)
    cy, cx = rng.uniform(-0.1, 1.1) * H, rng.uniform(-0.1, 1.1) * W
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size * rng.uniform(0.3, 1.0, n)
        draw.polygon([(cx + r * np.cos(t), cy + r * np.sin(t)) for r, t in zip(radii, angles)], fill=255)
    elif kind == "ellipse":
        ry, rx = size * rng.uniform(0.2, 1.0, 2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "rectangle":
        ry, rx = size * rng.uniform(0.1, 1.0, 2)
        draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "lines":
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)]) * size
        for _ in range(int(rng.integers(1, 8))):
            oy, ox = rng.normal(0, size / 3, 2)
            draw.line([(cx + ox - d[0], cy + oy - d[1]), (cx + ox + d[0], cy + oy + d[1])], fill=255,
                      width=int(rng.integers(1, 4 * s)))
    elif kind == "text":
        font = ImageFont.load_default(int(rng.choice(font_sizes)) * s)
        for row in range(int(rng.integers(1, 4))):
            draw.text((cx - size, cy + row * font.size * 1.2), _random_text(rng), fill=255, font=font)
    else:  # pen strokes: short polylines, like handwriting
        for _ in range(int(rng.integers(2, 10))):
            n = int(rng.integers(2, 6))
            pts = np.cumsum(rng.normal(0, size / 6, (n, 2)), axis=0) + (cx, cy) + rng.normal(0, size / 2, 2)
            draw.line([tuple(p) for p in pts], fill=255, width=int(rng.integers(1, 3 * s)), joint="curve")


def scene(rng: np.random.Generator, height: int, width: int, layers: tuple[int, int] = (6, 28)) -> np.ndarray:
    """A procedural (height, width, 3) uint8 RGB scene; deterministic in `rng`'s state."""
    from PIL import Image, ImageDraw

    if height < 1 or width < 1:
        raise ValueError(f"scene: height and width must be >= 1, got {height}x{width}")
    s = SUPERSAMPLE
    image = _background(rng, height, width)
    font_sizes = (8, 11, 14, 18, 24, 32)
    for _ in range(int(rng.integers(layers[0], layers[1] + 1))):
        mask_img = Image.new("L", (width * s, height * s), 0)
        _draw_shape(ImageDraw.Draw(mask_img), rng, height, width, font_sizes)
        mask = np.asarray(mask_img, dtype=np.float64).reshape(height, s, width, s).mean(axis=(1, 3)) / 255.0
        if not mask.any():
            continue
        fill = rng.random()
        if fill < 0.5:
            paint = _colour(rng)[None, None, :]
        elif fill < 0.75:
            paint = _texture(rng, height, width)
        else:  # a shaded object: a smooth brightness ramp over one colour
            paint = _colour(rng)[None, None, :] * (0.6 + 0.4 * _smooth_noise(rng, height, width, 20.0))[..., None]
        alpha = mask[..., None] * (1.0 if rng.random() < 0.85 else rng.uniform(0.4, 0.9))
        image = image * (1.0 - alpha) + paint * alpha
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


__all__ = ["scene"]
