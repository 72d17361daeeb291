"""The review table (labelclean/export.py): every column against its definition, on a run whose
numbers are written by hand and on a real fit recomputed from its own files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from typer.testing import CliRunner

import labelclean
from labelclean.auto import class_quota, quota_clean_prob
from labelclean.cli import app
from labelclean.errors import LabelcleanError
from labelclean.evaluation import clean_probability, normalized_loss
from labelclean.export import COLUMNS, format_from_suffix, select_rows, unpredicted_classes, unpredicted_hint

# Five samples of a 10-class run: (given, clean_prob of net 1 and net 2, the ensemble's softmax as {class: p}).
HAND = [
    (3, (0.9, 0.7), {5: 0.6, 3: 0.4}),  # w 0.8: clean; the networks say 5, the refined label stays 3
    (1, (0.1, 0.3), {7: 0.9, 1: 0.1}),  # w 0.2: flagged, and the networks say another class: an error
    (2, (0.4, 0.2), {2: 0.7, 0: 0.3}),  # w 0.3: flagged, but the networks agree with the label
    (4, (0.9, 0.1), {9: 0.55, 4: 0.45}),  # w 0.5 (the nets disagree): not below 0.5; below 0.6
    (6, (0.4, 0.4), {8: 0.5, 6: 0.3, 0: 0.2}),  # an error whose refined label is still the given one
]
# What each column must be, worked out by hand from w·onehot(given) + (1−w)·p.
EXPECTED = pd.DataFrame({
    "path": ["a.png", "b.png", "c.png", "d.png", "e.png"],
    "given_label": ["3", "1", "2", "4", "6"],
    "suggested_label": ["3", "7", "2", "4", "8"],  # the networks' prediction where is_error, not the refined label
    "suggested_confidence": [0.4, 0.9, 0.7, 0.45, 0.5],  # the mean softmax at the suggested label
    "is_error": [False, True, False, False, True],
    "clean_prob": [0.8, 0.2, 0.3, 0.5, 0.4],
    "is_noisy": [False, True, True, False, True],
    "predicted_label": ["5", "7", "2", "9", "8"],
    "predicted_confidence": [0.6, 0.9, 0.7, 0.55, 0.5],
    "clean_prob_net1": [0.9, 0.1, 0.4, 0.9, 0.4],
    "clean_prob_net2": [0.7, 0.3, 0.2, 0.1, 0.4],
    "refined_label": ["3", "7", "2", "4", "6"],
    "refined_confidence": [0.8 + 0.2 * 0.4, 0.8 * 0.9, 0.3 + 0.7 * 0.7, 0.5 + 0.5 * 0.45, 0.4 + 0.6 * 0.3],
})


@pytest.fixture
def hand_run(tiny_run, tmp_path) -> labelclean.Run:
    """A copy of the tiny run whose samples.csv and probs.npy hold the HAND numbers."""
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    probs = np.zeros((len(HAND), 10), dtype=np.float32)
    for row, (_, _, p) in enumerate(HAND):
        for k, value in p.items():
            probs[row, k] = value
    np.save(run_dir / "probs.npy", probs)
    pd.DataFrame({
        "path": EXPECTED["path"], "given_label": EXPECTED["given_label"],
        "clean_prob_net1": [c[0] for _, c, _ in HAND], "clean_prob_net2": [c[1] for _, c, _ in HAND],
        "loss_net1": 1.0, "loss_net2": 1.0,
    }).to_csv(run_dir / "samples.csv", index=False)
    return labelclean.Run(run_dir)


def test_every_column_follows_its_definition_on_hand_worked_numbers(hand_run):
    table = hand_run.export()
    assert list(table.columns) == COLUMNS
    pd.testing.assert_frame_equal(table, EXPECTED, check_exact=False, atol=1e-6, check_dtype=False)


def test_the_threshold_moves_is_noisy_is_error_and_the_suggestion_only(hand_run):
    table = hand_run.export(threshold=0.6)
    expected = EXPECTED.assign(is_noisy=[False, True, True, True, True], is_error=[False, True, False, True, True],
                               suggested_label=["3", "7", "2", "9", "8"],
                               suggested_confidence=[0.4, 0.9, 0.7, 0.55, 0.5])
    pd.testing.assert_frame_equal(table, expected, check_exact=False, atol=1e-6, check_dtype=False)
    assert not hand_run.export(threshold=0.0)["is_noisy"].any()  # nothing is below 0
    assert hand_run.export(threshold=1.0)["is_noisy"].all()


def test_rows_are_selected_and_sorted_as_asked(hand_run):
    assert hand_run.export(only_noisy=True)["path"].tolist() == ["b.png", "c.png", "e.png"]
    assert hand_run.export(only_errors=True)["path"].tolist() == ["b.png", "e.png"]
    assert hand_run.export(sort="clean_prob")["path"].tolist() == ["b.png", "c.png", "e.png", "d.png", "a.png"]
    assert hand_run.export(sort="refined_confidence")["path"].tolist() == ["e.png", "b.png", "d.png", "c.png", "a.png"]
    by_prediction = hand_run.export(sort="predicted_confidence")
    assert by_prediction["path"].tolist() == ["e.png", "d.png", "a.png", "c.png", "b.png"]
    sorted_noisy = hand_run.export(threshold=0.6, only_noisy=True, sort="clean_prob")
    assert sorted_noisy["path"].tolist() == ["b.png", "c.png", "e.png", "d.png"]
    assert sorted_noisy.index.tolist() == [0, 1, 2, 3]
    with pytest.raises(LabelcleanError, match="'sort' option must be one of"):
        select_rows(EXPECTED, sort="path")
    with pytest.raises(LabelcleanError, match=r"'threshold' option must be in \[0, 1\]. Got -0.1"):
        hand_run.export(threshold=-0.1)


def recomputed(run: labelclean.Run, threshold: float) -> pd.DataFrame:
    """The review table rebuilt with numpy from the run's samples.csv, probs.npy and config.json."""
    samples = pd.read_csv(run.directory / "samples.csv", dtype={"path": str, "given_label": str})
    probs = np.load(run.directory / "probs.npy")
    classes = json.loads((run.directory / "config.json").read_text())["classes"]
    given = np.array([classes.index(label) for label in samples["given_label"]])
    w = (samples["clean_prob_net1"].to_numpy() + samples["clean_prob_net2"].to_numpy()) / 2
    refined = w[:, None] * np.eye(len(classes))[given] + (1 - w[:, None]) * probs
    predicted = probs.argmax(1)
    error = (w < threshold) & (predicted != given)
    names = np.array(classes, dtype=object)
    suggested = np.where(error, predicted, given)
    return pd.DataFrame({
        "path": samples["path"], "given_label": samples["given_label"], "suggested_label": names[suggested],
        "suggested_confidence": probs[np.arange(len(given)), suggested], "is_error": error, "clean_prob": w,
        "is_noisy": w < threshold, "predicted_label": names[predicted], "predicted_confidence": probs.max(1),
        "clean_prob_net1": samples["clean_prob_net1"], "clean_prob_net2": samples["clean_prob_net2"],
        "refined_label": names[refined.argmax(1)], "refined_confidence": refined.max(1),
    })


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_a_fitted_run_exports_what_its_files_define(tiny_run, threshold):
    table = tiny_run.export(threshold=threshold)
    pd.testing.assert_frame_equal(table, recomputed(tiny_run, threshold), check_exact=False, atol=1e-6,
                                  check_dtype=False)
    assert table["is_error"].any() and not table["is_error"].all()  # both kinds of row are exercised
    assert (table["refined_label"] != table["given_label"]).any()
    flagged = table[table["is_noisy"]]  # a flagged row's suggestion is the networks' prediction, error or not
    assert (flagged["suggested_label"] == flagged["predicted_label"]).all()
    errors = table[table["is_error"]]
    assert (errors["suggested_label"] != errors["given_label"]).all()
    assert (table.loc[~table["is_error"], "suggested_label"] == table.loc[~table["is_error"], "given_label"]).all()


