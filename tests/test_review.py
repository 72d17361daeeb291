"""Annotation review: Label Studio export, the HTML report, and applying reviewed labels back."""

import base64
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.mixture import GaussianMixture
from typer.testing import CliRunner

import labelclean
from labelclean import cli
from labelclean.cli import app
from labelclean.export import unpredicted_classes
from labelclean.report import THUMB_SIDE, gmm_components, render_report, shown_suspects, thumbnail_uri, write_report
from labelclean.review import image_urls, label_studio_config

runner = CliRunner()
NASTY = '<script>alert("x")</script> & co'


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_label_studio_export_follows_the_documented_import_format(tiny_run, tmp_path):
    config_file = tmp_path / "config.xml"
    result = invoke("export", tiny_run.directory, "--format", "label-studio", "--only-noisy", "--sort", "clean_prob",
                    "--ls-config", config_file)
    assert result.exit_code == 0, result.output
    tasks = json.loads(result.stdout)  # stdout carries the JSON and nothing else
    table = tiny_run.export(0.5, only_noisy=True, sort="clean_prob")
    assert len(tasks) == len(table) > 0

    config = ET.fromstring(config_file.read_text())
    assert [e.tag for e in config] == ["Header", "Choices", "Image"]  # choices above the image: always in view
    image, choices = config.find("Image"), config.find("Choices")
    assert [c.get("value") for c in choices.findall("Choice")] == tiny_run.classes
    assert choices.get("toName") == image.get("name") and image.get("value") == f"${image.get('name')}"
    for task, row in zip(tasks, table.itertuples()):
        assert set(task) == {"data", "predictions"}
        data = task["data"]
        assert data[image.get("name")] == f"/data/local-files/?d=images/{row.path}"  # document root: images/..
        assert (data["path"], data["given_label"], data["suggested_label"]) == (row.path, row.given_label,
                                                                                 row.suggested_label)
        assert data["summary"] == (f"given: {row.given_label}  →  suggested: {row.suggested_label}  "
                                   f"(clean_prob {row.clean_prob:.3g})")  # the header above the image
        (prediction,) = task["predictions"]
        assert prediction["score"] == float(f"{row.suggested_confidence:.6g}")
        assert data["clean_prob"] == float(f"{row.clean_prob:.6g}")
        (result_,) = prediction["result"]
        assert result_["type"] == "choices"
        assert (result_["from_name"], result_["to_name"]) == (choices.get("name"), image.get("name"))
        assert result_["value"]["choices"] == [row.suggested_label]  # pre-selected: the export's suggestion
        assert result_["value"]["choices"][0] in tiny_run.classes
    assert [t["data"]["clean_prob"] for t in tasks] == sorted(t["data"]["clean_prob"] for t in tasks)

    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT" in result.stderr  # how to serve them: tested below


def test_label_studio_image_urls_follow_the_document_root_or_the_prefix(tiny_run, digits):
    images = digits.images_dir.resolve()
    default = invoke("export", tiny_run.directory, "--format", "label-studio")
    assert default.exit_code == 0, default.output
    first = tiny_run.export(0.5)["path"][0]
    assert json.loads(default.stdout)[0]["data"]["image"] == f"/data/local-files/?d=images/{first}"
    assert default.stderr.splitlines() == [
        "Label Studio shows these images from a Local Files storage. Start it with:",
        (f"  LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={images.parent} "
         "label-studio start"),
        "In the project: Settings → Cloud Storage → Add Source Storage → Local Files, absolute local path:",
        f"  {images}",
        "then Save (not Save & Sync: the tasks come from the tasks file) and Import the tasks file."]

    higher = invoke("export", tiny_run.directory, "--format", "label-studio", "--document-root", images.parent.parent)
    assert higher.exit_code == 0, higher.output
    assert json.loads(higher.stdout)[0]["data"]["image"] == f"/data/local-files/?d={images.parent.name}/images/{first}"
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={images.parent.parent} " in higher.stderr

    prefixed = invoke("export", tiny_run.directory, "--format", "label-studio", "--image-url-prefix",
                      "https://bucket/imgs/")
    assert prefixed.exit_code == 0 and prefixed.stderr == ""  # nothing to set up in Label Studio
    assert [t["data"]["image"] for t in json.loads(prefixed.stdout)] == [
        "https://bucket/imgs/" + p for p in tiny_run.export(0.5)["path"]]

    for bad_root in (images, images / "sub", images.parent / "other"):
        refused = invoke("export", tiny_run.directory, "--format", "label-studio", "--document-root", bad_root)
        assert refused.exit_code == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"error: The document root {bad_root} must be a folder above the images")
    both = invoke("export", tiny_run.directory, "--format", "label-studio", "--document-root", images.parent,
                  "--image-url-prefix", "https://bucket/imgs/")
    assert both.exit_code == 1 and "give one of them" in both.stderr


