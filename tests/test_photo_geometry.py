"""Photo geometry: aspect ratio kept when decoding, random-resized crops for photos in training,
ImageNet normalisation for ImageNet weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from labelclean.augment import SMALL_SIDE, Augment, imagenet_stats
from labelclean.data import decode_images


def striped(width: int, height: int) -> Image.Image:
    """Red left third, green centre, blue right third: squashing would keep all three, a centre
    crop of a wide image keeps green in the middle and less of the sides."""
    pixels = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    pixels[:, :third, 0] = 255
    pixels[:, third:2 * third, 1] = 255
    pixels[:, 2 * third:, 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width,height,fmt", [(320, 240, "png"), (800, 600, "jpg"), (240, 320, "png"),
                                              (300, 100, "png"), (64, 64, "png")])
def test_decode_keeps_aspect_ratio_by_cropping_the_centre(tmp_path, width, height, fmt):
    file = tmp_path / f"photo.{fmt}"
    striped(width, height).save(file)
    (image,), bad = decode_images([file], 48, channels=3)
    assert not bad and image.shape == (3, 48, 48)
    row = image[:, 24].numpy().astype(int)  # (3, 48): one row across the middle
    side = min(width, height)
    left = (width - side) // 2  # the centre square in the original's pixels
    for col in (1, 24, 46):
        x = left + (col + 0.5) * side / 48  # where this output column samples the original
        channel = min(2, int(x // (width // 3)))
        assert row[channel, col] > 150 and row[:, col].sum() - row[channel, col] < 120, (col, row[:, col])


def test_decode_wide_image_is_not_squashed(tmp_path):
    """A 3:1 image: its centre square is all green; a squashed decode would be one third green."""
    file = tmp_path / "wide.png"
    striped(300, 100).save(file)
    (image,), _ = decode_images([file], 30, channels=3)
    green = (image[1] > 200) & (image[0] < 60) & (image[2] < 60)
    assert green.float().mean() == 1.0


def test_decode_mixed_sizes_gives_equal_squares(tmp_path):
    files = []
    for i, (w, h) in enumerate([(320, 240), (800, 600), (500, 375), (240, 320), (640, 640)]):
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    images, bad = decode_images(files, 64, channels=3)
    assert not bad and images.shape == (5, 3, 64, 64) and images.dtype == torch.uint8


def unit_stats(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)


def test_photos_get_random_resized_crops():
    """Above SMALL_SIDE a view is a resized crop: a left-to-right ramp stays monotone (no zero padding
    enters) and the crops differ in scale, so the visible range of the ramp varies between images."""
    torch.manual_seed(0)
    size = SMALL_SIDE + 32
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8).view(1, 1, 1, size).expand(64, 3, size, size)
    views = Augment(*unit_stats(3), padding=12, flip=False)(ramp.contiguous())
    assert views.shape == (64, 3, size, size) and views.dtype == torch.float32
    middle = views[:, 0, size // 2]  # (64, size): one row of each view
    assert (middle.diff(dim=1) >= -1e-4).all()  # not mirrored, not padded: still increasing
    spans = middle[:, -1] - middle[:, 0]
    assert spans.max() > 0.6 and spans.min() < 0.4  # different zooms
    assert views.min() >= 0 and views.max() <= 1


def test_photos_are_flipped_when_asked():
    torch.manual_seed(0)
    size = SMALL_SIDE * 2
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8).view(1, 1, 1, size).expand(64, 1, size, size)
    middle = Augment(*unit_stats(1), padding=0, flip=True)(ramp.contiguous())[:, 0, size // 2]
    increasing = middle[:, -1] > middle[:, 0]
    assert 10 < increasing.sum() < 54  # about half mirrored


def test_small_images_keep_pad_and_crop():
    """At SMALL_SIDE and below: the paper's crop of the zero-padded image, no resizing."""
    torch.manual_seed(0)
    x = torch.full((32, 1, SMALL_SIDE, SMALL_SIDE), 255, dtype=torch.uint8)
    views = Augment(*unit_stats(1), padding=4, flip=False)(x)
    assert set(views.unique().tolist()) == {0.0, 1.0}  # padding shows as exact zeros, the rest untouched


def test_imagenet_stats():
    assert imagenet_stats(3) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    (mean,), (std,) = imagenet_stats(1)
    assert 0.44 < mean < 0.46 and 0.22 < std < 0.23


def test_fit_states_its_plan_first_and_estimates_the_time_after_the_first_epoch(digits, tmp_path, caplog):
    import logging

    import labelclean

    with caplog.at_level(logging.INFO, logger="labelclean"):
        labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", epochs=3, warmup=1, batch_size=64,
                       arch="small_cnn", device="cpu", image_size=8)
    lines = [r.getMessage() for r in caplog.records]
    plan = next(i for i, line in enumerate(lines) if line.startswith("Training "))
    assert "small_cnn" in lines[plan] and "300 images of 8 px on the CPU" in lines[plan]
    assert "3 epochs planned (1 of warm-up)" in lines[plan]
    assert plan < next(i for i, line in enumerate(lines) if line.startswith("Decoded "))  # before the long work
    estimates = [line for line in lines if "left take about" in line]
    assert len(estimates) == 2  # after the warm-up epoch and after the first DivideMix epoch
    assert estimates[0].startswith("Epoch 1 (warm-up)") and "2 epoch(s) left" in estimates[0]
    assert estimates[1].startswith("Epoch 2 (train)") and "1 epoch(s) left" in estimates[1]
    assert plan < lines.index(next(line for line in lines if line.startswith("Epoch 1")))
