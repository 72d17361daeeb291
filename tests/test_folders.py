"""Writing a cleaned dataset as class folders: links, names, refusals, and nothing half-written."""

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from labelclean import folders
from labelclean.data import read_labels
from labelclean.errors import LabelcleanError
from labelclean.folders import write_class_folders


def originals(tmp_path: Path) -> Path:
    """photos/cat/1.png, photos/cat/2.png, photos/dog/1.png, each holding its own path as bytes."""
    photos = tmp_path / "photos"
    for path in ["cat/1.png", "cat/2.png", "dog/1.png"]:
        (photos / path).parent.mkdir(parents=True, exist_ok=True)
        (photos / path).write_bytes(path.encode())
    return photos


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def table(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["file", "y"])


def write(photos: Path, target: Path, rows: list[tuple[str, str]]) -> str:
    return write_class_folders(table(rows), photos, target, path_column="file", label_column="y")


def test_one_folder_per_label_of_hard_links_and_the_originals_untouched(tmp_path):
    photos = originals(tmp_path)
    before = snapshot(photos)
    # cat/1.png relabeled to dog meets dog/1.png: both keep their whole path as the name
    placed = write(photos, tmp_path / "clean", [("cat/1.png", "dog"), (" cat/2.png ", "cat"), ("dog/1.png", "dog")])
    assert placed == "hard links"
    assert snapshot(tmp_path / "clean") == {"cat/2.png": b"cat/2.png", "dog/cat__1.png": b"cat/1.png",
                                            "dog/dog__1.png": b"dog/1.png"}
    assert (tmp_path / "clean" / "cat" / "2.png").samefile(photos / "cat" / "2.png")
    assert snapshot(photos) == before
    assert [e.name for e in tmp_path.iterdir() if e.name.startswith(".")] == []  # no temporary folder left
    again = read_labels(tmp_path / "clean")  # what fit reads back
    assert again.paths == ["cat/2.png", "dog/cat__1.png", "dog/dog__1.png"] and again.classes == ["cat", "dog"]


def test_copies_where_the_file_system_cannot_link(tmp_path, monkeypatch):
    photos = originals(tmp_path)

    def no_links(source, destination):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assert write(photos, tmp_path / "clean", [("cat/1.png", "cat"), ("dog/1.png", "dog")]) == "copies"
    copy = tmp_path / "clean" / "cat" / "1.png"
    assert copy.read_bytes() == b"cat/1.png" and not copy.samefile(photos / "cat" / "1.png")


def test_an_empty_target_folder_is_used_and_a_full_one_refused(tmp_path):
    photos = originals(tmp_path)
    (tmp_path / "empty").mkdir()
    write(photos, tmp_path / "empty", [("cat/1.png", "cat")])
    assert snapshot(tmp_path / "empty") == {"cat/1.png": b"cat/1.png"}
    with pytest.raises(LabelcleanError, match="already exists and is not an empty folder"):
        write(photos, tmp_path / "empty", [("cat/1.png", "cat")])
    with pytest.raises(LabelcleanError, match="is inside the class folders of .*photos, where it would read as"):
        write(photos, photos / "cleaned", [("cat/1.png", "cat")])
    write_class_folders(table([("cat/1.png", "cat")]), photos, photos / "cleaned", path_column="file",
                        label_column="y", inside_images=True)  # images listed in a CSV: any folder will do
    assert snapshot(photos / "cleaned") == {"cat/1.png": b"cat/1.png"}
    assert snapshot(tmp_path / "empty") == {"cat/1.png": b"cat/1.png"}


@pytest.mark.parametrize("label, why", [("a/b", "it contains '/'"), (".hidden", "it is empty or starts with '.'"),
                                        ("..", "it is empty or starts with '.'")])
def test_a_label_that_cannot_be_a_folder_name_is_refused(tmp_path, label, why):
    photos = originals(tmp_path)
    with pytest.raises(LabelcleanError, match=re.escape(f"The label '{label}' cannot be a folder name ({why})")):
        write(photos, tmp_path / "clean", [("cat/1.png", label)])
    assert not (tmp_path / "clean").exists()


def test_a_failure_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    photos = originals(tmp_path)
    made = []

    def link_once(source, destination):
        if made:
            raise KeyboardInterrupt  # as if interrupted after the first image
        made.append(destination)
        os.symlink(source, destination)

    monkeypatch.setattr(folders.os, "link", link_once)
    with pytest.raises(KeyboardInterrupt):
        write(photos, tmp_path / "clean", [("cat/1.png", "cat"), ("dog/1.png", "dog")])
    assert made and sorted(e.name for e in tmp_path.iterdir()) == ["photos"]


def test_a_missing_image_is_an_error_unless_the_fit_skipped_missing_ones(tmp_path, caplog):
    photos = originals(tmp_path)
    rows = [("cat/1.png", "cat"), ("gone.png", "cat"), ("cat/1.png", "dog")]  # the repeated path keeps its first row
    with pytest.raises(LabelcleanError, match=r"1 of 2 images do not exist under .*photos \(e.g. 'gone.png'\)"):
        write(photos, tmp_path / "clean", rows)
    assert sorted(e.name for e in tmp_path.iterdir()) == ["photos"]
    write_class_folders(table(rows), photos, tmp_path / "clean", path_column="file", label_column="y",
                        skip_missing=True)
    assert snapshot(tmp_path / "clean") == {"cat/1.png": b"cat/1.png"}
    assert "Left out 1 image(s) that do not exist" in caplog.text
