"""Whole-batch augmentation (labelclean/augment.py): random crops within the padding, flips, normalization."""

import torch

from labelclean.augment import Augment, crop_padding, normalize, random_crop, random_flip


def crop_offset(original: torch.Tensor, cropped: torch.Tensor, padding: int) -> tuple[int, int] | None:
    """The (dy, dx) of the zero-padded ``original`` that ``cropped`` shows, if any."""
    c, h, w = original.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=original.dtype)
    padded[:, padding:padding + h, padding:padding + w] = original
    for dy in range(-padding, padding + 1):
        for dx in range(-padding, padding + 1):
            if torch.equal(padded[:, padding + dy:padding + dy + h, padding + dx:padding + dx + w], cropped):
                return dy, dx
    return None


def test_random_crop_shifts_each_image_to_any_offset_within_the_padding():
    torch.manual_seed(0)
    x = torch.randint(1, 255, (600, 3, 8, 6), dtype=torch.uint8)  # no zero pixel: a shift always shows
    out = random_crop(x, 2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    offsets = [crop_offset(orig, cropped, 2) for orig, cropped in zip(x, out)]
    assert None not in offsets
    every = {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert set(offsets) == every  # all 25 offsets, rows and columns drawn independently
    counts = torch.tensor([offsets.count(o) for o in sorted(every)], dtype=torch.float)
    assert counts.min() > 600 / 25 / 3  # roughly uniform
    assert torch.equal(random_crop(x, 0), x)


def test_random_flip_mirrors_about_half_the_batch_left_to_right():
    torch.manual_seed(0)
    x = torch.randn(400, 2, 4, 5)
    out = random_flip(x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ kept).all()  # each image is either mirrored left–right (every channel) or left as is
    assert 150 < int(flipped.sum()) < 250


def test_augment_normalizes_with_data_statistics():
    mean, std = torch.tensor([0.5, 0.2]).view(1, 2, 1, 1), torch.tensor([0.25, 0.1]).view(1, 2, 1, 1)
    x = torch.stack([torch.full((4, 4), 255), torch.full((4, 4), 51)]).unsqueeze(0).to(torch.uint8)
    expected = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), 0.0)]).unsqueeze(0)
    torch.testing.assert_close(normalize(x, mean, std), expected)
    assert x[0, 0, 0, 0] == 255  # the input is left as it was
    aug = Augment(mean, std, 0, False)
    torch.testing.assert_close(aug(x), expected)
    torch.testing.assert_close(aug.plain(x), expected)
    assert crop_padding(32) == 4 and crop_padding(8) == 1 and crop_padding(224) == 28


def test_augment_crops_and_flips_only_when_asked():
    torch.manual_seed(0)
    x = torch.randint(1, 255, (200, 1, 6, 6), dtype=torch.uint8)
    mean, std = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1) / 255  # normalize() then gives the pixel values
    flipped = Augment(mean, std, 0, True)(x).round()
    assert any(torch.equal(f, i.float().flip(-1)) for f, i in zip(flipped, x))
    assert all(torch.equal(f, i.float()) or torch.equal(f, i.float().flip(-1)) for f, i in zip(flipped, x))
    cropped = Augment(mean, std, 1, False)(x).round()
    assert all(crop_offset(i, c.to(torch.uint8), 1) is not None for i, c in zip(x, cropped))
    assert not torch.equal(cropped, x.float())
