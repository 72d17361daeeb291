"""The decoded-image cache: images are decoded once, reused while they are unchanged, never trusted
half-written, and read from the memory-mapped file when they are over the RAM cap."""

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, copy_images
from PIL import Image
from typer.testing import CliRunner

import labelclean
from labelclean import cache, data
from labelclean.cache import decode_cached
from labelclean.cli import app
from labelclean.data import channel_stats, decode_images


@pytest.fixture
def decoded(monkeypatch) -> list:
    """The files ``decode_image`` is called on during the test."""
    calls = []
    decode_image = data.decode_image

    def counting(file, size):
        calls.append(file)
        return decode_image(file, size)

    monkeypatch.setattr(data, "decode_image", counting)
    return calls


@pytest.fixture
def files(digits, tmp_path) -> list:
    """20 digit images in a folder of the test's own, free to change."""
    return copy_images(digits, tmp_path / "images", 20)


@pytest.mark.slow
def test_resuming_or_refitting_unchanged_images_reuses_them(digits, tmp_path, decoded, caplog):
    caplog.set_level(logging.INFO, "labelclean")

    def stop_after_one(report):
        if report.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", on_epoch=stop_after_one, **TINY)
    assert len(decoded) == 300
    assert len(list((tmp_path / "run").glob("decoded-*.u8"))) == 1  # in the run directory by default
    decoded.clear()
    resumed = labelclean.fit(None, None, tmp_path / "run", resume=True)
    again = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", overwrite=True, **TINY)
    assert decoded == [] and caplog.text.count("Reusing decoded images from") == 2
    pd.testing.assert_frame_equal(again.export(), resumed.export(), check_exact=False, atol=1e-5)

    changed = tmp_path / "changed.csv"  # other images: their cache replaces the run directory's
    pd.read_csv(digits.labels_csv).iloc[:200].to_csv(changed, index=False)
    labelclean.fit(digits.images_dir, changed, tmp_path / "run", overwrite=True, **TINY)
    assert len(decoded) == 200 and len(list((tmp_path / "run").glob("decoded-*"))) == 2  # data file + sidecar


@pytest.mark.slow
def test_a_fit_over_the_ram_cap_reads_batches_from_the_memory_map(digits, tiny_run, tmp_path, caplog):
    caplog.set_level(logging.INFO, "labelclean")
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", cache_dir=tmp_path / "cache",
                         max_ram_gb=0, **TINY)
    assert "batches are read from the memory-mapped file" in caplog.text
    assert list((tmp_path / "cache").glob("decoded-*.u8")) and not list((tmp_path / "run").glob("decoded-*"))
    pd.testing.assert_frame_equal(run.export(), tiny_run.export())  # the same results as from RAM


def test_a_changed_image_invalidates_the_cache(files, tmp_path, decoded):
    first, _ = decode_cached(files, 8, None, tmp_path / "cache")
    again, _ = decode_cached(files, 8, None, tmp_path / "cache")
    assert len(decoded) == 20 and np.array_equal(again, first)

    stat = files[3].stat()
    os.utime(files[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    decode_cached(files, 8, None, tmp_path / "cache")
    assert len(decoded) == 40

    Image.new("L", (8, 8), 255).save(files[3])  # new content
    images, _ = decode_cached(files, 8, None, tmp_path / "cache")
    assert len(decoded) == 60 and (images[3] == 255).all() and np.array_equal(images[4:], first[4:])


def damage_sidecar_missing(data_file):
    data_file.with_suffix(".json").unlink()


def damage_data_truncated(data_file):
    os.truncate(data_file, data_file.stat().st_size - 1)


def damage_sidecar_garbled(data_file):
    data_file.with_suffix(".json").write_text('{"shape": [20, 1, 8')


@pytest.mark.parametrize("damage", [damage_sidecar_missing, damage_data_truncated, damage_sidecar_garbled])
def test_a_half_written_or_damaged_cache_is_decoded_again(files, tmp_path, decoded, caplog, damage):
    expected, _ = decode_images(files, 8)
    decode_cached(files, 8, None, tmp_path)
    damage(next(tmp_path.glob("decoded-*.u8")))
    images, _ = decode_cached(files, 8, None, tmp_path)
    assert len(decoded) == 60 and "Ignoring the decoded images" in caplog.text
    assert torch.equal(torch.from_numpy(images), expected)
    decode_cached(files, 8, None, tmp_path)
    assert len(decoded) == 60  # rebuilt whole, then trusted


def test_an_interrupted_decode_leaves_no_cache_behind(files, tmp_path):
    def interrupt(done, total):
        if done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode_cached(files, 8, None, tmp_path / "cache", progress=interrupt)
    assert os.listdir(tmp_path / "cache") == []


def test_a_decode_killed_mid_write_leaves_no_lasting_temp_file(files, tmp_path, caplog):
    caplog.set_level(logging.INFO, "labelclean")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    killed, writing = cache_dir / ".decoded-old.u8.x1.tmp", cache_dir / ".decoded-new.u8.x2.tmp"
    someone_elses = cache_dir / ".notes.txt.x3.tmp"  # --cache-dir may be a folder of the user's own
    killed.write_bytes(b"half an image")
    writing.write_bytes(b"still being written by another process")
    someone_elses.write_bytes(b"not ours")
    an_hour_ago = os.stat(killed).st_mtime - 3600
    for old in (killed, someone_elses):
        os.utime(old, (an_hour_ago, an_hour_ago))

    decode_cached(files, 8, None, cache_dir)
    assert not killed.exists() and writing.exists() and someone_elses.exists()
    assert "Removed 1 temp file(s)" in caplog.text


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_the_cache_holds_what_in_memory_decoding_gives(tmp_path, monkeypatch, decoded, channels):
    monkeypatch.setattr(data, "DECODE_CHUNK", 3)  # several chunks, and gray rows shrunk across them
    monkeypatch.setattr(cache, "DECODE_CHUNK", 3)
    for gray_only in (True, False):
        folder = tmp_path / str(gray_only)
        folder.mkdir()
        for i in range(7):
            Image.new("L", (10, 6), i * 30).save(folder / f"{i}.png")
        (folder / "3.png").write_text("not an image")
        if not gray_only:
            Image.new("RGB", (6, 6), (200, 10, 10)).save(folder / "5.png")
        files = sorted(folder.iterdir())
        expected, expected_bad = decode_images(files, 4, channels)
        for _ in range(2):  # decoded, then reused
            images, bad = decode_cached(files, 4, channels, tmp_path / "cache")
            assert torch.equal(torch.from_numpy(images), expected) and bad == expected_bad == [(3, bad[0][1])]
    assert len(decoded) == 4 * 7  # two in-memory decodes and one cached decode per folder


def test_channel_stats_are_the_same_in_any_chunks():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    whole = channel_stats(images)
    np.testing.assert_allclose(channel_stats(images, chunk_values=100), whole)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    np.testing.assert_allclose(whole, (pixels.mean(1), pixels.std(1, unbiased=False)))


def test_the_cli_documents_and_checks_the_options(digits, tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(app, ["fit", "--help"], terminal_width=200).output
    assert "--cache-dir" in help_text and "--max-ram-gb" in help_text
    result = runner.invoke(app, ["fit", str(digits.images_dir), str(digits.labels_csv), "--output",
                                 str(tmp_path / "run"), "--max-ram-gb", "-1"])
    assert result.exit_code == 1 and "--max-ram-gb must be at least 0" in result.stderr
