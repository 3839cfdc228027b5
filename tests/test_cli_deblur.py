"""`deblurfast deblur`: images, folders, videos; safety rules."""

import os

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast import cli, media
from deblurfast.models import IOConvention


class Brighten(nn.Module):
    """A deterministic stand-in network: out = 0.5 * x + 0.25 (values in [0, 1])."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return self.scale * x + 0.25


class Identity(nn.Module):
    """out = x: what a file goes through when only deblurring may change pixel values."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.scale * x


@pytest.fixture(scope="module", autouse=True)
def _stand_ins(model_registry):
    model_registry("_cli_test", IOConvention(multiple=4, receptive_field=0), Brighten)
    model_registry("_cli_identity", IOConvention(value_range=(-1.0, 1.0), multiple=4, receptive_field=0), Identity)


PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def expected(image):
    return np.round((0.5 * image.astype(np.float64) / 255 + 0.25) * 255).astype(np.uint8)


def run(*argv):
    return cli.main(["deblur", *argv, "--model", "_cli_test", "--device", "cpu", "--quiet"])


def write(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    media.write_image(str(path), image)


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_one_image(tmp_path):
    img = rand_image(13, 22)
    write(tmp_path / "in.png", img)
    assert run(str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")) == 0
    out = media.read_image(str(tmp_path / "out.png"))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - expected(img).astype(int)).max() <= 1


def test_folder_recursive_keeps_names_and_skips_bad_files(tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    images = {"a.png": rand_image(8, 8, 1), "sub/b.png": rand_image(9, 11, 2), "sub/deeper/c.bmp": rand_image(5, 7, 3)}
    for rel, img in images.items():
        write(src / rel, img)
    (src / "sub" / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("ignored: not an image")
    code = run(str(src), "-o", str(dst))
    assert code == 1  # one file failed, the rest were processed
    assert "skipped" in capsys.readouterr().err
    for rel, img in images.items():
        out = media.read_image(str(dst / rel))
        assert np.abs(out.astype(int) - expected(img).astype(int)).max() <= 1
    assert not (dst / "sub" / "broken.png").exists()
    assert not [p for p in dst.rglob(".tmp-*")]  # atomic writes leave nothing behind


def test_never_overwrites_an_input(tmp_path, capsys):
    img = rand_image(8, 8)
    write(tmp_path / "x.png", img)
    before = (tmp_path / "x.png").read_bytes()
    assert run(str(tmp_path / "x.png"), "-o", str(tmp_path / "x.png")) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "x.png").read_bytes() == before
    # a folder written into itself: the inputs are listed first, and none is replaced
    assert run(str(tmp_path), "-o", str(tmp_path)) == 1
    assert (tmp_path / "x.png").read_bytes() == before


def test_output_folder_keeps_the_file_name(tmp_path):
    write(tmp_path / "a.png", rand_image(8, 12))
    (tmp_path / "results").mkdir()
    assert run(str(tmp_path / "a.png"), "-o", str(tmp_path / "results")) == 0
    assert (tmp_path / "results" / "a.png").exists()
    assert run(str(tmp_path / "a.png"), "-o", str(tmp_path / "new")) == 0  # no extension: a new folder
    assert (tmp_path / "new" / "a.png").exists()


def test_tiles(tmp_path):
    img = rand_image(40, 57)
    write(tmp_path / "in.png", img)
    assert run(str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--tile", "16", "--tile-overlap", "4") == 0
    out = media.read_image(str(tmp_path / "out.png"))
    assert np.abs(out.astype(int) - expected(img).astype(int)).max() <= 1  # pointwise: tiles are invisible


def test_unsupported_input(tmp_path, capsys):
    (tmp_path / "a.xyz").write_text("?")
    assert run(str(tmp_path / "a.xyz"), "-o", str(tmp_path / "b.xyz")) == 1
    assert "unsupported file type" in capsys.readouterr().err
    assert run(str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")) == 2


def _make_video(path, frames, rate=12, with_audio=True):
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as c:
        v = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = c.add_stream("aac", rate=16000) if with_audio else None
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(16000 * len(frames) / rate)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode():
                c.mux(p)


@pytest.mark.parametrize("with_audio", [True, False])
def test_video_keeps_frame_rate_and_audio(tmp_path, with_audio):
    frames = [np.full((32, 48, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    _make_video(tmp_path / "in.mp4", frames, with_audio=with_audio)
    assert run(str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4")) == 0
    src, out = media.video_info(str(tmp_path / "in.mp4")), media.video_info(str(tmp_path / "out.mp4"))
    assert out.rate == src.rate and (out.width, out.height) == (48, 32)
    assert out.has_audio == with_audio
    decoded = list(media.read_video(str(tmp_path / "out.mp4")))
    assert len(decoded) == len(frames)
    for got, f in zip(decoded, frames):  # lossy codec: compare means
        assert abs(float(got.mean()) - float(expected(f).mean())) < 4


def test_folder_with_videos_and_other_files(tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    img = rand_image(8, 12, 4)
    write(src / "a.png", img)
    frames = [np.full((16, 16, 3), 60 * i, dtype=np.uint8) for i in range(3)]
    (src / "clips").mkdir()
    _make_video(src / "clips" / "v.mp4", frames, with_audio=False)
    (src / "notes.txt").write_text("not an image")
    assert run(str(src), "-o", str(dst)) == 0  # other files are reported, not failures
    err = capsys.readouterr().err
    assert "notes.txt: not an image or a video" in err
    assert np.abs(media.read_image(str(dst / "a.png")).astype(int) - expected(img).astype(int)).max() <= 1
    assert len(list(media.read_video(str(dst / "clips" / "v.mp4")))) == len(frames)
    assert not (dst / "notes.txt").exists()


def test_folder_without_images_or_videos(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("?")
    assert run(str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 2
    assert "no images or videos found" in capsys.readouterr().err


def test_default_is_the_bundled_model(tmp_path, capsys):
    from deblurfast.weights import default_model

    img = rand_image(24, 32, 5)
    write(tmp_path / "in.png", img)
    argv = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--device", "cpu"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "using the bundled default model" in err and "CPU path: " in err  # the path the engine measured fastest
    want = deblurfast.deblur(default_model().eval(), img)
    assert np.abs(media.read_image(str(tmp_path / "out.png")).astype(int) - want.astype(int)).max() <= 1
    assert cli.main(argv[:4] + ["--weights", str(tmp_path / "w.pt"), "--device", "cpu"]) == 2
    assert "--weights needs --model" in capsys.readouterr().err


def test_odd_sized_video(tmp_path):
    av = pytest.importorskip("av")
    if "libx264" not in av.codecs_available:
        pytest.skip("odd frame sizes need x264's 4:4:4 (this PyAV has no libx264)")
    frames = [np.full((15, 21, 3), 50 * i, dtype=np.uint8) for i in range(3)]
    with av.open(str(tmp_path / "in.mkv"), mode="w") as c:  # 4:4:4 source: odd sizes allowed
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 21, 15, "yuv444p"
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    assert run(str(tmp_path / "in.mkv"), "-o", str(tmp_path / "out.mkv")) == 0
    out = media.video_info(str(tmp_path / "out.mkv"))
    assert (out.width, out.height) == (21, 15)
    assert len(list(media.read_video(str(tmp_path / "out.mkv")))) == 3


def identity(*argv):
    return cli.main(["deblur", *argv, "--model", "_cli_identity", "--device", "cpu", "--quiet"])


def test_16_bit_images_keep_their_precision(tmp_path):
    """A full-range 16-bit gradient (grey PNG, RGB PNG, RGB TIFF) comes back bit for bit through
    an identity network, still 16-bit (it came out 99.6% white as 8-bit)."""
    gradient = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(gradient).save(tmp_path / "grey16.png")
    rgb = np.stack([gradient, gradient[::-1], gradient.T], axis=-1)
    media.write_image(str(tmp_path / "rgb16.png"), rgb)
    media.write_image(str(tmp_path / "rgb16.tif"), rgb)
    for name in ("grey16.png", "rgb16.png", "rgb16.tif"):
        assert identity(str(tmp_path / name), "-o", str(tmp_path / "out" / name)) == 0, name
    with Image.open(tmp_path / "out" / "grey16.png") as im:
        assert im.mode == "I;16" and np.array_equal(np.asarray(im), gradient)
    with open(tmp_path / "out" / "rgb16.png", "rb") as f:
        assert f.read(26)[24:26] == bytes([16, 2])  # IHDR: 16 bits, RGB
    for name in ("rgb16.png", "rgb16.tif"):
        back = media.read_picture(str(tmp_path / "out" / name))
        assert back.rgb.dtype == np.uint16 and np.array_equal(back.rgb, rgb), name


def test_alpha_passes_through_untouched(tmp_path):
    rng = np.random.default_rng(6)
    for depth, name in ((np.uint8, "a.png"), (np.uint16, "b.png"), (np.uint8, "c.webp")):
        top = np.iinfo(depth).max + 1
        rgba = rng.integers(0, top, (12, 15, 4), dtype=np.uint64).astype(depth)
        rgba[:4, :, 3] = 0  # a transparent band
        media.write_picture(str(tmp_path / name), media.Picture(rgba[..., :3], rgba[..., 3]))
        assert run(str(tmp_path / name), "-o", str(tmp_path / "out" / name)) == 0
        out = media.read_picture(str(tmp_path / "out" / name))
        assert out.alpha is not None and np.array_equal(out.alpha, rgba[..., 3]), name
        if depth == np.uint8 and name.endswith(".png"):
            assert np.abs(out.rgb.astype(int) - expected(rgba[..., :3]).astype(int)).max() <= 1
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.mode == "RGBA"


def test_alpha_to_a_format_without_alpha_is_refused(tmp_path, capsys):
    media.write_picture(str(tmp_path / "a.png"), media.Picture(rand_image(8, 8), rand_image(8, 8)[..., 0]))
    assert run(str(tmp_path / "a.png"), "-o", str(tmp_path / "a.jpg")) == 1
    assert "JPG cannot store the image's alpha channel" in capsys.readouterr().err
    assert not (tmp_path / "a.jpg").exists()


def test_grey_stays_grey(tmp_path):
    grey = rand_image(10, 14)[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert run(str(tmp_path / "g.png"), "-o", str(tmp_path / "out.png")) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L"
        out = np.asarray(im)
    assert out.shape == grey.shape
    assert np.abs(out.astype(int) - expected(grey).astype(int)).max() <= 1


def test_icc_profile_and_exif_are_kept_and_orientation_applied(tmp_path):
    """EXIF orientation 6 (rotate 90 clockwise to view): the output is written upright with the
    orientation removed, the other EXIF tags and the ICC profile as they were."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "deblurfast test camera"
    img = rand_image(10, 16, 7)
    for name in ("in.png", "in.jpg"):
        Image.fromarray(img).save(tmp_path / name, icc_profile=icc, exif=exif.tobytes(), quality=100)
        assert run(str(tmp_path / name), "-o", str(tmp_path / "out" / name)) == 0
        with Image.open(tmp_path / "out" / name) as im:
            assert im.info.get("icc_profile") == icc, name
            out_exif = im.getexif()
            assert out_exif.get(0x010F) == "deblurfast test camera" and out_exif.get(0x0112) in (None, 1), name
            out = np.asarray(im.convert("RGB"))
        assert out.shape == (16, 10, 3), name  # upright
    want = expected(np.rot90(img, -1))
    assert np.abs(media.read_image(str(tmp_path / "out" / "in.png")).astype(int) - want.astype(int)).max() <= 1


def test_jpeg_quality(tmp_path):
    """JPEG is written at quality 95 unless --jpeg-quality says otherwise (it was Pillow's 75)."""
    import io

    img = rand_image(32, 48, 8)
    Image.fromarray(img).save(tmp_path / "in.jpg", quality=100)
    pixels = media.read_image(str(tmp_path / "in.jpg"))  # what the identity network returns

    def encoded(quality):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    assert identity(str(tmp_path / "in.jpg"), "-o", str(tmp_path / "q95.jpg")) == 0
    assert (tmp_path / "q95.jpg").read_bytes() == encoded(95)
    assert identity(str(tmp_path / "in.jpg"), "-o", str(tmp_path / "q60.jpg"), "--jpeg-quality", "60") == 0
    assert (tmp_path / "q60.jpg").read_bytes() == encoded(60)
    with pytest.raises(SystemExit):
        identity(str(tmp_path / "in.jpg"), "-o", str(tmp_path / "q.jpg"), "--jpeg-quality", "101")


def test_tiny_and_thin_images_with_the_bundled_model(tmp_path):
    """The default model needs 12x12 (it padded only to a multiple of 4 and failed)."""
    for h, w in ((1, 1), (3, 40), (8, 64)):
        write(tmp_path / f"{h}x{w}.png", rand_image(h, w))
    assert cli.main(["deblur", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    for h, w in ((1, 1), (3, 40), (8, 64)):
        assert media.read_image(str(tmp_path / "out" / f"{h}x{w}.png")).shape == (h, w, 3)


@pytest.mark.parametrize("options, message", [
    (["--tile", "0"], "tile must be a positive number of pixels, got 0"),
    (["--tile", "-5"], "tile must be a positive number of pixels, got -5"),
    (["--tile", "1"], "tile 1 is smaller than the model's smallest input, 2 pixels"),
    (["--tile", "64", "--tile-overlap", "64"], "overlap 64 must be smaller than the tile, 64"),
    (["--tile", "64", "--tile-overlap", "-1"], "overlap must be >= 0 pixels, got -1"),
    (["--tile-overlap", "16"], "--tile-overlap needs --tile")])
def test_tile_options_are_checked(tmp_path, capsys, options, message):
    write(tmp_path / "in.png", rand_image(20, 20))
    argv = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--device", "cpu", *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_small_tiles_say_that_seams_may_show(tmp_path, capsys):
    write(tmp_path / "in.png", rand_image(100, 90))
    argv = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--device", "cpu", "--tile", "64"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "note: overlap clamped to 62" in err and "seams may show" in err
    assert err.count("overlap clamped") == 1  # said once, not per image


def test_unusable_weights_get_one_line(tmp_path, capsys):
    write(tmp_path / "in.png", rand_image(8, 8))
    (tmp_path / "notanimage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    for weights, message in ((tmp_path / "notanimage.jpg", "is not a PyTorch checkpoint but a JPEG image"),
                             (tmp_path / "missing.pt", "does not exist")):
        argv = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", "aspdc",
                "--weights", str(weights), "--device", "cpu", "--quiet"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(weights) in err


def test_output_folder_inside_the_input_folder(tmp_path):
    """`deblur in -o in/out`, twice: the second run reads the same inputs, not the first run's outputs."""
    images = {"a.png": rand_image(8, 8, 1), "sub/b.png": rand_image(9, 11, 2)}
    for rel, img in images.items():
        write(tmp_path / "in" / rel, img)
    for _ in range(2):
        assert run(str(tmp_path / "in"), "-o", str(tmp_path / "in" / "out")) == 0
    assert not (tmp_path / "in" / "out" / "out").exists()
    assert sorted(p.relative_to(tmp_path / "in" / "out").as_posix()
                  for p in (tmp_path / "in" / "out").rglob("*.png")) == sorted(images)


def test_progress_counts_images(tmp_path, capsys):
    for i in range(2):
        write(tmp_path / "in" / f"{i}.png", rand_image(8, 8, i))
    assert cli.main(["deblur", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "_cli_test",
                     "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    # captured stderr is not a terminal: tqdm's plain lines, the last one with the count and the rate
    last = [line for line in err.splitlines() if line.startswith("deblurring:")][-1]
    assert "2/2" in last and "images/s" in last and "\r" not in err and "frames" not in err
