"""Reading labels CSVs and images: auto-detection, validation messages, every Pillow mode."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelclean.data import (
    decode_image,
    decode_images,
    list_images,
    read_label_table,
    read_labels,
    resolve_inside,
    sort_classes,
)
from labelclean.errors import LabelcleanError


def make_folder(tmp_path: Path, n: int = 4) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(n):
        Image.fromarray(np.full((10, 12), i * 40, np.uint8)).save(images / f"{i}.png")
    return images


def write(tmp_path: Path, text: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_columns_are_detected_and_labels_kept_as_written(tmp_path):
    images = make_folder(tmp_path)
    csv = write(tmp_path, "\ufeffFilename;Class\n0.png;10\n1.png;2\n2.png;10\n3.png;02\n")  # BOM, ';'
    data = read_labels(images, csv)
    assert data.paths == ["0.png", "1.png", "2.png", "3.png"]
    assert data.classes == ["2", "02", "10"] or data.classes == ["02", "2", "10"]
    assert [data.classes[i] for i in data.labels] == ["10", "2", "10", "02"]


def test_named_columns_and_quoted_fields(tmp_path):
    images = make_folder(tmp_path)
    csv = write(tmp_path, 'img_file,note,y_true\n0.png,"a, b",cat\n1.png,"line\nbreak",dog\n')
    data = read_labels(images, csv, path_column="img_file", label_column="y_true")
    assert data.classes == ["cat", "dog"]
    with pytest.raises(LabelcleanError, match="no column 'nope'"):
        read_labels(images, csv, path_column="nope")


def test_class_sorting_is_numeric_only_for_integers():
    assert sort_classes(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_classes(["b", "a", "10"]) == ["10", "a", "b"]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("path,label\n", "no rows"),
    ("foo,bar\n0.png,a\n", "no path column"),
    ("path,bar\n0.png,a\n", "no label column"),
    ("path,label\n0.png,\n1.png,b\n", "row 2 .* empty label"),
    ("path,label\n,a\n1.png,b\n", "row 2 has an empty path"),
    ("path,label\n0.png,a\n0.png,b\n", "more than once .*'0.png' again on row 3"),
    ("path,label\n0.png,a\n1.png,a\n", "only one class"),
    ("path,label\n0.png,a\nmissing.png,b\n", "1 path\\(s\\) do not exist .*'missing.png'.*--skip-missing"),
    ("path,label\n../0.png,a\n1.png,b\n", "row 2: path '../0.png' is refused: it points outside"),
    ("path,label\n/0.png,a\n1.png,b\n", "absolute paths are not allowed"),
])
def test_bad_csv_gets_a_clear_message(tmp_path, text, message):
    images = make_folder(tmp_path)
    with pytest.raises(LabelcleanError, match=message):
        read_labels(images, write(tmp_path, text))


def test_non_utf8_and_missing_files(tmp_path):
    images = make_folder(tmp_path)
    with pytest.raises(LabelcleanError, match="not UTF-8"):
        read_labels(images, write(tmp_path, "path,label\n0.png,caf\xe9\n", encoding="latin-1"))
    with pytest.raises(LabelcleanError, match="does not exist"):
        read_labels(images, tmp_path / "nope.csv")
    with pytest.raises(LabelcleanError, match="Image folder"):
        read_labels(tmp_path / "nothing", write(tmp_path, "path,label\n0.png,a\n"))


def test_skip_missing_drops_and_reports_rows(tmp_path):
    images = make_folder(tmp_path)
    data = read_labels(images, write(tmp_path, "path,label\n0.png,a\nx.png,b\n1.png,b\n"), skip_missing=True)
    assert data.paths == ["0.png", "1.png"]
    assert data.skipped == [("x.png", "file not found")]


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    images = make_folder(tmp_path)
    secret = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(secret)
    (images / "link.png").symlink_to(secret)
    with pytest.raises(ValueError, match="outside"):
        resolve_inside(images, "link.png")


def test_decode_handles_pillow_modes_and_reports_bad_files(tmp_path):
    d = tmp_path
    Image.new("RGB", (20, 10), (255, 0, 0)).save(d / "rgb.jpg")
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(d / "transparent.png")
    Image.new("P", (10, 10), 3).save(d / "palette.gif")
    Image.new("CMYK", (10, 10), (0, 255, 0, 0)).save(d / "cmyk.tiff")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(d / "sixteen.png")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    files = [d / n for n in ["rgb.jpg", "transparent.png", "palette.gif", "cmyk.tiff", "sixteen.png",
                             "empty.png", "text.png"]]
    images, bad = decode_images(files, 8)
    assert images.shape == (5, 3, 8, 8)
    assert [i for i, _ in bad] == [5, 6]
    assert images[0, 0].float().mean() > 200 and images[0, 1].float().mean() < 30  # red stays red
    assert images[1].min() == 255  # transparency composited onto white
    assert images[4].min() == 255  # 16-bit white stays white


def test_decode_picks_grayscale_when_every_image_is_gray(tmp_path):
    files = []
    for i in range(3):
        Image.new("L", (6, 6), i * 50).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    images, _ = decode_images(files, 4)
    assert images.shape == (3, 1, 4, 4)
    rgb, _ = decode_images(files, 4, channels=3)
    assert rgb.shape == (3, 3, 4, 4)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("L", (20, 10), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    image.paste(255, (0, 0, 10, 10))  # left half white
    image.save(tmp_path / "r.jpg", exif=exif)
    out, _ = decode_images([tmp_path / "r.jpg"], 10, channels=1)
    top, bottom = out[0, 0, :5].float().mean(), out[0, 0, 5:].float().mean()
    assert top > 200 and bottom < 50  # the white left half is now on top


@pytest.mark.parametrize("name", ["animated.gif", "pages.tiff"])
def test_multi_frame_files_give_their_first_frame(tmp_path, name):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / name).n_frames == 3
    assert decode_image(tmp_path / name, 4)[:, 0, 0].tolist() == [255, 0, 0]
    images, bad = decode_images([tmp_path / name], 4)
    assert not bad and images.shape == (1, 3, 4, 4)
    assert (images[0, 0] == 255).all() and (images[0, 1:] == 0).all()  # red, not blue or green


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    images, bad = decode_images([tmp_path / "big.png"], 8)
    assert len(images) == 0 and "decompression-bomb" in bad[0][1]


def test_list_images_from_folders_files_and_csv(tmp_path):
    images = make_folder(tmp_path)
    (images / "._0.png").write_bytes(b"\0")  # a macOS resource fork and a hidden folder of thumbnails: skipped
    (images / ".thumbnails").mkdir()
    (images / ".thumbnails" / "0.png").write_bytes((images / "0.png").read_bytes())
    shown, files = list_images([images])
    assert shown == [str(images / f"{i}.png") for i in range(4)]
    csv = write(images, "path\n1.png\n2.png\n", name="new.csv")
    shown, files = list_images([csv])
    assert shown == ["1.png", "2.png"] and files[0] == (images / "1.png").resolve()
    with pytest.raises(LabelcleanError, match="does not exist"):
        list_images([tmp_path / "nope.png"])


def class_folders(tmp_path: Path, layout: dict[str, int]) -> Path:
    """photos/CLASS/i.png, ``layout[CLASS]`` images each."""
    photos = tmp_path / "photos"
    for name, count in layout.items():
        (photos / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((6, 6), 10 * i, np.uint8)).save(photos / name / f"{i}.png")
    return photos


def test_class_folders_give_the_labels_and_ignore_hidden_and_system_files(tmp_path, caplog):
    photos = class_folders(tmp_path, {"10": 2, "2": 1, "cat": 2})
    for junk in [".DS_Store", "Thumbs.db", "2/.DS_Store", "2/._0.png", "cat/desktop.ini"]:
        (photos / junk).write_bytes(b"\0")
    (photos / ".ipynb_checkpoints" / "deep").mkdir(parents=True)  # a hidden folder, nested: still ignored
    (photos / "cat" / "notes.txt").write_text("not an image")
    (photos / "cat" / "3.JPG").write_bytes((photos / "cat" / "0.png").read_bytes())  # suffixes in any case
    data = read_labels(photos)
    assert data.paths == ["10/0.png", "10/1.png", "2/0.png", "cat/0.png", "cat/1.png", "cat/3.JPG"]
    assert data.classes == ["10", "2", "cat"]  # sorted as text (not all are numbers), as from a CSV
    assert [data.classes[i] for i in data.labels] == ["10", "10", "2", "cat", "cat", "cat"]
    assert data.files == [(photos / p).resolve() for p in data.paths]
    assert data.skipped == [("cat/notes.txt", "not an image file (by its suffix)")]
    assert "without an image suffix" in caplog.text


@pytest.mark.parametrize("change, message", [
    (lambda p: (p / "x.png").write_bytes(b""), r"x.png is a file at the top level of .*photos"),
    (lambda p: (p / "c").mkdir(), r"Class folder .*photos/c holds no images"),
    (lambda p: (p / "c").mkdir() or (p / "c" / "read.me").write_text(""), r"Class folder .*photos/c holds no images"),
    (lambda p: (p / "a" / "sub").mkdir(), r"photos/a/sub is a folder inside the class folder 'a'"),
])
def test_bad_class_folder_layouts_are_refused(tmp_path, change, message):
    photos = class_folders(tmp_path, {"a": 2, "b": 2})
    change(photos)
    with pytest.raises(LabelcleanError, match=message):
        read_labels(photos)


def test_label_table_reads_a_csv_or_class_folders_alike(tmp_path):
    photos = class_folders(tmp_path, {"a": 1, "b": 2})
    table, path_col, label_col = read_label_table(photos)
    assert (path_col, label_col) == ("path", "label")
    assert table.to_dict("list") == {"path": ["a/0.png", "b/0.png", "b/1.png"], "label": ["a", "b", "b"]}
    csv = write(tmp_path, "file;y\nb/0.png;a\n")
    table, path_col, label_col = read_label_table(csv)
    assert (path_col, label_col) == ("file", "y") and table.attrs["delimiter"] == ";"
    with pytest.raises(LabelcleanError, match="--path-column names a column of a labels CSV, but none"):
        read_label_table(photos, path_column="file")
