"""kd_core.images: a user's drawing or upload prepared like the dataset's images (MNIST: box
scaled to 20x20, centre of mass at the centre of 28x28, white on black, normalised; digits:
8x8 counts 0..16; CIFAR-10: 32x32 RGB), and bad uploads refused with a clear message. The
teacher (mnist-mini, cached in the shared test home) reads real MNIST digits that were
enlarged and moved off-centre, after the pipeline."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from kd_core import data, images
from kd_core.errors import KDError


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _small_one(size: int = 300, ink: int = 255, paper: int = 0) -> Image.Image:
    """A thick, slanted "1", small and off-centre (top right) in a size x size picture."""
    img = Image.new("L", (size, size), paper)
    d = ImageDraw.Draw(img)
    d.line([(220, 30), (232, 110)], fill=ink, width=9)
    d.line([(220, 30), (206, 44)], fill=ink, width=7)
    return img


def _box(a: np.ndarray, thr: float = 0.05) -> tuple[int, int]:
    rows, cols = np.flatnonzero((a > thr).any(1)), np.flatnonzero((a > thr).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.fixture(scope="module")
def mini() -> data.Dataset:
    return data.load("mnist-mini")


# ------------------------------------------------------------------ MNIST style
def test_mnist_style_scales_the_box_to_20_and_centres_the_mass():
    out = images.mnist_style(_small_one())
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.9  # white digit on black
    h, w = _box(out)
    assert 19 <= max(h, w) <= 21, (h, w)  # the longer side fits the 20x20 box
    assert w < h  # aspect ratio kept: a "1" stays tall and thin
    cy, cx = images.centre_of_mass(out)
    assert abs(cy - 13.5) <= 0.75 and abs(cx - 13.5) <= 0.75, (cy, cx)
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0  # black frame
    assert 0 < ((out > 0.05) & (out < 0.95)).sum()  # anti-aliased: grey edges


def test_dark_ink_on_white_paper_is_inverted_and_arrays_work_too():
    white_paper = images.mnist_style(_small_one(ink=0, paper=255))
    black_paper = images.mnist_style(_small_one())
    assert np.abs(white_paper - black_paper).max() < 1e-5
    arr = np.asarray(_small_one(), dtype=np.float64) / 255.0  # floats 0..1
    assert np.abs(images.mnist_style(arr) - black_paper).max() < 1e-5
    rgba = np.zeros((300, 300, 4), np.uint8)  # black ink on a transparent background
    rgba[..., 3] = np.asarray(_small_one())
    assert np.abs(images.mnist_style(rgba) - black_paper).max() < 1e-5
    rgba[..., :3] = 255  # white ink on a transparent background
    assert np.abs(images.mnist_style(Image.fromarray(rgba, "RGBA")) - black_paper).max() < 1e-5


def test_to_model_input_is_normalised_like_the_dataset(mini):
    x = images.to_model_input(_small_one(), mini)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    px = images.pixels(_small_one(), "mnist-mini")
    assert torch.allclose(mini.denormalise(x)[0], torch.from_numpy(px), atol=1e-6)
    assert abs(float(x.min()) - float(mini.x_test.min())) < 1e-5  # the black background = the dataset's zero


def test_digits_are_8x8_counts_of_a_32x32_bitmap():
    px = images.pixels(_small_one(), "digits")
    assert px.shape == (1, 8, 8) and px.dtype == np.float32
    counts = px * 16
    assert np.allclose(counts, counts.round()) and counts.min() == 0 and counts.max() == 16
    ds = data.load("digits")
    x = images.to_model_input(_small_one(), ds)
    assert x.shape == (1, 1, 8, 8)
    assert torch.allclose(ds.denormalise(x)[0], torch.from_numpy(px), atol=1e-6)


def test_cifar10_photos_are_32x32_rgb():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (120, 200, 3), dtype=np.uint8))
    px = images.pixels(photo, "cifar10")
    assert px.shape == (3, 32, 32) and px.dtype == np.float32 and 0 <= px.min() and px.max() <= 1
    z = torch.zeros(1, 3, 32, 32)
    fake = data.Dataset(
        "cifar10",
        z,
        torch.zeros(1, dtype=torch.long),
        z,
        torch.zeros(1, dtype=torch.long),
        [str(i) for i in range(10)],
        (0.5, 0.4, 0.3),
        (0.25, 0.25, 0.25),
    )
    x = images.to_model_input(photo, fake)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, 1], (torch.from_numpy(px[1]) - 0.4) / 0.25)


def test_unknown_dataset_is_refused():
    with pytest.raises(KDError, match="not supported"):
        images.pixels(_small_one(), "imagenet")


# ------------------------------------------------------------------ the teacher reads the result
def test_teacher_reads_enlarged_off_centre_mnist_digits(mini):
    from kd_core import config, metrics, models, train

    arch = models.preset("mnist-mini")[0]
    teacher = train.get_teacher("mnist-mini", arch, config.TEACHER_EPOCHS.get("mnist-mini", 10))
    y = mini.y_test.numpy()
    raw = mini.denormalise(mini.x_test).numpy()[:, 0]
    with torch.no_grad():
        orig = metrics.predict_logits(teacher.model, mini.x_test).argmax(1).numpy()
    rng = np.random.default_rng(0)
    picks = [int(rng.choice(np.flatnonzero((y == c) & (orig == c)))) for c in range(10) for _ in range(2)]
    right = 0
    for n, i in enumerate(picks):
        big = Image.fromarray((raw[i] * 255).round().astype(np.uint8)).resize((280, 280), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (500, 420), 0)
        canvas.paste(big, (int(rng.integers(0, 220)), int(rng.integers(0, 140))))  # off-centre
        if n % 2:  # half of them as dark ink on white paper, uploaded as PNG
            canvas = Image.eval(canvas, lambda v: 255 - v)
        img = images.check_upload(_png(canvas), "digit.png")
        with torch.no_grad():
            guess = int(metrics.predict_logits(teacher.model, images.to_model_input(img, mini)).argmax(1))
        right += guess == y[i]
    assert right >= 18, f"the teacher read {right} of {len(picks)} enlarged, moved digits"


# ------------------------------------------------------------------ refusing bad uploads
def test_a_good_upload_decodes():
    img = images.check_upload(_png(_small_one(), "JPEG"), "one.jpg")
    assert img.size == (300, 300) and img.format == "JPEG"


@pytest.mark.parametrize(
    "content,code,words",
    [
        (b"", "empty_file", "empty"),
        (b"this is not an image at all", "not_image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(images.MAX_UPLOAD_BYTES), "too_large", "limit is 2 MB"),
    ],
)
def test_bad_uploads_are_refused_clearly(content, code, words):
    with pytest.raises(images.ImageError, match=words) as e:
        images.check_upload(content, "upload.png")
    assert e.value.code == code and isinstance(e.value, KDError)
    assert "upload.png" in str(e.value)


def test_truncated_png_is_refused():
    rng = np.random.default_rng(1)
    good = _png(Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)))
    with pytest.raises(images.ImageError, match="damaged or truncated") as e:
        images.check_upload(good[: len(good) // 2], "half.png")
    assert e.value.code == "damaged"


def test_other_formats_are_refused():
    with pytest.raises(images.ImageError, match="TIFF image; use PNG, JPEG") as e:
        images.check_upload(_png(_small_one(), "TIFF"), "scan.tif")
    assert e.value.code == "format"


def test_an_empty_canvas_is_refused():
    blank = images.check_upload(_png(Image.new("RGBA", (336, 336), (0, 0, 0, 255))), "drawing")
    for name in ("mnist-mini", "digits", "fashion-mnist"):
        with pytest.raises(images.ImageError, match="empty: there is no digit") as e:
            images.pixels(blank, name)
        assert e.value.code == "no_ink"


def test_canvas_data_urls():
    png = _png(_small_one())
    assert images.from_data_url("data:image/png;base64," + base64.b64encode(png).decode()) == png
    for bad in ("", "hello", "data:text/plain;base64,aGk=", "data:image/png;base64,@@@"):
        with pytest.raises(images.ImageError, match="drawing could not be read"):
            images.from_data_url(bad)
