"""Per-sample review table and the file formats it is written in.

One row per input row, in input order (unless sorted), with these columns:

=====================  =============================================================================
path                   image path as written in the labels CSV
given_label            the label in the CSV
suggested_label        **the label a reviewer is offered**: ``predicted_label`` where ``is_error``,
                       else the given label. Label Studio pre-selects it, the report shows it,
                       ``export --as-labels`` writes it; a review accepts it by keeping it
suggested_confidence   the networks' mean probability of ``suggested_label``, in [0, 1]
is_error               ``is_noisy`` *and* the networks predict another class than the given label:
                       the rows to review, and the only rows whose suggestion differs from the given label
clean_prob             mean of the two networks' clean probabilities, in [0, 1], from the fit's split
                       rule (the GMM posterior; with the 'quota' selection at very high noise, the
                       within-class loss rank, above 0.5 exactly for the samples it labels); **lower =
                       more likely mislabeled** — sort ascending to review the worst first
is_noisy               ``clean_prob < threshold``: the GMM's view, built to pick a clean *training*
                       set; it also flags hard but correct samples (precision 0.59 on digits with
                       class-pair flips)
predicted_label        the two-network ensemble's prediction, ignoring the given label
predicted_confidence   its probability, in [0, 1] (``labelclean predict`` writes the same two columns)
clean_prob_net1/2      each network's clean probability
refined_label          DivideMix's co-refined *training target*, not a suggestion: argmax of
                       ``w·onehot(given) + (1−w)·p`` with ``w = clean_prob`` and ``p`` the two networks'
                       mean softmax. A flagged row keeps its given label here whenever ``w`` outweighs
                       the prediction, so offering it would keep the error; the benchmarks score it
refined_confidence     max of the co-refined label, in [0, 1]
=====================  =============================================================================

Sort by ``clean_prob`` (ascending) to review in order of suspicion; filter on ``is_error`` for the
rows to relabel.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from .auto import CLEAN_SPLIT
from .errors import LabelcleanError
from .files import atomic_write

COLUMNS = ["path", "given_label", "suggested_label", "suggested_confidence", "is_error", "clean_prob", "is_noisy",
           "predicted_label", "predicted_confidence", "clean_prob_net1", "clean_prob_net2", "refined_label",
           "refined_confidence"]
FORMATS = ("csv", "jsonl", "parquet")
DEFAULT_THRESHOLD = CLEAN_SPLIT  # clean_prob below which a sample is flagged: the training split's boundary
SORT_KEYS = ("clean_prob", "refined_confidence", "predicted_confidence")
SIGNIFICANT_DIGITS = 6  # of probabilities in text exports: enough to review and sort by, and readable


def review_table(paths: list[str], given: np.ndarray, classes: list[str], clean_prob: np.ndarray,
                 probs: np.ndarray, threshold: float) -> pd.DataFrame:
    """Build the review table.

    Parameters
    ----------
    paths : (n,) image paths as in the CSV
    given : (n,) int, index of the given label in ``classes``
    clean_prob : (2, n) per-network clean probability
    probs : (n, k) two-network mean softmax
    threshold : samples with mean clean probability below it are flagged ``is_noisy``
    """
    if not 0 <= threshold <= 1:
        raise LabelcleanError(f"The 'threshold' option must be in [0, 1]. Got {threshold}.")
    names = np.asarray(classes, dtype=object)
    w = clean_prob.mean(0)
    onehot = np.eye(len(classes))[given]
    refined = w[:, None] * onehot + (1 - w[:, None]) * probs
    predicted = probs.argmax(1)
    is_error = (w < threshold) & (predicted != given)
    suggested = np.where(is_error, predicted, given)
    return pd.DataFrame({
        "path": paths,
        "given_label": names[given],
        "suggested_label": names[suggested],
        "suggested_confidence": probs[np.arange(len(given)), suggested],
        "is_error": is_error,
        "clean_prob": w,
        "is_noisy": w < threshold,
        "predicted_label": names[predicted],
        "predicted_confidence": probs.max(1),
        "clean_prob_net1": clean_prob[0],
        "clean_prob_net2": clean_prob[1],
        "refined_label": names[refined.argmax(1)],
        "refined_confidence": refined.max(1),
    }, columns=COLUMNS)


def select_rows(table: pd.DataFrame, only_noisy: bool = False, sort: str | None = None,
                only_errors: bool = False) -> pd.DataFrame:
    """Keep the ``is_noisy`` (or ``is_error``) rows only and/or sort ascending by a score (worst first for clean_prob)."""
    if sort is not None and sort not in SORT_KEYS:
        raise LabelcleanError(f"The 'sort' option must be one of {', '.join(SORT_KEYS)}. Got '{sort}'.")
    if only_noisy or only_errors:
        table = table[table["is_error" if only_errors else "is_noisy"]]
    if sort is not None:
        table = table.sort_values(sort, kind="stable")
    return table.reset_index(drop=True)


def unpredicted_classes(table: pd.DataFrame) -> pd.Series:
    """Images per given label, for the labels that the networks predict for no image at all (empty when
    every label is predicted somewhere). Every image of such a class is flagged whenever its clean
    probability is low, right label or wrong."""
    counts = table["given_label"].value_counts(sort=False)
    return counts[~counts.index.isin(table["predicted_label"].unique())]


def unpredicted_hint(table: pd.DataFrame, shown: int = 5) -> str | None:
    """A warning naming the classes the networks never predict (:func:`unpredicted_classes`), most
    images first, or None."""
    missing = unpredicted_classes(table).sort_values(ascending=False, kind="stable")
    if missing.empty:
        return None
    named = [f"{name} ({count:,} image{'s' if count > 1 else ''})" for name, count in missing.iloc[:shown].items()]
    if len(missing) > shown:
        named.append(f"{len(missing) - shown:,} more classes ({int(missing.iloc[shown:].sum()):,} images)")
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    return (f"The networks predict no image as {listed}: each flagged image of "
            f"{'this class' if len(missing) == 1 else 'these classes'} is offered another class. Rare classes get "
            "dropped so; review those images by hand rather than accept the suggestions "
            "(docs/troubleshooting.md#a-class-is-never-predicted).")


def significant(x: float) -> float:
    """``x`` rounded to :data:`SIGNIFICANT_DIGITS` significant digits (9.643617662878853e-253 → 9.64362e-253)."""
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def _encode(table: pd.DataFrame, fmt: str, stream: IO[bytes]) -> None:
    if fmt in ("csv", "jsonl"):  # text for people: probabilities to 6 significant digits; Parquet keeps all
        table = table.assign(**{c: table[c].map(significant) for c in table.select_dtypes("floating").columns})
    if fmt == "csv":
        stream.write(table.to_csv(index=False).encode("utf-8"))
    elif fmt == "jsonl":  # json, not pandas' to_json: that one writes 3.51486e-07 as 3.515e-07
        stream.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_dict("records"))
                     .encode("utf-8"))
    elif fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise LabelcleanError("Parquet output needs pyarrow: pip install 'labelclean[parquet]'.") from None
        table.to_parquet(stream, engine="pyarrow", index=False)
    else:
        raise LabelcleanError(f"The 'format' option must be one of {', '.join(FORMATS)}. Got '{fmt}'.")


def write_output(data: bytes, out: Path | None) -> None:
    """Write ``data`` to ``out`` atomically, or to stdout when ``out`` is None (nothing else goes there)."""
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        atomic_write(Path(out), lambda f: f.write(data))


def write_table(table: pd.DataFrame, fmt: str, out: Path | None) -> None:
    """Write to ``out`` atomically, or to stdout when ``out`` is None (text formats only)."""
    if out is None and fmt == "parquet":
        raise LabelcleanError("Parquet is binary: give a file with -o/--output.")
    buffer = io.BytesIO()
    _encode(table, fmt, buffer)  # encode fully first: a failure leaves any old file untouched
    write_output(buffer.getvalue(), out)


SUFFIX_FORMATS = {"csv": "csv", "json": "jsonl", "jsonl": "jsonl", "parquet": "parquet", "pq": "parquet"}


def format_from_suffix(out: Path | None, fmt: str | None) -> str:
    """The explicit format, else the one the output file's suffix names (CSV for stdout or no suffix).

    Examples
    --------
    >>> format_from_suffix(Path("suspects.parquet"), None), format_from_suffix(None, None)
    ('parquet', 'csv')
    >>> format_from_suffix(Path("suspects.xlsx"), None)
    Traceback (most recent call last):
    ...
    labelclean.errors.LabelcleanError: -o suspects.xlsx: labelclean cannot write '.xlsx' files; name the file .csv, .jsonl or .parquet, or give --format.
    """
    if fmt is not None:
        return fmt
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    if suffix and suffix not in SUFFIX_FORMATS:
        raise LabelcleanError(f"-o {out}: labelclean cannot write '.{suffix}' files; name the file .csv, .jsonl "
                              f"or .parquet, or give --format.")
    return SUFFIX_FORMATS.get(suffix, "csv")
