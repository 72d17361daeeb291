"""Annotation review: send the suspects to Label Studio, bring the decisions back as a cleaned CSV.

The loop is find → look → decide → clean labels:

* :func:`label_studio_tasks` and :func:`label_studio_config` — a Label Studio import file
  (Basic Label Studio JSON: a list of tasks with ``data`` and ``predictions``) whose tasks
  pre-select the suggested label, and the labeling config its ``from_name``/``to_name`` match;
* :func:`image_urls` — where those tasks point Label Studio for the images, and how to start it so
  that it serves them (local files: the document root is the images folder's parent);
* :func:`read_decisions` — a reviewer's decisions, from a reviewed export CSV (an
  ``accepted_label`` column) or a Label Studio JSON export of completed annotations;
* :func:`model_decisions` — the decisions of a reviewer who trusts the model;
* :func:`apply_decisions` — the original labels CSV with the accepted labels written in (or the
  rejected rows dropped), every other column as it was, plus a change log.

A row is *rejected* when its decision differs from its given label; a decision equal to the given
label confirms it, and rows without a decision are left alone.
"""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from .data import MAX_LISTED, read_csv_table, read_label_table
from .errors import LabelcleanError
from .export import significant, write_output
from .files import write_text

IMAGE_NAME = "image"  # name of the config's <Image> tag and the task data key holding the image URL
CHOICES_NAME = "label"  # name of the config's <Choices> tag: the from_name of predictions and annotations
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio serves LOCAL_FILES_DOCUMENT_ROOT/<d> here
MODEL_VERSION = "labelclean-dividemix"
ACCEPTED_COLUMN = "accepted_label"
CHANGE_COLUMNS = ["line", "path", "old_label", "new_label", "action"]
CSV_SUFFIXES = ("", ".csv", ".tsv", ".txt")  # what a cleaned labels file may be called (as the original)


def image_urls(images_dir: Path, document_root: Path | None = None,
               image_url_prefix: str | None = None) -> tuple[str, str | None]:
    """The prefix of the tasks' image URLs, and how to start Label Studio so that it serves them.

    By default Label Studio serves the images itself, from a Local Files storage on ``images_dir``:
    its local files document root must be a folder above ``images_dir`` (Label Studio refuses a
    storage *at* the document root), by default its parent, and each URL names the image relative
    to that root. ``image_url_prefix`` is for images served elsewhere: it is prepended as it is, and
    there is nothing to set up (None).

    Examples
    --------
    >>> prefix, setup = image_urls(Path("/data/digits/images"))
    >>> prefix, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/data/digits " in setup
    ('/data/local-files/?d=images/', True)
    >>> image_urls(Path("/data/digits/images"), image_url_prefix="https://host/imgs/")
    ('https://host/imgs/', None)
    """
    if image_url_prefix is not None:
        if document_root is not None:
            raise LabelcleanError("--image-url-prefix is for images served elsewhere and --document-root for "
                                  "Label Studio's local files serving; give one of them.")
        return image_url_prefix, None
    images_dir = Path(images_dir).resolve()
    root = Path(document_root).resolve() if document_root is not None else images_dir.parent
    if root == images_dir or not images_dir.is_relative_to(root):
        raise LabelcleanError(f"The document root {root} must be a folder above the images folder {images_dir} "
                              f"(Label Studio serves local files only from below it); pick one of its parents.")
    env = (f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
           f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shlex.quote(str(root))}")
    setup = (f"Label Studio shows these images from a Local Files storage. Start it with:\n  {env} label-studio start\n"
             f"In the project: Settings → Cloud Storage → Add Source Storage → Local Files, absolute local path:\n"
             f"  {images_dir}\nthen Save (not Save & Sync: the tasks come from the tasks file) and Import the tasks file.")
    return LOCAL_FILES_URL + quote(images_dir.relative_to(root).as_posix()) + "/", setup


