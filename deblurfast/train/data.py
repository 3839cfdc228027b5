"""Training data: readers for the deblurring benchmarks, paired augmentation, and a synthetic
motion-blur generator that turns any folder of sharp images into (blur, sharp) pairs.

Every dataset returns ``{"blur", "sharp", "name"}`` with float32 (3, H, W) RGB tensors in [0, 1]
and has ``set_epoch(epoch)``. Determinism (bit-for-bit resume, DataLoader workers): every random
choice for sample i in epoch e comes from ``sample_rng(seed, e, i)`` (a numpy Generator seeded by
``SeedSequence([seed, e, i])``), never from global RNG state or the worker's identity.

Layouts (see the readers' docstrings for details):
- GoPro (Nah et al. 2017), original: ``GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png``;
  flattened: ``<root>/{train,test}/{input,target}/*.png`` (the MPRNet/Restormer conversion) or
  ``<root>/{train,test}/{blur,sharp}/*.png``.
- HIDE (Shen et al. 2019): ``HIDE_dataset/{GT,train,test/test-close-ups,test/test-long-shot}`` with
  the name lists ``train.txt`` / ``test.txt``; blurred and sharp images share a file name.
- RealBlur (Rim et al. 2020): ``RealBlur_{J,R}_{train,test}_list.txt``, one "gt_path blur_path"
  line per pair, paths relative to the RealBlur folder.

Synthetic blur (``MotionBlurGenerator``): camera-shake trajectories from the random-walk model of
Boracchi and Foi ("Modeling the performance of image restoration from motion blur", IEEE TIP 2012:
a particle with inertia, Gaussian and centripetal accelerations and rare abrupt shakes),
rasterized into a PSF by bilinear splatting (sum exactly 1, centred on its centroid); spatially
varying blur by blending the images blurred with per-region kernels through smooth masks that
form a partition of unity (every output pixel is a convex combination of input pixels); blur in
linear light (optional gamma); Gaussian noise; 8-bit quantization.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from ..media import IMAGE_EXTENSIONS, list_images, read_image, write_image
from .scenes import scene

# -- determinism ----------------------------------------------------------------------------------


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of sample `index` in `epoch`: a function of (seed, epoch, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, int(epoch), int(index)]))


# -- paired augmentation ----------------------------------------------------------------------------


def _size2(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return int(h), int(w)


def reflect_indices(start: int, length: int, n: int) -> np.ndarray:
    """Indices start .. start+length-1 into an axis of size n, mirrored at the borders without
    repeating the edge pixel (numpy's "reflect"), for any distance outside."""
    i = np.arange(start, start + length)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def crop_window(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """image[top:top+height, left:left+width], reflected where the window leaves the image."""
    H, W = image.shape[:2]
    if 0 <= top and top + height <= H and 0 <= left and left + width <= W:
        return image[top:top + height, left:left + width]
    return image[reflect_indices(top, height, H)][:, reflect_indices(left, width, W)]


def random_crop_origin(shape, size, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random top-left corner of a `size` crop inside an image of `shape` (H, W, ...);
    0 along an axis shorter than the crop (the crop is then completed by reflection)."""
    ch, cw = _size2(size)
    H, W = shape[:2]
    return int(rng.integers(0, max(H - ch, 0) + 1)), int(rng.integers(0, max(W - cw, 0) + 1))


def paired_random_crop(a: np.ndarray, b: np.ndarray, size, rng: np.random.Generator):
    """The same random `size` crop of two images of equal size (reflect-completed if smaller)."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"paired_random_crop: the images differ in size, {a.shape[:2]} vs {b.shape[:2]}")
    ch, cw = _size2(size)
    top, left = random_crop_origin(a.shape, (ch, cw), rng)
    return crop_window(a, top, left, ch, cw), crop_window(b, top, left, ch, cw)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an (H, W, ...) image: rot90 by k % 4 quarter turns
    (counter-clockwise), then a left-right flip when k >= 4. k = 0 is the identity."""
    out = np.rot90(image, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def random_dihedral(rng: np.random.Generator, flip: bool = True, rot90: bool = True, square: bool = True) -> int:
    """A random transform index for `dihedral`: uniform over the allowed ones (all 8 with flips and
    rotations; quarter turns only for square images)."""
    ks = range(8) if flip and rot90 else (0, 2, 4, 6) if flip else (0, 1, 2, 3) if rot90 else (0,)
    ks = [k for k in ks if square or k % 2 == 0]
    return ks[int(rng.integers(len(ks)))]


def paired_augment(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, flip: bool = True,
                   rot90: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The same random flip/rotation of both images."""
    k = random_dihedral(rng, flip, rot90, square=a.shape[0] == a.shape[1])
    return dihedral(a, k), dihedral(b, k)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]; float arrays are taken as [0, 1] already."""
    arr = np.ascontiguousarray(image.transpose(2, 0, 1))
    t = torch.from_numpy(arr)
    return t.float().div_(255.0) if arr.dtype == np.uint8 else t.float()


# -- dataset readers -------------------------------------------------------------------------------


class Pair(NamedTuple):
    blur: str
    sharp: str
    name: str


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _images_in(folder: str) -> list[str]:
    """Image file names directly in `folder`, sorted."""
    return sorted(f for f in os.listdir(folder) if _is_image(f) and os.path.isfile(os.path.join(folder, f)))


def _check_exist(pairs: list[Pair], where: str) -> list[Pair]:
    missing = [p for pair in pairs for p in (pair.blur, pair.sharp) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{where}: {len(missing)} listed image(s) do not exist, e.g. {missing[:3]}")
    if not pairs:
        raise FileNotFoundError(f"{where}: no image pairs found")
    return pairs


def folder_pairs(blur_dir: str, sharp_dir: str, prefix: str = "") -> list[Pair]:
    """Pairs of same-named images in two folders (every image of blur_dir needs its sharp twin)."""
    names = _images_in(blur_dir)
    return _check_exist([Pair(os.path.join(blur_dir, n), os.path.join(sharp_dir, n), prefix + n) for n in names],
                        f"pairs {blur_dir} / {sharp_dir}")


def gopro_pairs(root: str, split: str = "train", blur_folder: str = "blur") -> list[Pair]:
    """GoPro pairs of `split`, from any of the layouts in use:

    - original: ``<root>/<split>/<scene>/{blur,blur_gamma,sharp}/NNNNNN.png`` (root =
      ``GOPRO_Large``); `blur_folder` picks "blur" (default) or "blur_gamma"; names
      ``<scene>/<file>``;
    - flattened: ``<root>/<split>/{input,target}/*.png`` or ``<root>/<split>/{blur,sharp}/*.png``.

    `root` may also be the split folder itself."""
    base = os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root
    if not os.path.isdir(base):
        raise FileNotFoundError(f"GoPro: {base} is not a folder")
    for b, s in (("input", "target"), (blur_folder, "sharp")):
        if os.path.isdir(os.path.join(base, b)) and os.path.isdir(os.path.join(base, s)) \
                and _images_in(os.path.join(base, b)):
            return folder_pairs(os.path.join(base, b), os.path.join(base, s))
    pairs = []
    for folder in sorted(os.listdir(base)):
        bdir, sdir = os.path.join(base, folder, blur_folder), os.path.join(base, folder, "sharp")
        if os.path.isdir(bdir) and os.path.isdir(sdir):
            pairs += [Pair(os.path.join(bdir, n), os.path.join(sdir, n), f"{folder}/{n}") for n in _images_in(bdir)]
    if not pairs:
        raise FileNotFoundError(f"GoPro: no pairs under {base}: expected <scene>/{blur_folder}/ + <scene>/sharp/ "
                                f"folders, or flat input/ + target/ (or {blur_folder}/ + sharp/) folders")
    return _check_exist(pairs, f"GoPro {base}")


HIDE_TEST_FOLDERS = ("test-close-ups", "test-long-shot")


def _read_names(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _hide_file(folder: str, name: str) -> str | None:
    for candidate in (name, os.path.basename(name), os.path.basename(name) + ".png"):
        p = os.path.join(folder, candidate)
        if os.path.isfile(p):
            return p
    return None


def hide_pairs(root: str, split: str = "train", subset: str | None = None) -> list[Pair]:
    """HIDE pairs of `split` ("train" or "test") from the released ``HIDE_dataset`` folder:
    blurred images in ``train/`` and ``test/{test-close-ups,test-long-shot}/``, all sharp images
    in ``GT/`` under the same file name; the name lists ``train.txt`` / ``test.txt`` (one file name
    a line) are used when present, else the folders are listed. `subset` ("close-ups" or
    "long-shot") restricts the test split. A flattened ``<root>/<split>/{input,target}`` copy
    (the Restormer conversion) is read as well."""
    if os.path.isdir(os.path.join(root, "HIDE_dataset")) and not os.path.isdir(os.path.join(root, "GT")):
        root = os.path.join(root, "HIDE_dataset")
    flat = os.path.join(root, split)
    if os.path.isdir(os.path.join(flat, "input")) and os.path.isdir(os.path.join(flat, "target")):
        return folder_pairs(os.path.join(flat, "input"), os.path.join(flat, "target"))
    gt = os.path.join(root, "GT")
    if not os.path.isdir(gt):
        raise FileNotFoundError(f"HIDE: {root} has no GT/ folder (expected HIDE_dataset/{{GT,train,test}})")
    if split == "train":
        folders = [(os.path.join(root, "train"), "")]
    elif split == "test":
        chosen = [f for f in HIDE_TEST_FOLDERS if subset is None or f == f"test-{subset}" or f == subset]
        if not chosen:
            raise ValueError(f"HIDE: subset must be one of 'close-ups', 'long-shot', got {subset!r}")
        folders = [(os.path.join(root, "test", f), f + "/") for f in chosen]
    else:
        raise ValueError(f"HIDE: split must be 'train' or 'test', got {split!r}")
    listing = os.path.join(root, f"{split}.txt")
    pairs = []
    if os.path.isfile(listing):
        for name in _read_names(listing):
            for folder, prefix in folders:
                blur = _hide_file(folder, name)
                if blur is not None:
                    base = os.path.basename(blur)
                    pairs.append(Pair(blur, os.path.join(gt, base), prefix + base))
                    break
            else:
                if subset is None:
                    raise FileNotFoundError(f"HIDE: {name!r} of {listing} is in none of "
                                            f"{[f for f, _ in folders]}")
    else:
        for folder, prefix in folders:
            pairs += [Pair(os.path.join(folder, n), os.path.join(gt, n), prefix + n) for n in _images_in(folder)]
    return _check_exist(pairs, f"HIDE {root} ({split})")


def realblur_pairs(list_file: str, root: str | None = None) -> list[Pair]:
    """RealBlur pairs from an official list file (``RealBlur_J_train_list.txt`` etc.): one
    "gt_path blur_path" line per pair (ground truth FIRST), paths relative to `root` (default: the
    list file's folder), e.g. ``RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/gt/gt_1.png
    RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/blur/blur_1.png``. Names
    ``<scene>/<blur file>``."""
    root = os.path.dirname(os.path.abspath(list_file)) if root is None else root
    pairs = []
    for i, line in enumerate(_read_names(list_file), start=1):
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{list_file}:{i}: expected 'gt_path blur_path', got {line!r}")
        gt, blur = parts[0], parts[1]
        bits = blur.replace("\\", "/").split("/")
        name = f"{bits[-3]}/{bits[-1]}" if len(bits) >= 3 else blur
        pairs.append(Pair(os.path.join(root, blur), os.path.join(root, gt), name))
    return _check_exist(pairs, f"RealBlur {list_file}")


def realblur_list(root: str, variant: str = "J", split: str = "train") -> str:
    """The official list file of RealBlur-`variant` ("J" or "R") `split` in `root`."""
    if variant not in ("J", "R"):
        raise ValueError(f"RealBlur: variant must be 'J' or 'R', got {variant!r}")
    path = os.path.join(root, f"RealBlur_{variant}_{split}_list.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"RealBlur: {path} does not exist (the list files ship with the dataset)")
    return path


def _epoch_index(dataset, index) -> tuple[int, int]:
    """`index` or `(epoch, index)`: a sampler may name the epoch itself, which stays right in
    persistent DataLoader workers (their dataset copies do not see set_epoch)."""
    if isinstance(index, tuple):
        epoch, index = index
        return int(epoch), int(index)
    return dataset.epoch, int(index)


# -- paired dataset -------------------------------------------------------------------------------------


class PairedDataset(torch.utils.data.Dataset):
    """(blur, sharp) image files -> {"blur", "sharp", "name"}, float32 (3, H, W) in [0, 1].

    crop: None (whole images) or a size (int or (h, w)): the same random crop of both images.
    augment: the same random flip / 90-degree rotation of both (`flip`, `rot90` choose which).
    Sample i of epoch e depends on (seed, e, i) only; call set_epoch(e) before each epoch, or index
    with (e, i)."""

    def __init__(self, pairs, crop=None, augment: bool = True, seed: int = 0, flip: bool = True,
                 rot90: bool = True):
        self.pairs = [Pair(*p) if len(p) == 3 else Pair(p[0], p[1], os.path.basename(p[0])) for p in pairs]
        if not self.pairs:
            raise ValueError("PairedDataset: no pairs")
        self.crop = None if crop is None else _size2(crop)
        self.augment, self.seed, self.flip, self.rot90 = augment, seed, flip, rot90
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index) -> dict:
        epoch, index = _epoch_index(self, index)
        pair = self.pairs[index]
        blur, sharp = read_image(pair.blur), read_image(pair.sharp)
        if blur.shape != sharp.shape:
            raise ValueError(f"{pair.blur} {blur.shape[:2]} and {pair.sharp} {sharp.shape[:2]} differ in size")
        rng = sample_rng(self.seed, epoch, index)
        if self.crop is not None:
            blur, sharp = paired_random_crop(blur, sharp, self.crop, rng)
        if self.augment:
            blur, sharp = paired_augment(blur, sharp, rng, self.flip, self.rot90)
        return {"blur": to_tensor(blur), "sharp": to_tensor(sharp), "name": pair.name}


# -- synthetic motion blur ---------------------------------------------------------------------------------


def camera_trajectory(rng: np.random.Generator, length: float, steps: int = 256, anxiety: float = 0.05,
                      centripetal: float = 0.35, gaussian: float = 5.0, shake_frequency: float = 0.1) -> np.ndarray:
    """A camera-shake trajectory, (steps, 2) positions (x, y) in pixels, total path `length`.

    Random walk with inertia after Boracchi and Foi (2012): the velocity keeps a fixed speed
    length / (steps - 1); at each step it is perturbed by anxiety x (gaussian x a complex normal
    draw - centripetal x position) x speed, and with probability shake_frequency x anxiety by an
    abrupt shake that turns it roughly around."""
    if steps < 2:
        raise ValueError(f"camera_trajectory: steps must be >= 2, got {steps}")
    speed = float(length) / (steps - 1)
    angle = rng.uniform(0.0, 2 * math.pi)
    v = speed * complex(math.cos(angle), math.sin(angle))
    normal = rng.standard_normal((steps - 1, 2))
    uniform = rng.random((steps - 1, 2))
    pos = np.zeros(steps, dtype=np.complex128)
    x = 0j
    for t in range(steps - 1):
        shake = 0j
        if uniform[t, 0] < shake_frequency * anxiety:
            turn = math.pi + (uniform[t, 1] - 0.5)
            shake = 2 * v * complex(math.cos(turn), math.sin(turn))
        v = v + shake + anxiety * (gaussian * complex(normal[t, 0], normal[t, 1]) - centripetal * x) * speed
        mag = abs(v)
        v = v / mag * speed if mag > 0 else speed + 0j
        x = x + v
        pos[t + 1] = x
    return np.stack([pos.real, pos.imag], axis=1)


def trajectory_psf(trajectory: np.ndarray, exposure: float = 1.0, anchor: str = "centroid") -> np.ndarray:
    """Rasterizes the first `exposure` fraction of a trajectory (N, 2) of (x, y) positions into a
    square PSF of odd size, float64, summing to 1: every sample spreads one unit of weight over its
    four neighbouring pixels (bilinear). anchor "centroid": the PSF's centre of mass is the centre
    pixel (the blur does not shift the image); "middle": the mid-exposure position is (the sharp
    image is the middle frame, as in GoPro)."""
    n = max(2, min(len(trajectory), int(round(exposure * len(trajectory)))))
    pts = np.asarray(trajectory[:n], dtype=np.float64)
    if anchor == "centroid":
        centre = pts.mean(axis=0)
    elif anchor == "middle":
        centre = 0.5 * (pts[(n - 1) // 2] + pts[n // 2])
    else:
        raise ValueError(f"trajectory_psf: anchor must be 'centroid' or 'middle', got {anchor!r}")
    p = pts - centre
    r = int(math.ceil(np.abs(p).max())) + 1
    k = 2 * r + 1
    xs, ys = p[:, 0] + r, p[:, 1] + r
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    psf = np.zeros((k, k), dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(psf, (y0 + dy, x0 + dx), wy * wx)
    return psf / psf.sum()


def _fast_length(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def convolve_valid_many(image: np.ndarray, kernels, dtype=np.float32):
    """Yields the valid true 2-D convolution of an (H, W, C) image with each (k_i, k_i) kernel
    (odd sizes), all cropped to the margin of the largest: (H - 2R, W - 2R, C), R = max k_i // 2.
    Output pixel (y, x) is centred on input pixel (y + R, x + R); a unit impulse becomes the kernel
    itself (not flipped). FFT in `dtype` (the image's transform is computed once)."""
    kernels = list(kernels)
    for k in kernels:
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ValueError(f"convolve: kernels must be square with odd size, got {k.shape}")
    R = max(k.shape[0] // 2 for k in kernels)
    size = 2 * R + 1
    H, W = image.shape[:2]
    if H < size or W < size:
        raise ValueError(f"convolve: image {H}x{W} smaller than the kernel {size}x{size}")
    # A 5-smooth transform size >= the image: the circular wrap stays outside the valid part.
    shape = (_fast_length(H), _fast_length(W))
    spectrum = np.fft.rfft2(np.asarray(image, dtype=dtype), s=shape, axes=(0, 1))
    for k in kernels:
        m = R - k.shape[0] // 2
        padded = np.zeros(shape, dtype=dtype)
        padded[m:m + k.shape[0], m:m + k.shape[0]] = k
        out = np.fft.irfft2(spectrum * np.fft.rfft2(padded)[..., None], s=shape, axes=(0, 1))
        yield out[size - 1:H, size - 1:W]


def convolve_valid(image: np.ndarray, kernel: np.ndarray, dtype=np.float64) -> np.ndarray:
    """True 2-D convolution of an (H, W, C) image with one (k, k) kernel, valid part:
    (H - k + 1, W - k + 1, C); see convolve_valid_many."""
    return next(convolve_valid_many(image, [kernel], dtype))


def blend_masks(centres: np.ndarray, spread: tuple[float, float], height: int, width: int) -> np.ndarray:
    """(K, height, width) smooth masks summing to 1 at every pixel: a normalized Gaussian weight
    around each region centre (centres (K, 2) as (y, x) fractions of the image, spread the
    Gaussians' sigma as fractions of (height, width))."""
    yy = (np.arange(height) + 0.5) / height
    xx = (np.arange(width) + 0.5) / width
    dy = (yy[None, :, None] - centres[:, 0, None, None]) / spread[0]
    dx = (xx[None, None, :] - centres[:, 1, None, None]) / spread[1]
    logits = -0.5 * (dy * dy + dx * dx)
    logits -= logits.max(axis=0, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=0, keepdims=True)


@dataclass(frozen=True)
class MotionBlurConfig:
    """The generator's ranges; a pair (lo, hi) is drawn uniformly per sample (per kernel for the
    trajectory parameters)."""

    length: tuple[float, float] = (4.0, 32.0)  # trajectory path length, pixels
    steps: int = 256  # positions per trajectory
    anxiety: tuple[float, float] = (0.0, 0.1)  # Boracchi & Foi's ranges
    centripetal: tuple[float, float] = (0.0, 0.7)
    gaussian: tuple[float, float] = (0.0, 10.0)
    shake_frequency: tuple[float, float] = (0.0, 0.2)
    exposure: tuple[float, float] = (0.5, 1.0)  # fraction of the trajectory inside the exposure
    anchor: str = "centroid"
    regions: int = 3  # spatially varying: up to regions x regions kernels
    varying_probability: float = 0.5  # chance that a sample's blur varies over the image
    smoothness: float = 0.5  # mask sigma, in units of the region spacing
    noise: tuple[float, float] = (0.0, 0.01)  # Gaussian noise sigma of [0, 1] values, added after gamma encoding
    gamma: float | None = 2.2  # blur in linear light (x ** gamma), None: blur the stored values
    quantize: bool = True  # round the blurred image to 8 bits


@dataclass
class BlurRecipe:
    """Everything random about one synthetic blur; `MotionBlurGenerator.render` is deterministic."""

    kernels: list  # (k_i, k_i) float64 PSFs, each summing to 1
    centres: np.ndarray | None = None  # (K, 2) region centres (y, x) as fractions; None: uniform blur
    spread: tuple[float, float] = (1.0, 1.0)  # mask sigma as fractions of (H, W)
    noise_sigma: float = 0.0
    noise_seed: int = 0
    trajectories: list = field(default_factory=list)
    family: str = "shake"  # the blur family it was drawn from (BlurFamilyGenerator)
    gamma: float | None = None  # overrides the generator's gamma (None: the generator's)
    gain: float = 1.0  # exposure gain in linear light before the blur; > 1 saturates highlights
    poisson_peak: float | None = None  # photons at white: shot noise (None: none)
    jpeg_quality: int | None = None  # JPEG-compress the blurred image at this quality (None: no)

    @property
    def radius(self) -> int:
        """Margin of context the blur reads around the output: the largest kernel radius."""
        return max(k.shape[0] // 2 for k in self.kernels)


class MotionBlurGenerator:
    """Random camera-shake blur; ``sample(rng)`` draws a BlurRecipe, ``render`` applies it.

    ``blur(image, rng)`` does both on a whole image (reflected at the borders), returning the
    blurred image of the same size; the datasets render crops with real context instead."""

    config_type = MotionBlurConfig

    def __init__(self, config: MotionBlurConfig | dict | None = None, **overrides):
        kind = self.config_type
        config = kind(**config) if isinstance(config, dict) else (config or kind())
        self.config = replace(config, **overrides) if overrides else config

    def kernel(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random PSF and its trajectory."""
        c = self.config
        u = lambda lohi: float(rng.uniform(*lohi))  # noqa: E731
        traj = camera_trajectory(rng, u(c.length), c.steps, u(c.anxiety), u(c.centripetal), u(c.gaussian),
                                 u(c.shake_frequency))
        return trajectory_psf(traj, u(c.exposure), c.anchor), traj

    def sample(self, rng: np.random.Generator) -> BlurRecipe:
        c = self.config
        gy = gx = 1
        if c.regions > 1 and rng.random() < c.varying_probability:
            while gy * gx == 1:
                gy, gx = (int(v) for v in rng.integers(1, c.regions + 1, size=2))
        kernels, trajs = zip(*(self.kernel(rng) for _ in range(gy * gx)))
        recipe = BlurRecipe(list(kernels), trajectories=list(trajs))
        if gy * gx > 1:
            iy, ix = np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij")
            jitter = rng.uniform(-0.25, 0.25, size=(gy * gx, 2))
            recipe.centres = np.stack([(iy.ravel() + 0.5 + jitter[:, 0]) / gy,
                                       (ix.ravel() + 0.5 + jitter[:, 1]) / gx], axis=1)
            recipe.spread = (c.smoothness / gy, c.smoothness / gx)
        recipe.noise_sigma = float(rng.uniform(*c.noise))
        recipe.noise_seed = int(rng.integers(2**63))
        return recipe

    def _gamma(self, recipe: BlurRecipe) -> float | None:
        return recipe.gamma if recipe.gamma is not None else self.config.gamma

    def render(self, recipe: BlurRecipe, padded: np.ndarray) -> np.ndarray:
        """Blurs `padded` (H + 2R, W + 2R, C) float in [0, 1], R = recipe.radius (the context around
        the output), into the (H, W, C) float32 blurred image in [0, 1]: to linear light (gamma),
        exposure gain, blur, clip (saturated highlights stay saturated), back to gamma, shot and
        Gaussian noise, 8-bit quantization, JPEG."""
        c = self.config
        R = recipe.radius
        gamma = self._gamma(recipe)
        x = np.asarray(padded, dtype=np.float64)
        if gamma is not None:
            x = np.power(np.clip(x, 0.0, 1.0), gamma)
        x = x * recipe.gain
        H, W = x.shape[0] - 2 * R, x.shape[1] - 2 * R
        if H < 1 or W < 1:
            raise ValueError(f"render: the padded image {x.shape[:2]} is smaller than the blur margin 2x{R}")
        masks = None if recipe.centres is None else blend_masks(recipe.centres, recipe.spread, H, W)
        out = np.zeros((H, W, x.shape[2]), dtype=np.float64)
        for i, blurred in enumerate(convolve_valid_many(x, recipe.kernels)):
            out += blurred if masks is None else masks[i][..., None] * blurred
        out = np.clip(out, 0.0, 1.0)
        noise = np.random.default_rng(recipe.noise_seed)
        if recipe.poisson_peak is not None:  # shot noise is counted in linear light
            out = np.clip(noise.poisson(out * recipe.poisson_peak) / recipe.poisson_peak, 0.0, 1.0)
        if gamma is not None:
            out = np.power(out, 1.0 / gamma)
        if recipe.noise_sigma > 0:
            out = out + recipe.noise_sigma * noise.standard_normal(out.shape)
        out = np.clip(out, 0.0, 1.0)
        if c.quantize or recipe.jpeg_quality is not None:
            out = np.round(out * 255.0) / 255.0
        if recipe.jpeg_quality is not None:
            out = jpeg_roundtrip((out * 255.0).astype(np.uint8), recipe.jpeg_quality) / 255.0
        return out.astype(np.float32)

    def sharp_target(self, recipe: BlurRecipe, sharp: np.ndarray) -> np.ndarray:
        """The sharp image that matches `render`'s blur of it: the stored pixels (as float32 in
        [0, 1]) unless the recipe raises the exposure, which clips highlights in the target too."""
        if recipe.gain == 1.0:
            return sharp
        gamma = self._gamma(recipe)
        x = _unit(sharp)
        lin = np.power(x, gamma) if gamma is not None else x
        lin = np.clip(lin * recipe.gain, 0.0, 1.0)
        x = np.round((np.power(lin, 1.0 / gamma) if gamma is not None else lin) * 255.0) / 255.0
        return x.astype(np.float32)

    def blur(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random blur of a whole (H, W, 3) image (uint8, or float in [0, 1]), reflected at the
        borders; float32 (H, W, 3) in [0, 1]."""
        return self.blur_with(self.sample(rng), image)

    def blur_with(self, recipe: BlurRecipe, image: np.ndarray) -> np.ndarray:
        """`recipe` applied to a whole image, reflected at the borders (see blur)."""
        R = recipe.radius
        H, W = image.shape[:2]
        region = crop_window(image, -R, -R, H + 2 * R, W + 2 * R)
        return self.render(recipe, _unit(region))


def linear_motion_psf(length: float, angle: float) -> np.ndarray:
    """The PSF of a straight motion of `length` pixels at `angle` radians (x right, y down),
    centred, rendered sub-pixel: the path is cut into 16 pieces per pixel, each piece's midpoint
    splatted bilinearly (trajectory_psf: the midpoint rule for the path integral of the pixels'
    bilinear footprints); odd square, float64, sum 1. length 0: the identity (1 x 1)."""
    if not length >= 0:
        raise ValueError(f"linear_motion_psf: length must be >= 0, got {length!r}")
    if length == 0:
        return np.ones((1, 1))
    n = max(2, int(math.ceil(16 * length)))
    t = ((np.arange(n) + 0.5) / n - 0.5) * length
    return trajectory_psf(np.stack([t * math.cos(angle), t * math.sin(angle)], axis=1))


def defocus_psf(radius: float, supersample: int = 8) -> np.ndarray:
    """A uniform disc of `radius` pixels (a defocused lens), each pixel weighted by the fraction of
    its area inside the disc (supersample^2 points per pixel); odd square, float64, sum 1."""
    if not radius > 0:
        raise ValueError(f"defocus_psf: radius must be > 0, got {radius!r}")
    r = int(math.ceil(radius))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-r, r + 1)
    y = (grid[:, None, None, None] + offsets[None, None, :, None])
    x = (grid[None, :, None, None] + offsets[None, None, None, :])
    inside = (y * y + x * x <= radius * radius).mean(axis=(2, 3))
    if inside.sum() == 0:  # a radius under half a sample spacing: the centre pixel
        inside[r, r] = 1.0
    return inside / inside.sum()


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the same image JPEG-encoded at `quality` and decoded (4:2:0, as cameras)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


BLUR_FAMILIES = ("linear", "shake", "varying", "defocus", "sharp")


@dataclass(frozen=True)
class BlurFamilyConfig(MotionBlurConfig):
    """Ranges of BlurFamilyGenerator; the MotionBlurConfig fields drive the camera-shake
    trajectories (also inside spatially varying blur)."""

    families: tuple = (("linear", 0.4), ("shake", 0.25), ("varying", 0.2), ("defocus", 0.1), ("sharp", 0.05))
    linear_length: tuple[float, float] = (3.0, 25.0)
    defocus_radius: tuple[float, float] = (0.5, 2.5)
    static_region_probability: float = 0.25  # a region of a varying blur that does not move
    region_smoothness: tuple[float, float] = (0.1, 0.5)  # mask sigma per region spacing (small: sharp borders)
    gamma_range: tuple[float, float] = (1.8, 2.4)  # per-sample display gamma (linear light)
    highlight_probability: float = 0.2  # chance of an exposure gain that saturates highlights
    highlight_gain: tuple[float, float] = (1.2, 3.0)
    noise: tuple[float, float] = (0.0, 0.015)  # Gaussian sigma
    poisson_probability: float = 0.5
    poisson_peak: tuple[float, float] = (300.0, 3000.0)  # photons at white (log-uniform)
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)


class BlurFamilyGenerator(MotionBlurGenerator):
    """Blur that users meet: each sample is one family of BLUR_FAMILIES, drawn with the weights of
    `config.families`: linear motion (3-25 px, any angle, sub-pixel), camera shake (random-walk
    trajectories), spatially varying (regions blurred by different linear or shake kernels, some
    static, blended by smooth masks), mild defocus, or none ("sharp"). Then degradations: a random
    gamma (blur in linear light), saturated highlights, shot and Gaussian noise, JPEG."""

    config_type = BlurFamilyConfig

    def __init__(self, config: BlurFamilyConfig | dict | None = None, **overrides):
        super().__init__(config, **overrides)
        names = [name for name, _ in self.config.families]
        unknown = set(names) - set(BLUR_FAMILIES)
        if unknown:
            raise ValueError(f"BlurFamilyGenerator: unknown families {sorted(unknown)}; known: {BLUR_FAMILIES}")
        weights = np.array([w for _, w in self.config.families], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"BlurFamilyGenerator: family weights must be >= 0 with a positive sum, got {weights}")
        self._names, self._p = names, weights / weights.sum()

    def linear_kernel(self, rng: np.random.Generator) -> np.ndarray:
        return linear_motion_psf(rng.uniform(*self.config.linear_length), rng.uniform(0, 2 * math.pi))

    def family_kernels(self, family: str, rng: np.random.Generator) -> BlurRecipe:
        """The kernels (and masks) of one family, without degradations."""
        c = self.config
        if family == "linear":
            return BlurRecipe([self.linear_kernel(rng)], family=family)
        if family == "shake":
            kernel, traj = self.kernel(rng)
            return BlurRecipe([kernel], trajectories=[traj], family=family)
        if family == "defocus":
            return BlurRecipe([defocus_psf(rng.uniform(*c.defocus_radius))], family=family)
        if family == "sharp":
            return BlurRecipe([np.ones((1, 1))], family=family)
        gy = gx = 1
        while gy * gx == 1:
            gy, gx = (int(v) for v in rng.integers(1, c.regions + 1, size=2))
        kernels = []
        for _ in range(gy * gx):
            u = rng.random()
            if u < c.static_region_probability:
                kernels.append(np.ones((1, 1)))
            elif u < 0.5 + c.static_region_probability / 2:
                kernels.append(self.linear_kernel(rng))
            else:
                kernels.append(self.kernel(rng)[0])
        iy, ix = np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij")
        jitter = rng.uniform(-0.25, 0.25, size=(gy * gx, 2))
        centres = np.stack([(iy.ravel() + 0.5 + jitter[:, 0]) / gy, (ix.ravel() + 0.5 + jitter[:, 1]) / gx], axis=1)
        smooth = rng.uniform(*c.region_smoothness)
        return BlurRecipe(kernels, centres=centres, spread=(smooth / gy, smooth / gx), family=family)

    def degrade(self, recipe: BlurRecipe, rng: np.random.Generator) -> BlurRecipe:
        """Draws the recipe's degradations (gamma, highlights, noise, JPEG)."""
        c = self.config
        recipe.gamma = float(rng.uniform(*c.gamma_range))
        recipe.gain = float(rng.uniform(*c.highlight_gain)) if rng.random() < c.highlight_probability else 1.0
        peak = math.exp(rng.uniform(math.log(c.poisson_peak[0]), math.log(c.poisson_peak[1])))
        recipe.poisson_peak = peak if rng.random() < c.poisson_probability else None
        recipe.noise_sigma = float(rng.uniform(*c.noise))
        recipe.noise_seed = int(rng.integers(2**63))
        recipe.jpeg_quality = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1)) \
            if rng.random() < c.jpeg_probability else None
        return recipe

    def sample(self, rng: np.random.Generator) -> BlurRecipe:
        family = self._names[int(rng.choice(len(self._names), p=self._p))]
        return self.degrade(self.family_kernels(family, rng), rng)


def _unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


class SyntheticBlurDataset(torch.utils.data.Dataset):
    """A folder of sharp images -> synthetic (blur, sharp) pairs, a fresh blur every epoch.

    Sample i of epoch e (all from sample_rng(seed, e, i)): a random flip/rotation of image i
    (augment), a random crop (crop: None = whole image), a random BlurRecipe rendered on the crop
    with its real surroundings as context (reflected only beyond the image border). Returns
    {"blur", "sharp", "name"}, float32 (3, H, W) in [0, 1]; "sharp" is exactly the stored pixels.
    Index with i (the epoch of set_epoch) or (e, i).

    generator: a MotionBlurGenerator, a MotionBlurConfig or a dict of its fields.
    files: a subset of the folder's images (paths relative to it); default all, recursively.
    cache: keep decoded images in memory (per process).
    repeat: samples per image and epoch (sample i shows image i % len(files)); each has its own
    crop, augmentation and blur, so a few images still give many distinct pairs per epoch.
    scenes: the fraction of samples that show a procedural scene (deblurfast.train.scenes) drawn
    from the sample's generator instead of a photo (needs a crop)."""

    def __init__(self, folder: str, crop=None, augment: bool = True, seed: int = 0, generator=None,
                 files: list[str] | None = None, cache: bool = False, repeat: int = 1, scenes: float = 0.0):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"SyntheticBlurDataset: {folder} is not a folder")
        self.folder = folder
        self.files = list(files) if files is not None else list_images(folder)
        if not self.files:
            raise FileNotFoundError(f"SyntheticBlurDataset: no images in {folder}")
        self.crop = None if crop is None else _size2(crop)
        self.augment, self.seed = augment, seed
        self.generator = generator if isinstance(generator, MotionBlurGenerator) else MotionBlurGenerator(generator)
        self.cache = {} if cache else None
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"SyntheticBlurDataset: repeat must be a positive int, got {repeat!r}")
        self.repeat = repeat
        if not 0.0 <= float(scenes) <= 1.0 or (scenes and crop is None):
            raise ValueError(f"SyntheticBlurDataset: scenes must be a fraction in [0, 1] (with a crop), got {scenes!r}")
        self.scenes = float(scenes)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _image(self, index: int) -> np.ndarray:
        index %= len(self.files)
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        img = read_image(os.path.join(self.folder, self.files[index]))
        if self.cache is not None:
            self.cache[index] = img
        return img

    def __getitem__(self, index) -> dict:
        epoch, index = _epoch_index(self, index)
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticBlurDataset: index {index} out of range for {len(self)} samples")
        rng = sample_rng(self.seed, epoch, index)
        recipe = self.generator.sample(rng)
        R = recipe.radius
        if self.scenes and rng.random() < self.scenes:
            ch, cw = self.crop
            region = scene(rng, ch + 2 * R, cw + 2 * R)
            name = f"scene-{self.seed}-{epoch}-{index}"
        else:
            img = self._image(index)
            if self.augment:
                img = dihedral(img, random_dihedral(rng, square=True))
            H, W = img.shape[:2]
            ch, cw = self.crop if self.crop is not None else (H, W)
            top, left = random_crop_origin(img.shape, (ch, cw), rng) if self.crop is not None else (0, 0)
            region = crop_window(img, top - R, left - R, ch + 2 * R, cw + 2 * R)
            name = self.files[index % len(self.files)]
        sharp = self.generator.sharp_target(recipe, region[R:R + ch, R:R + cw])
        blur = self.generator.render(recipe, _unit(region))
        return {"blur": to_tensor(blur), "sharp": to_tensor(sharp), "name": name}


# -- sample images ----------------------------------------------------------------------------------------

# scikit-image's bundled images (no download): colour first, then grey ones (stored as RGB).
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "camera", "brick", "grass", "gravel", "moon", "coins", "clock")


def sample_images(folder: str, names=SAMPLE_IMAGES) -> list[str]:
    """Writes scikit-image's bundled sample images into `folder` as RGB PNGs (atomically: each is
    written to a temporary file and renamed; existing files are kept) and returns their paths."""
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(folder, f"{name}.png")
        if not os.path.isfile(path):
            img = np.asarray(getattr(skimage.data, name)())
            if img.dtype != np.uint8:
                raise ValueError(f"sample_images: skimage.data.{name} is {img.dtype}, not an 8-bit image")
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            write_image(path, np.ascontiguousarray(img[..., :3]))
        paths.append(path)
    return paths


# -- one entry point --------------------------------------------------------------------------------------

DATASET_KINDS = ("gopro", "hide", "realblur", "pairs", "synthetic")


def build_dataset(kind: str, root: str, crop=None, train: bool = True, seed: int = 0, **options):
    """A dataset by kind: "gopro", "hide", "realblur", "pairs" (a folder with input/ + target/ or
    blur/ + sharp/) or "synthetic" (a folder of sharp images). Training sets crop and augment;
    evaluation sets (train=False) return whole, unaugmented images.

    options: split (default "train" / "test"), blur_folder (gopro), subset (hide), variant ("J"
    or "R", realblur; root may also be a list file), generator / files / cache / repeat (synthetic),
    flip / rot90 (paired kinds)."""
    split = options.pop("split", "train" if train else "test")
    aug = {k: options.pop(k) for k in ("flip", "rot90") if k in options}
    if kind == "synthetic":
        return SyntheticBlurDataset(root, crop=crop, augment=train, seed=seed, **options)
    if kind == "gopro":
        pairs = gopro_pairs(root, split, **options)
    elif kind == "hide":
        pairs = hide_pairs(root, split, **options)
    elif kind == "realblur":
        variant = options.pop("variant", "J")
        pairs = realblur_pairs(root if os.path.isfile(root) else realblur_list(root, variant, split), **options)
    elif kind == "pairs":
        base = os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root
        b, s = ("input", "target") if os.path.isdir(os.path.join(base, "input")) else ("blur", "sharp")
        pairs = folder_pairs(os.path.join(base, b), os.path.join(base, s))
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; available: {', '.join(DATASET_KINDS)}")
    return PairedDataset(pairs, crop=crop, augment=train, seed=seed, **aug)


__all__ = [
    "BLUR_FAMILIES", "BlurFamilyConfig", "BlurFamilyGenerator", "BlurRecipe", "DATASET_KINDS", "HIDE_TEST_FOLDERS", "MotionBlurConfig", "MotionBlurGenerator", "Pair",
    "PairedDataset", "SAMPLE_IMAGES", "SyntheticBlurDataset", "blend_masks", "build_dataset", "camera_trajectory",
    "convolve_valid", "crop_window", "defocus_psf", "jpeg_roundtrip", "linear_motion_psf", "dihedral", "folder_pairs", "gopro_pairs", "hide_pairs", "paired_augment",
    "paired_random_crop", "random_crop_origin", "random_dihedral", "realblur_list", "realblur_pairs",
    "reflect_indices", "sample_images", "sample_rng", "scene", "to_tensor", "trajectory_psf",
]