def test_image_urls_quote_the_folder_relative_to_the_document_root(tmp_path):
    root = tmp_path / "my root"
    prefix, setup = image_urls(root / "my data" / "img#1", document_root=root)
    assert prefix == "/data/local-files/?d=my%20data/img%231/"
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT='{root}' label-studio start" in setup  # a shell line
    assert f"\n  {root}/my data/img#1\n" in setup  # typed into a form: as it is


def test_label_studio_tasks_of_the_errors_pre_select_a_label_that_changes_each_row(tiny_run):
    """One task per is_error row, each pre-selecting its suggested label, never the given label it is flagged
    for: Submit on the pre-selected choice fixes the error (DivideMix's refined label would keep some)."""
    tasks = json.loads(invoke("export", tiny_run.directory, "--format", "label-studio", "--only-errors").stdout)
    errors = tiny_run.export(0.5, only_errors=True)
    assert len(errors) > 0 and [t["data"]["path"] for t in tasks] == errors["path"].tolist()
    chosen = [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks]
    assert chosen == [[label] for label in errors["suggested_label"]]
    assert all(t["data"]["given_label"] not in c for t, c in zip(tasks, chosen))
    assert "refined_label" not in json.dumps(tasks)  # one suggestion: the other label is not offered


def test_label_studio_config_escapes_class_names():
    config = ET.fromstring(label_studio_config(["cat", NASTY]))
    assert [c.get("value") for c in config.iter("Choice")] == ["cat", NASTY]


def test_jsonl_on_stdout_is_only_data(tiny_run):
    result = invoke("export", tiny_run.directory, "--format", "jsonl", "--only-noisy")
    assert result.exit_code == 0, result.output
    records = pd.read_json(io.StringIO(result.stdout), lines=True, dtype={"path": str, "given_label": str,
                                                                          "refined_label": str, "predicted_label": str,
                                                                          "suggested_label": str})
    expected = tiny_run.export(only_noisy=True)
    assert 0 < len(expected) < 300
    pd.testing.assert_frame_equal(records, expected, check_exact=False, atol=1e-6, check_dtype=False)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_exports_write_probabilities_to_six_significant_digits(tiny_run, fmt):
    exact = tiny_run.export(0.5)
    text = invoke("export", tiny_run.directory, "--format", fmt).stdout
    if fmt == "csv":
        written = pd.read_csv(io.StringIO(text), dtype=str)
    else:  # the numbers as written
        written = pd.DataFrame([json.loads(line, parse_float=str) for line in text.splitlines()])
    for column in [c for c in exact.columns if exact[c].dtype.kind == "f"]:
        np.testing.assert_allclose(written[column].astype(float), exact[column], rtol=5e-6, atol=0)
        digits = written[column].str.split("e").str[0].str.replace(".", "").str.lstrip("0").str.len()
        assert digits.max() == 6, (column, written[column][digits.idxmax()])  # full precision writes 16-17