@pytest.mark.parametrize("name", ["suspects.xlsx", "suspects.txt", "suspects.csv.gz"])
def test_an_output_file_the_export_cannot_write_is_a_one_line_error(tiny_run, tmp_path, name):
    result = CliRunner().invoke(app, ["export", str(tiny_run.directory), "-o", str(tmp_path / name)])
    suffix = name.rsplit(".", 1)[1]
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: -o {tmp_path / name}: labelclean cannot write '.{suffix}' files; name "
                                     f"the file .csv, .jsonl or .parquet, or give --format.")
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name, fmt", [("s.csv", "csv"), ("s.json", "jsonl"), ("s.jsonl", "jsonl"),
                                       ("s.parquet", "parquet"), ("s", "csv"), ("S.CSV", "csv")])
def test_the_output_suffix_names_the_format(name, fmt):
    assert format_from_suffix(Path(name), None) == fmt
    assert format_from_suffix(Path("s.xlsx"), "csv") == "csv"  # an explicit --format wins


@pytest.mark.parametrize("selection", ["gmm", "quota"])
def test_the_final_clean_probabilities_follow_the_split_rule_on_the_saved_losses(digits, tmp_path, selection):
    """With a loss window of 1 the final split reads only the saved losses: the GMM posterior of the
    normalized loss, or the class-wise quota of the share the warmed-up networks agreed with."""
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", **TINY, selection=selection,
                         loss_window=1)
    samples = run.samples()
    given = samples["given_label"].map({c: k for k, c in enumerate(run.classes)}).to_numpy()
    for net in ("net1", "net2"):
        loss = normalized_loss(torch.tensor(samples[f"loss_{net}"].to_numpy(), dtype=torch.float32)).numpy()
        if selection == "gmm":
            expected, _ = clean_probability(loss, seed=run.config["fit"]["seed"])
        else:
            share = 1 - run.config["auto"]["noise"]["rate"]
            expected = quota_clean_prob(loss, given, class_quota(given, len(run.classes), share))
        np.testing.assert_allclose(samples[f"clean_prob_{net}"], expected, atol=1e-4)
        low, high = samples[f"loss_{net}"] < samples[f"loss_{net}"].median(), samples[f"loss_{net}"] > \
            samples[f"loss_{net}"].median()
        assert samples[f"clean_prob_{net}"][low].mean() > samples[f"clean_prob_{net}"][high].mean()