def label_studio_tasks(table: pd.DataFrame, image_url_prefix: str) -> list[dict[str, Any]]:
    """One Label Studio task per row of a review table, with the row's ``suggested_label`` pre-selected.

    ``data`` carries what a reviewer sorts and filters by in Label Studio's Data Manager:
    ``given_label``, ``suggested_label``, ``suggested_confidence`` and ``clean_prob`` (0–1, lower =
    more likely mislabeled), named as in the export's columns, to 6 significant digits; ``path`` ties
    the task back to the labels CSV, and ``summary`` is the header above the image. The prediction's
    ``score`` is the suggestion's confidence. The image URL is ``image_url_prefix`` + the URL-quoted
    path (see :func:`image_urls`).

    Examples
    --------
    >>> row = dict(path="a b.png", given_label="cat", suggested_label="dog", suggested_confidence=0.8,
    ...            clean_prob=0.1)
    >>> task = label_studio_tasks(pd.DataFrame([row]), "/data/local-files/?d=images/")[0]
    >>> task["data"]["image"], task["predictions"][0]["result"][0]["value"], task["data"]["summary"]
    ('/data/local-files/?d=images/a%20b.png', {'choices': ['dog']}, 'given: cat  →  suggested: dog  (clean_prob 0.1)')
    """
    return [{
        "data": {
            IMAGE_NAME: image_url_prefix + quote(row.path),
            "path": row.path,
            "given_label": row.given_label,
            "suggested_label": row.suggested_label,
            "suggested_confidence": significant(row.suggested_confidence),
            "clean_prob": significant(row.clean_prob),
            "summary": f"given: {row.given_label}  →  suggested: {row.suggested_label}  "
                       f"(clean_prob {row.clean_prob:.3g})",
        },
        "predictions": [{
            "model_version": MODEL_VERSION,
            "score": significant(row.suggested_confidence),
            "result": [{"from_name": CHOICES_NAME, "to_name": IMAGE_NAME, "type": "choices",
                        "value": {"choices": [row.suggested_label]}}],
        }],
    } for row in table.itertuples(index=False)]


