import torch

from labelclean.augment import Augment, crop_padding, random_crop, random_flip


def test_random_crop_shifts_each_image_within_the_padding():
    torch.manual_seed(0)
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for orig, cropped in zip(x, out):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros(3, 12, 12, dtype=torch.uint8)
                shifted[:, 2:10, 2:10] = orig
                if torch.equal(shifted[:, 2 + dy:10 + dy, 2 + dx:10 + dx], cropped):
                    found = True
        assert found
    assert not torch.equal(out, x)  # some image moved
    assert torch.equal(random_crop(x, 0), x)


def test_random_flip_mirrors_about_half_the_batch():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 4, 4)
    out = random_flip(x)
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all()
    assert 150 < int(flipped.sum()) < 250


def test_augment_normalizes_with_data_statistics():
    aug = Augment(torch.tensor([0.5]).view(1, 1, 1, 1), torch.tensor([0.25]).view(1, 1, 1, 1), 0, False)
    x = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(aug(x), torch.full((2, 1, 4, 4), 2.0))
    assert crop_padding(32) == 4 and crop_padding(8) == 1