@pytest.fixture
def nasty_run(tiny_run, tmp_path):
    """A copy of the tiny run whose class '3' is named like an injection and one path is hostile."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.directory, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["classes"] = [NASTY if c == "3" else c for c in config["classes"]]
    (run_dir / "config.json").write_text(json.dumps(config))
    samples = pd.read_csv(run_dir / "samples.csv", dtype=str, keep_default_na=False)
    samples["given_label"] = samples["given_label"].replace("3", NASTY)
    samples.loc[0, "path"] = '"><img src=x onerror=alert(1)>.png'
    for net in ("net1", "net2"):  # below 1 everywhere: at --threshold 1 every sample is a suspect
        samples[f"clean_prob_{net}"] = samples[f"clean_prob_{net}"].astype(float).clip(upper=0.99)
    samples.to_csv(run_dir / "samples.csv", index=False)
    return labelclean.Run(run_dir)


def test_report_is_self_contained_and_escapes_labels_and_paths(nasty_run):
    page = render_report(nasty_run, threshold=1.0, suspects="noisy")  # every sample is a suspect
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing is fetched: images inline, links in-page
    assert page.count('<img src="data:image/') == 299  # the hostile path has no file: a placeholder
    assert page.count("<svg") == 5  # two loss histograms, three training curves
    assert len(page.encode()) < 2_000_000


def test_report_command_writes_a_file_and_caps_the_suspects(tiny_run, tmp_path):
    out = tmp_path / "report.html"
    result = invoke("report", tiny_run.directory, "-o", out, "--threshold", "1", "--max-items", "7")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and str(out) in result.stderr.replace("\n", "")
    page = out.read_text()
    errors = int(tiny_run.export(1.0)["is_error"].sum())
    assert page.count("<figure>") == 7 and f"Thumbnails for 7 of the {errors:,} suspects" in page
    noisy = invoke("report", tiny_run.directory, "-o", out, "--threshold", "1", "--suspects", "noisy")
    assert noisy.exit_code == 0, noisy.output
    flagged = int(tiny_run.export(1.0)["is_noisy"].sum())
    assert flagged > errors and out.read_text().count("<figure>") == flagged


def figures(page: str) -> list[tuple[str, str, str, float]]:
    """(section id, path, given → suggested caption, clean_prob) of every suspect card, in page order."""
    cards = []
    for section, body in re.findall(r'<section id="([^"]+)">(.*?)</section>', page):
        for path, labels, clean in re.findall(r'class=path title="([^"]*)">.*?<div>(.*?)</div><div>clean ([-+0-9.e]+)',
                                              body):
            cards.append((section, path, re.sub(r"<[^>]+>", "", labels), float(clean)))
    return cards


def test_report_shows_the_error_rows_by_class_most_suspicious_first_with_their_suggestion(tiny_run):
    page = render_report(tiny_run)
    errors = tiny_run.export(0.5, only_errors=True)
    cards = figures(page)
    assert sorted(path for _, path, _, _ in cards) == sorted(errors["path"])  # the rows the review acts on
    by_path = errors.set_index("path")
    for section, path, labels, clean in cards:
        row = by_path.loc[path]
        assert section == f"suspects-{tiny_run.classes.index(row.given_label)}"
        assert labels == f"{row.given_label} → {row.suggested_label}"
        assert clean == pytest.approx(row.clean_prob, rel=5e-3)  # as shown, to 3 significant digits
    for section in {s for s, *_ in cards}:  # worst first within each class
        cleans = [c for s, _, _, c in cards if s == section]
        assert cleans == sorted(cleans)
    counts = errors["given_label"].value_counts()  # each class's count links to its section
    for name, count in counts.items():
        anchor = f"suspects-{tiny_run.classes.index(name)}"
        assert f'<a href="#{anchor}">{count:,}</a>' in page and f'<section id="{anchor}">' in page
    crosstab = re.search(r"<h2>Given × suggested</h2>.*?</table>", page).group(0)
    cells = [int(n) for n in re.findall(r"<span class=hot[^>]*>(\d+)</span>", crosstab)]
    assert sum(cells) == len(errors) and "class=diag" not in crosstab  # an error's suggestion changes its label


def test_summary_and_report_warn_of_a_class_the_networks_never_predict(tiny_run, tmp_path, capsys):
    """The tiny run's most predicted class given no probability: it is predicted for no image, and the
    summary, the report's warning and its per-class table say so, with the images labeled so."""
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    before = tiny_run.export()
    name = before["predicted_label"].value_counts().index[0]
    k, labeled = tiny_run.classes.index(name), int((before["given_label"] == name).sum())
    probs = np.load(run_dir / "probs.npy")
    probs[:, k] = 0
    np.save(run_dir / "probs.npy", probs / probs.sum(1, keepdims=True))
    run = labelclean.Run(run_dir)
    assert name in unpredicted_classes(run.export()) and name not in unpredicted_classes(before)
    cli.summarize(run)
    err = capsys.readouterr().err
    page = render_report(run)
    for text in (err, page):
        assert re.search(rf"The networks predict no image as (.+, )?{name} \({labeled:,} image", text)
    row = re.search(rf"<tr><td class=l>{name}</td><td>([\d,]+)</td><td>([\d,]+)</td>", page)
    assert row.groups() == (f"{labeled:,}", "0")  # given to so many, predicted for none