def label_studio_config(classes: list[str]) -> str:
    """The labeling config the tasks match: a header with the given and suggested labels, one
    single-choice list over the run's classes (names escaped by ElementTree), and the image below
    them, so that the choices stay in view however large Label Studio draws the image."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$summary")
    choices = ET.SubElement(view, "Choices", name=CHOICES_NAME, toName=IMAGE_NAME, choice="single",
                            showInLine="true")
    for name in classes:
        ET.SubElement(choices, "Choice", value=name)
    ET.SubElement(view, "Image", name=IMAGE_NAME, value=f"${IMAGE_NAME}", zoom="true")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def write_label_studio(table: pd.DataFrame, classes: list[str], out: Path | None, *,
                       image_url_prefix: str, config_file: Path | None = None) -> None:
    """Write the tasks to ``out`` (stdout when None) and, if asked, the labeling config to ``config_file``."""
    tasks = label_studio_tasks(table, image_url_prefix)
    write_output((json.dumps(tasks, ensure_ascii=False, indent=1) + "\n").encode("utf-8"), out)
    if config_file is not None:
        write_text(Path(config_file), label_studio_config(classes))


def model_decisions(table: pd.DataFrame) -> pd.DataFrame:
    """Decisions of a reviewer who trusts the model: every ``is_error`` row (flagged, and the networks
    predict another class) takes its ``suggested_label``: what a reviewer who submits every pre-selected
    choice in Label Studio decides, and the repair the quality benchmark scores (docs/high-noise.md: as
    accurate as DivideMix's ``refined_label`` up to 40% noise, 5–9 points more at 60–80%)."""
    flagged = table[table["is_error"]]
    return pd.DataFrame({"path": flagged["path"], "label": flagged["suggested_label"]}).reset_index(drop=True)


def read_decisions(reviewed: Path) -> pd.DataFrame:
    """A reviewer's decisions as ``path`` → ``label`` rows, one per reviewed image.

    ``reviewed`` is a Label Studio JSON export (``.json``) or a CSV with ``path`` and
    ``accepted_label`` columns (empty = not reviewed).
    """
    reviewed = Path(reviewed)
    if not reviewed.is_file():
        raise LabelcleanError(f"Reviewed file {reviewed} does not exist.")
    if reviewed.suffix.lower() == ".json":
        return _label_studio_decisions(reviewed)
    return _csv_decisions(reviewed)


def _csv_decisions(reviewed: Path) -> pd.DataFrame:
    table = read_csv_table(reviewed)
    missing = [c for c in ("path", ACCEPTED_COLUMN) if c not in table.columns]
    if missing:
        raise LabelcleanError(
            f"{reviewed} has no {' or '.join(repr(c) for c in missing)} column (columns: "
            f"{', '.join(table.columns)}). Start from 'labelclean export' and add an '{ACCEPTED_COLUMN}' "
            f"column: the suggested_label to accept a suggestion, the given_label to reject it, empty to skip."
        )
    decisions = pd.DataFrame({"path": table["path"].str.strip(), "label": table[ACCEPTED_COLUMN].str.strip()})
    decisions = decisions[decisions["label"] != ""].reset_index(drop=True)
    if decisions.empty:
        raise LabelcleanError(f"The '{ACCEPTED_COLUMN}' column of {reviewed} is empty in every row; "
                              f"fill it in for the rows you reviewed.")
    return decisions


def _label_studio_decisions(reviewed: Path) -> pd.DataFrame:
    try:
        tasks = json.loads(reviewed.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelcleanError(f"{reviewed} is not valid JSON ({e}); export the Label Studio project "
                              f"with the JSON format.") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise LabelcleanError(f"{reviewed} is not a Label Studio JSON export (a list of tasks); export the "
                              f"project with the JSON format.")
    rows = []
    for number, task in enumerate(tasks, start=1):
        path = task.get("data", {}).get("path")
        if not isinstance(path, str):
            raise LabelcleanError(f"Task {task.get('id', number)} in {reviewed} has no data.path; review tasks "
                                  f"written by 'labelclean export --format label-studio'.")
        label = _annotated_choice(task)
        if label is not None:
            rows.append((path.strip(), label.strip()))
    if not rows:
        raise LabelcleanError(f"{reviewed} holds no completed annotations with a '{CHOICES_NAME}' choice; "
                              f"finish the review in Label Studio and export the project again.")
    return pd.DataFrame(rows, columns=["path", "label"])


def _annotated_choice(task: dict[str, Any]) -> str | None:
    """The label chosen in the task's latest annotation that was submitted (not skipped), if any."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    for annotation in sorted(submitted, key=lambda a: a.get("updated_at") or "", reverse=True):
        for result in annotation.get("result") or []:
            chosen = result.get("value", {}).get("choices") if result.get("from_name") == CHOICES_NAME else None
            if chosen:
                return str(chosen[0])
    return None


@dataclass
class CleanedLabels:
    """A labels CSV with decisions applied.

    Attributes
    ----------
    table : the CSV's columns and rows in their order; accepted labels written in, or rejected rows left out
    changes : change log, one row per rejected row: ``line`` (in the original file, header = 1),
        ``path``, ``old_label``, ``new_label`` (the decision) and ``action`` ('relabel' or 'drop')
    delimiter : the original file's, so the cleaned copy reads like it
    """

    table: pd.DataFrame
    changes: pd.DataFrame
    delimiter: str

    def write(self, out: Path | None) -> Path | None:
        """Write the cleaned CSV to ``out`` (stdout when None) and the change log next to it.

        Returns the change log's path (``cleaned.csv`` → ``cleaned.changes.csv``), None on stdout.
        """
        if out is not None and Path(out).suffix.lower() not in CSV_SUFFIXES:
            raise LabelcleanError(f"-o {out}: the cleaned labels are a CSV like the original; name the file "
                                  f"{' or '.join(s for s in CSV_SUFFIXES if s)}.")
        write_output(self.table.to_csv(index=False, sep=self.delimiter).encode("utf-8"), out)
        if out is None:
            return None
        log = Path(out).with_suffix(".changes.csv")
        write_text(log, self.changes.to_csv(index=False))
        return log


def apply_decisions(labels_csv: Path, decisions: pd.DataFrame, *, drop_rejected: bool = False,
                    path_column: str | None = None, label_column: str | None = None) -> CleanedLabels:
    """Write reviewed labels into the labels CSV they came from.

    Parameters
    ----------
    labels_csv : the CSV given to ``fit`` (only its label column changes), or the image folder of class folders
    decisions : ``path`` and ``label`` columns (see :func:`read_decisions`, :func:`model_decisions`)
    drop_rejected : leave out rejected rows instead of relabeling them

    Examples
    --------
    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = csv.write_text("path,label,note\\na.png,cat,x\\nb.png,dog,y\\n")
    >>> cleaned = apply_decisions(csv, pd.DataFrame({"path": ["a.png"], "label": ["dog"]}))
    >>> cleaned.table["label"].tolist(), cleaned.changes["action"].tolist()
    (['dog', 'dog'], ['relabel'])
    """
    labels_csv = Path(labels_csv)
    table, path_col, label_col = read_label_table(labels_csv, path_column, label_column)  # a CSV or class folders
    paths, given = table[path_col].str.strip(), table[label_col].str.strip()
    decided = _one_label_per_path(decisions)
    _check_decisions(decided, paths, given, labels_csv)

    new = paths.map(decided)
    rejected = new.notna() & (new != given)
    line = pd.Series(table.index + 2, index=table.index)  # as errors count rows: header = line 1
    changes = pd.DataFrame({"line": line[rejected], "path": paths[rejected],
                            "old_label": given[rejected], "new_label": new[rejected],
                            "action": "drop" if drop_rejected else "relabel"}, columns=CHANGE_COLUMNS)
    cleaned = table[~rejected] if drop_rejected else table.assign(**{label_col: table[label_col].where(~rejected, new)})
    return CleanedLabels(cleaned.reset_index(drop=True), changes.reset_index(drop=True),
                         table.attrs.get("delimiter", ","))


def _one_label_per_path(decisions: pd.DataFrame) -> pd.Series:
    unique = decisions.drop_duplicates(["path", "label"])
    repeated = unique["path"].duplicated(keep=False)
    if repeated.any():
        path = unique["path"][repeated].iloc[0]
        labels = ", ".join(repr(y) for y in unique["label"][unique["path"] == path])
        raise LabelcleanError(f"The review decides '{path}' more than once with different labels ({labels}); "
                              f"keep one decision per image.")
    return unique.set_index("path")["label"]


def _check_decisions(decided: pd.Series, paths: pd.Series, given: pd.Series, labels_csv: Path) -> None:
    """Refuse decisions about images the CSV does not list, and labels it does not use (likely typos)."""
    unknown_paths = decided.index[~decided.index.isin(paths)]
    if len(unknown_paths):
        examples = ", ".join(f"'{p}'" for p in unknown_paths[:MAX_LISTED])
        raise LabelcleanError(f"{len(unknown_paths):,} reviewed path(s) are not in {labels_csv} (e.g. {examples}); "
                              f"apply the review to the labels CSV it was exported from.")
    unknown_labels = sorted(set(decided) - set(given))
    if unknown_labels:
        examples = ", ".join(f"'{y}'" for y in unknown_labels[:MAX_LISTED])
        raise LabelcleanError(f"The review uses {len(unknown_labels)} label(s) that {labels_csv} never uses "
                              f"(e.g. {examples}); fix the typo or pick one of its labels.")