def test_probs_are_the_mean_softmax_of_the_two_kept_networks(tiny_run):
    probs = tiny_run.probs()
    assert probs.shape == (300, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # The per-sample loss of each network is -log of its own softmax at the given label; the mean
    # of the two softmaxes is bounded by the two exponentiated losses.
    samples = tiny_run.samples()
    given = samples["given_label"].map({c: k for k, c in enumerate(tiny_run.classes)}).to_numpy()
    mean_of_nets = (np.exp(-samples["loss_net1"]) + np.exp(-samples["loss_net2"])) / 2
    np.testing.assert_allclose(probs[np.arange(300), given], mean_of_nets, atol=1e-5)


def test_unpredicted_classes_are_the_given_labels_no_image_is_predicted_as():
    assert unpredicted_classes(EXPECTED).to_dict() == {"3": 1, "1": 1, "4": 1, "6": 1}  # '2' is predicted once
    hint = unpredicted_hint(EXPECTED.iloc[[0, 0, 1, 2, 3, 4]], shown=2)  # two rows labeled '3'
    assert hint.startswith("The networks predict no image as 3 (2 images), 1 (1 image) or 2 more classes (2 images):")
    assert unpredicted_hint(EXPECTED.iloc[[1, 2]]).startswith("The networks predict no image as 1 (1 image): each "
                                                              "flagged image of this class")
    everywhere = EXPECTED.assign(predicted_label=EXPECTED["given_label"])
    assert unpredicted_classes(everywhere).empty and unpredicted_hint(everywhere) is None