def test_report_noise_card_shows_the_fits_estimate_beside_the_flagged_share(tiny_run, tmp_path):
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["auto"]["noise"]["rate"] = 0.1234
    (run_dir / "config.json").write_text(json.dumps(config))
    page = render_report(labelclean.Run(run_dir))
    flagged = tiny_run.export(0.5)["is_noisy"].mean()
    card = re.search(r'<div class="card">fit\'s noise estimate<b>([^<]+)</b><small>([^<]+)</small>', page)
    assert card.groups() == ("12.3%", f"after warm-up · flagged: {flagged:.1%} (clean_prob &lt; 0.5)")
    del config["auto"]["noise"]  # as MLNT: the last epoch's estimate
    (run_dir / "config.json").write_text(json.dumps(config))
    last = tiny_run.history[-1]
    assert f"fit's noise estimate<b>{last['noise_estimate']:.1%}</b><small>at epoch {last['epoch']} · " in \
        render_report(labelclean.Run(run_dir))
    (run_dir / "history.jsonl").write_text("")
    assert "fit's noise estimate<b>n/a</b><small>none in this run · " in render_report(labelclean.Run(run_dir))


def test_shown_suspects_take_each_class_in_turn_up_to_the_cap():
    rows = pd.DataFrame({"given_label": list("aaaaabbc"), "clean_prob": [.01, .02, .03, .04, .05, .3, .4, .5]})
    assert shown_suspects(rows, 4)["clean_prob"].tolist() == [.01, .02, .3, .5]  # a, a (2nd round), b, c
    assert shown_suspects(rows, 2)["clean_prob"].tolist() == [.01, .3]  # the 1st round, most suspicious first
    assert shown_suspects(rows, 0).empty and len(shown_suspects(rows, 100)) == 8


def fake_run(tiny_run, tmp_path, n: int, error_share: float, seed: int = 0) -> labelclean.Run:
    """A copy of the tiny run's config and history with ``n`` samples whose images are hard links of one
    640×480 noise photo (noise: the largest JPEG thumbnail), ``error_share`` of them flagged with another
    predicted class."""
    rng = np.random.default_rng(seed)
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(images / "photo.jpg", quality=95)
    paths = [f"{k:05d}.jpg" for k in range(n)]
    for path in paths:
        (images / path).hardlink_to(images / "photo.jpg")
    given = rng.integers(0, 10, n)
    wrong = rng.random(n) < error_share
    predicted = np.where(wrong, (given + rng.integers(1, 10, n)) % 10, given)
    probs = np.full((n, 10), 0.02, dtype=np.float32)
    probs[np.arange(n), predicted] = 0.82
    clean = np.where(wrong, rng.uniform(0, 0.5, n), rng.uniform(0.5, 1, n))
    pd.DataFrame({"path": paths, "given_label": given.astype(str), "clean_prob_net1": clean,
                  "clean_prob_net2": clean, "loss_net1": 1 - clean, "loss_net2": 1 - clean}).to_csv(
        run_dir / "samples.csv", index=False)
    np.save(run_dir / "probs.npy", probs)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["images_dir"] = str(images)
    (run_dir / "config.json").write_text(json.dumps(config))
    return labelclean.Run(run_dir)


def test_report_of_20000_images_stays_one_file_under_10_mb(tiny_run, tmp_path):
    run = fake_run(tiny_run, tmp_path, 20_000, error_share=0.4)
    size = write_report(run, tmp_path / "report.html")
    print(f"report of 20,000 images: {size:,} bytes")
    page = (tmp_path / "report.html").read_text()
    assert size < 10_000_000, size
    assert page.count('<img src="data:image/jpeg;base64,') == 1000  # the default cap, all thumbnails inline
    assert len(re.findall(r'<section id="suspects-\d+">', page)) == 10  # every class reachable
    assert "Thumbnails for 1,000 of the 8," in page


def test_thumbnails_stay_small_so_1000_suspects_fit_in_5_mb(tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photo)
    uri = thumbnail_uri(photo)
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 4_000
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
        assert max(thumb.size) == THUMB_SIDE


