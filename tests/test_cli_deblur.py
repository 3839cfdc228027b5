"""`deblurfast deblur`: images, folders, videos; safety rules."""

import os

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast import cli, media
from deblurfast.models import IOConvention, register_model


class Brighten(nn.Module):
    """A deterministic stand-in network: out = 0.5 * x + 0.25 (values in [0, 1])."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return self.scale * x + 0.25


register_model("_cli_test", IOConvention(multiple=4), "none")(lambda: Brighten())
PIL = pytest.importorskip("PIL")


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
    from deblurfast.demo import default_model

    img = rand_image(24, 32, 5)
    write(tmp_path / "in.png", img)
    argv = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--device", "cpu"]
    assert cli.main(argv) == 0
    assert "using the bundled default model" in capsys.readouterr().err
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