def test_gmm_components_are_recovered_from_the_posteriors():
    rng = np.random.default_rng(0)
    loss = np.r_[rng.normal(0.2, 0.05, 700), rng.normal(0.7, 0.1, 300)]
    gmm = GaussianMixture(2, random_state=0).fit(loss[:, None])
    clean = gmm.means_.argmin()
    (weight, mean, std), (_, noisy_mean, _) = gmm_components(loss, gmm.predict_proba(loss[:, None])[:, clean])
    assert np.allclose([weight, mean, std], [gmm.weights_[clean], gmm.means_[clean, 0],
                                             np.sqrt(gmm.covariances_[clean].item())], atol=1e-2)
    assert noisy_mean == pytest.approx(gmm.means_[1 - clean, 0], abs=1e-2)


@pytest.fixture
def labels_with_extras(digits, tmp_path):
    """The digits labels as a semicolon CSV with extra columns a cleaner must not touch."""
    labels = pd.read_csv(digits.labels_csv, dtype=str)
    labels["note"] = ["007", "", "NA"] * 100
    labels["source"] = "scan; batch 1"
    path = tmp_path / "labels.csv"
    labels[["note", "path", "label", "source"]].to_csv(path, sep=";", index=False)
    return path


def simulated_review(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accept the three worst suggestions that change a label, reject three others; the rest unseen."""
    changing = table[table["suggested_label"] != table["given_label"]].sort_values("clean_prob").head(3)
    rejected = table.drop(changing.index).sort_values("clean_prob").head(3)
    return changing, rejected


def test_reviewed_csv_round_trip_applies_exactly_the_accepted_changes(tiny_run, labels_with_extras, tmp_path):
    table = pd.read_csv(io.StringIO(invoke("export", tiny_run.directory, "--threshold", "1").stdout), dtype=str)
    accepted, rejected = simulated_review(table)
    assert len(accepted) > 0
    table["accepted_label"] = ""
    table.loc[accepted.index, "accepted_label"] = accepted["suggested_label"]
    table.loc[rejected.index, "accepted_label"] = rejected["given_label"]
    table.to_csv(tmp_path / "reviewed.csv", index=False)

    out = tmp_path / "cleaned.csv"
    result = invoke("apply", tmp_path / "reviewed.csv", labels_with_extras, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"Relabeled {len(accepted)} and dropped 0" in result.stderr

    original = pd.read_csv(labels_with_extras, sep=";", dtype=str, keep_default_na=False)
    cleaned = pd.read_csv(out, sep=";", dtype=str, keep_default_na=False)
    expected = original.copy()
    expected.loc[expected["path"].isin(accepted["path"]), "label"] = expected["path"].map(
        accepted.set_index("path")["suggested_label"])
    pd.testing.assert_frame_equal(cleaned, expected)
    log = pd.read_csv(tmp_path / "cleaned.changes.csv", dtype=str)
    assert sorted(log["path"]) == sorted(accepted["path"]) and set(log["action"]) == {"relabel"}

    dropped = invoke("apply", tmp_path / "reviewed.csv", labels_with_extras, "-o", out, "--drop-rejected")
    assert dropped.exit_code == 0, dropped.output
    pd.testing.assert_frame_equal(pd.read_csv(out, sep=";", dtype=str, keep_default_na=False),
                                  original[~original["path"].isin(accepted["path"])].reset_index(drop=True))


def test_label_studio_round_trip_uses_the_latest_submitted_annotation(tiny_run, digits, tmp_path):
    tasks = json.loads(invoke("export", tiny_run.directory, "--format", "label-studio").stdout)
    table = tiny_run.export(1.0)
    accepted, rejected = simulated_review(table)

    def annotate(task, label, **extra):
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        task.setdefault("annotations", []).append({"result": result, "was_cancelled": False, **extra})

    by_path = {t["data"]["path"]: t for t in tasks}
    for row in accepted.itertuples():
        annotate(by_path[row.path], row.given_label, updated_at="2024-01-01T00:00:00Z")  # changed their mind
        annotate(by_path[row.path], row.suggested_label, updated_at="2024-01-02T00:00:00Z")
    for row in rejected.itertuples():
        annotate(by_path[row.path], row.given_label)
        annotate(by_path[row.path], row.suggested_label, was_cancelled=True)  # skipped: not a decision
    (tmp_path / "export.json").write_text(json.dumps(tasks))

    result = invoke("apply", tmp_path / "export.json", digits.labels_csv, "-o", tmp_path / "cleaned.csv")
    assert result.exit_code == 0, result.output
    cleaned = pd.read_csv(tmp_path / "cleaned.csv", dtype=str).set_index("path")["label"]
    original = pd.read_csv(digits.labels_csv, dtype=str).set_index("path")["label"]
    changed = cleaned[cleaned != original]
    assert changed.to_dict() == accepted.set_index("path")["suggested_label"].to_dict()


def test_export_as_labels_relabels_or_drops_the_error_rows_with_their_suggested_label(tiny_run, digits, tmp_path):
    table = tiny_run.export(0.5)
    to_change = table[table["is_error"]]
    assert len(to_change) and (to_change["suggested_label"] != to_change["given_label"]).all()
    assert (table["is_noisy"] & ~table["is_error"]).any()  # flagged rows the networks agree with stay as given
    relabeled = invoke("export", tiny_run.directory, "--as-labels", "-o", tmp_path / "relabeled.csv")
    assert relabeled.exit_code == 0, relabeled.output
    cleaned = pd.read_csv(tmp_path / "relabeled.csv", dtype=str)
    assert (cleaned.set_index("path")["label"][to_change["path"]] == to_change["suggested_label"].to_numpy()).all()
    assert (cleaned["label"] != pd.read_csv(digits.labels_csv, dtype=str)["label"]).sum() == len(to_change)

    dropped = invoke("export", tiny_run.directory, "--as-labels", "--action", "drop")
    assert dropped.exit_code == 0, dropped.output
    kept = pd.read_csv(io.StringIO(dropped.stdout), dtype=str)
    assert len(kept) == 300 - len(to_change) and not kept["path"].isin(to_change["path"]).any()


def test_review_errors_are_one_line_with_exit_code_1(tiny_run, digits, tmp_path):
    (tmp_path / "typo.csv").write_text("path,accepted_label\n0000.png,nine\n")
    (tmp_path / "fine.csv").write_text("path,accepted_label\n0000.png,1\n")
    (tmp_path / "stranger.csv").write_text("path,accepted_label\nelsewhere.png,1\n")
    (tmp_path / "no_column.csv").write_text("path,refined_label\n0000.png,1\n")
    (tmp_path / "no_path.json").write_text(json.dumps([{"data": {"image": "x.png"}}]))
    cases = [
        (["apply", tmp_path / "typo.csv", digits.labels_csv, "-o", tmp_path / "c.csv"], "never uses .*'nine'"),
        (["apply", tmp_path / "stranger.csv", digits.labels_csv, "-o", tmp_path / "c.csv"], "not in .*elsewhere"),
        (["apply", tmp_path / "no_column.csv", digits.labels_csv, "-o", tmp_path / "c.csv"], "no 'accepted_label'"),
        (["apply", tmp_path / "no_path.json", digits.labels_csv, "-o", tmp_path / "c.csv"], "has no data.path"),
        (["apply", tmp_path / "typo.csv", digits.labels_csv, "-o", digits.labels_csv], "overwrite the original"),
        (["export", tiny_run.directory, "--as-labels", "--format", "jsonl"], "drop --format"),
        (["report", tiny_run.directory, "--max-items", "-1"], "--max-items"),
        (["report", tiny_run.directory, "-o", tmp_path / "c.pdf"], "the report is an HTML page; name the file .html"),
        (["report", tiny_run.directory, "--suspects", "all"], "--suspects must be errors or noisy"),
        (["apply", tmp_path / "fine.csv", digits.labels_csv, "-o", tmp_path / "c.xlsx"], "name the file .csv or"),
        (["export", tiny_run.directory, "--as-labels", "-o", tmp_path / "c.json"], "name the file .csv or"),
        (["export", tiny_run.directory, "-o", tmp_path / "c.xlsx"], "cannot write '.xlsx' files"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == "" and "Traceback" not in result.output
        assert re.search(message, result.stderr.replace("\n", " ")), (args, result.stderr)
    assert not any((tmp_path / f"c.{suffix}").exists() for suffix in ("csv", "pdf", "xlsx", "json"))
