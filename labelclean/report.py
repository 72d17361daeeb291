"""One self-contained HTML page for reviewing a run: summary, suspects with thumbnails, charts.

Everything is inline — thumbnails as base64 data URIs, charts as hand-drawn SVG
(:mod:`labelclean.svg`), CSS in a ``<style>`` tag, no JavaScript, no external URL — so the file
opens offline and can be mailed around. Labels and paths are user data: every one is escaped
with :func:`html.escape` before it reaches the page.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import resolve_inside, to_rgb
from .errors import LabelcleanError
from .export import DEFAULT_THRESHOLD
from .files import write_text
from .run import Run
from .svg import histogram_chart, line_chart

THUMB_SIDE = 96  # px, longest side of a thumbnail: ~2–3 KB as base64 JPEG, so 1,000 suspects stay well < 5 MB
LOSSLESS_SIDE = 32  # thumbnails this small stay PNG: they are tiny anyway and JPEG would smear them
JPEG_QUALITY = 80
MAX_CONFUSION_CLASSES = 30  # wider tables stop being readable; the classes with the most changes are kept
HISTOGRAM_BINS = 40
CURVES = [  # (history field, chart title, y unit)
    ("labeled", "Labeled-set size", "samples"),
    ("loss", "Loss: warm-up CE, then labeled soft CE", "loss"),
    ("loss_u", "Unlabeled loss (MSE)", "loss"),
]

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1240px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#666}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}.cols{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start}
.bar{fill:#b9c6d6}.rate{display:inline-block;height:8px;background:#d2691e;vertical-align:middle}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;font-size:12px;overflow:hidden}
figure img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block;margin:0 auto 4px;
background:#f3f3f3}
.path{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;color:#555}.given{color:#b22222;
text-decoration:line-through}.sugg{color:#2e7d32;font-weight:600}.noimg{height:96px;line-height:96px;
text-align:center;background:#f3f3f3;color:#999;margin-bottom:4px}
.scroll{overflow-x:auto}.diag{color:#aaa}.hot{display:inline-block;min-width:18px;padding:0 3px;border-radius:3px}
.settings{columns:3 260px;column-gap:24px;font-size:12px}.settings div{break-inside:avoid;border-bottom:1px solid #eee;
display:flex;justify-content:space-between;gap:8px}.settings span{color:#555;overflow-wrap:anywhere;text-align:right}
svg.chart{border:1px solid #eee;border-radius:6px;background:#fff}
.card small{display:block;color:#666;font-size:12px}h3{font-size:15px;margin:18px 0 6px}a{color:#1f5fa8}
section{scroll-margin-top:8px}
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:10px;fill:#555}svg .axis-label{font-size:11px}
svg .grid{stroke:#eee}svg .axis{stroke:#999}svg .marker{stroke:#444;stroke-dasharray:4 3;stroke-width:1.5}
""".strip()


SUSPECTS = {"errors": "is_error", "noisy": "is_noisy"}  # which rows the report shows as suspects


def write_report(run: Run, out: Path, *, threshold: float = DEFAULT_THRESHOLD, max_items: int = 1000,
                 suspects: str = "errors") -> int:
    """Write the report of ``run`` to ``out``; returns its size in bytes.

    Parameters
    ----------
    threshold : the export's threshold (``is_noisy`` = ``clean_prob`` below it; ``is_error`` follows)
    max_items : at most this many suspects get a thumbnail: the most suspicious of each class in turn
    suspects : 'errors' (the ``is_error`` rows, the ones a review relabels) or 'noisy' (every ``is_noisy`` row)
    """
    suffix = Path(out).suffix.lower()
    if suffix not in (".html", ".htm"):
        raise LabelcleanError(f"-o {out}: the report is an HTML page; name the file .html.")
    page = render_report(run, threshold=threshold, max_items=max_items, suspects=suspects)
    write_text(Path(out), page)
    return len(page.encode("utf-8"))


def render_report(run: Run, *, threshold: float = DEFAULT_THRESHOLD, max_items: int = 1000,
                  suspects: str = "errors") -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    if max_items < 0:
        raise LabelcleanError(f"The 'max_items' option must be at least 0. Got {max_items}.")
    if suspects not in SUSPECTS:
        raise LabelcleanError(f"The 'suspects' option must be errors or noisy. Got {suspects!r}.")
    table = run.export(threshold)
    rows = table[table[SUSPECTS[suspects]]].sort_values("clean_prob", kind="stable")
    title = f"labelclean report: {run.directory.resolve().name}"
    sections = [  # the long list of suspects comes last, after everything that fits on a screen
        overview_section(run, table, rows, threshold),
        (f'<div class="cols"><div>{per_class_section(table, rows, run.classes)}</div>'
         f"<div>{confusion_section(rows, run.classes)}</div></div>"),
        loss_section(run.samples(), threshold),
        curves_section(run.history),
        settings_section(run, threshold),
        suspects_section(rows, run.classes, Path(run.config["data"]["images_dir"]), max_items),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>{''.join(sections)}</body></html>\n")


def _rows(cells: list[list[str]], header: list[str]) -> str:
    """An HTML table of already-escaped cells; the first column (a label) is left-aligned."""
    def row(values: list[str], tag: str) -> str:
        return "<tr>" + "".join(f'<{tag}{" class=l" if k == 0 else ""}>{v}</{tag}>'
                                for k, v in enumerate(values)) + "</tr>"
    return "<table>" + row(header, "th") + "".join(row(c, "td") for c in cells) + "</table>"


def fit_noise_estimate(run: Run) -> tuple[float, str] | None:
    """The share of wrong labels the fit estimated, and when: config.json's ``auto.noise.rate`` (the
    networks' disagreement with the labels when warm-up ended), else the last epoch's ``noise_estimate``
    in the history (MLNT: the share its mentor left out); None if the run has neither."""
    rate = run.config.get("auto", {}).get("noise", {}).get("rate")
    if rate is not None:
        return rate, "after warm-up"
    last = next((e for e in reversed(run.history) if e.get("noise_estimate") is not None), None)
    return (last["noise_estimate"], f"at epoch {last['epoch']}") if last else None


def overview_section(run: Run, table: pd.DataFrame, rows: pd.DataFrame, threshold: float) -> str:
    """How many suspects, the flagged share beside the fit's own noise estimate, how long the fit took."""
    estimate = fit_noise_estimate(run)
    cards = [("samples", f"{len(table):,}", ""), ("classes", f"{len(run.classes):,}", ""),
             ("suspects", f"{len(rows):,}", f"{len(rows) / max(len(table), 1):.1%} of the samples"),
             ("fit's noise estimate", "n/a" if estimate is None else f"{estimate[0]:.1%}",
              ("none in this run" if estimate is None else estimate[1])
              + f" · flagged: {table['is_noisy'].mean():.1%} (clean_prob &lt; {threshold:g})"),
             ("fit time", f"{run.config.get('fit_seconds', 0):,.0f} s", "")]
    hint = run.config.get("threshold_hint")
    advice = (f"<p><b>The fit suggests --threshold {hint:g}</b>: at this much noise clean_prob &lt; "
              f"{DEFAULT_THRESHOLD:g} flags far fewer labels than the networks predict another class for "
              f"(labelclean report --threshold {hint:g}).</p>"
              if hint and hint != threshold else "")
    for warning in run.warnings(table):
        advice += f"<p><b>{escape(warning)}</b></p>"
    return (f'<p class="muted">{escape(str(run.directory))} · suspects = the rows a review relabels: flagged '
            f"(clean_prob &lt; {threshold:g}, lower = more likely mislabeled) and the networks predict another "
            f"class, which is the suggested label</p>" + advice + '<div class="cards">'
            + "".join(f'<div class="card">{k}<b>{v}</b><small>{note}</small></div>' for k, v, note in cards)
            + "</div>")


def _anchor(k: int) -> str:
    return f"suspects-{k}"


def per_class_section(table: pd.DataFrame, rows: pd.DataFrame, classes: list[str]) -> str:
    """Samples, predictions and suspects of each given label; each count links to that class's suspects below."""
    samples, predicted = table["given_label"].value_counts(), table["predicted_label"].value_counts()
    suspects = rows["given_label"].value_counts()
    cells = []
    for k, name in enumerate(classes):
        n, bad = int(samples.get(name, 0)), int(suspects.get(name, 0))
        rate = bad / n if n else 0.0
        count = f'<a href="#{_anchor(k)}">{bad:,}</a>' if bad else "0"
        cells.append([escape(name), f"{n:,}", f"{int(predicted.get(name, 0)):,}", count,
                      f'{rate:.1%} <span class="rate" style="width:{rate * 80:.0f}px"></span>'])
    return ("<h2>Suspects per given label</h2><p class=muted>Predicted: the images the networks predict as the "
            "class. Click a count to see that class's suspects.</p>"
            + _rows(cells, ["given label", "samples", "predicted", "suspects", "share"]))


def settings_section(run: Run, threshold: float) -> str:
    """Every setting of the fit (its effective value, as config.json's ``settings`` records it), with the
    versions and data it ran on."""
    config = run.config
    settings = {"method": config.get("method", ""), "created": config.get("created", ""),
                "device": config.get("device", ""), "labelclean": config.get("labelclean_version", ""),
                "threshold": threshold, **config.get("settings", config.get("fit", {})),
                "images_dir": config["data"]["images_dir"],
                "labels_csv": config["data"]["labels_csv"] or "none (class folders)"}
    items = "".join(f"<div>{escape(str(k))}<span>{escape(str(v))}</span></div>" for k, v in settings.items())
    return f'<h2>Settings</h2><div class="settings">{items}</div>'


def thumbnail_uri(file: Path, side: int = THUMB_SIDE) -> str:
    """A ``data:`` URI of the image shrunk to fit ``side`` px (PNG when small, JPEG otherwise)."""
    with Image.open(file) as image:
        image = to_rgb(ImageOps.exif_transpose(image))
        image.thumbnail((side, side))
    fmt = "PNG" if max(image.size) <= LOSSLESS_SIDE else "JPEG"
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {"optimize": True}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _suspect_card(row: pd.Series, images_dir: Path) -> str:
    try:
        picture = f'<img src="{thumbnail_uri(resolve_inside(images_dir, row["path"]))}" alt="">'
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        picture = '<div class="noimg">no image</div>'
    path, given, suggested = escape(row["path"]), escape(row["given_label"]), escape(row["suggested_label"])
    labels = (f"<span class=given>{given}</span> → <span class=sugg>{suggested}</span>" if given != suggested
              else f"{given} <span class=muted>(kept)</span>")
    return (f"<figure>{picture}<figcaption><div class=path title=\"{path}\">{path}</div><div>{labels}</div>"
            f'<div>clean {row["clean_prob"]:.3g} · conf {row["suggested_confidence"]:.2f}</div></figcaption></figure>')


def shown_suspects(rows: pd.DataFrame, max_items: int) -> pd.DataFrame:
    """At most ``max_items`` of ``rows`` (sorted by suspicion): each class's most suspicious first, taking
    one more from every class in turn, so that a class with many suspects does not crowd out the rest.

    Examples
    --------
    >>> rows = pd.DataFrame({"given_label": list("aaaab"), "clean_prob": [.1, .2, .3, .4, .5]})
    >>> shown_suspects(rows, 3)["clean_prob"].tolist()
    [0.1, 0.2, 0.5]
    """
    rank = rows.groupby("given_label", sort=False).cumcount()
    keep = rank.sort_values(kind="stable").index[:max_items]
    return rows.loc[rows.index.isin(keep)]


def suspects_section(rows: pd.DataFrame, classes: list[str], images_dir: Path, max_items: int) -> str:
    """The suspects, one section per given label (the per-class table links to it), most suspicious first:
    thumbnail, given → suggested label, clean_prob, the suggestion's confidence."""
    shown = shown_suspects(rows, max_items)
    note = (f"Thumbnails for {len(shown):,} of the {len(rows):,} suspects: the most suspicious of each class in "
            f"turn (raise --max-items for more; labelclean export --only-errors lists them all)."
            if len(shown) < len(rows) else f"All {len(rows):,} suspects.")
    parts = []
    for k, name in enumerate(classes):
        of_class = rows[rows["given_label"] == name]
        if of_class.empty:
            continue
        cards = shown[shown["given_label"] == name]
        more = f", {len(cards):,} shown" if len(cards) < len(of_class) else ""
        parts.append(f'<section id="{_anchor(k)}"><h3>given {escape(name)}: {len(of_class):,} suspect(s){more}</h3>'
                     f'<div class="grid">{"".join(_suspect_card(row, images_dir) for _, row in cards.iterrows())}'
                     f"</div></section>")
    return (f'<h2>Suspects</h2><p class="muted">{note} Lowest clean_prob first in each class. Given label struck '
            f"through → suggested label (what Label Studio pre-selects and export --as-labels writes), or (kept) "
            f"when the suggestion is the given label; conf = the networks' probability of the suggested label.</p>"
            + ("".join(parts) or "<p>No suspects.</p>"))


def confusion_section(rows: pd.DataFrame, classes: list[str]) -> str:
    """Suspects counted by given label (rows) × suggested label (columns)."""
    if rows.empty:
        return "<h2>Given × suggested</h2><p class=muted>No suspects.</p>"
    counts = pd.crosstab(rows["given_label"], rows["suggested_label"]).reindex(
        index=classes, columns=classes, fill_value=0)
    changes = counts.to_numpy().copy()
    np.fill_diagonal(changes, 0)
    involvement = changes.sum(0) + changes.sum(1)
    keep = sorted(np.argsort(-involvement, kind="stable")[:MAX_CONFUSION_CLASSES])
    counts = counts.iloc[keep, keep]
    note = ("" if len(classes) <= MAX_CONFUSION_CLASSES else
            f" Only the {MAX_CONFUSION_CLASSES} classes with the most suggested changes are shown.")
    peak = max(int(changes.max()), 1)
    cells = [[escape(given)] + [_count_cell(n, given == sugg, peak) for sugg, n in row.items()]
             for given, row in counts.iterrows()]
    return (f"<h2>Given × suggested</h2><p class=muted>Suspects by given label (rows) and suggested label "
            f"(columns); the diagonal keeps its label.{note}</p><div class=scroll>"
            + _rows(cells, ["given \\ suggested"] + [escape(c) for c in counts.columns]) + "</div>")


def _count_cell(count: int, diagonal: bool, peak: int) -> str:
    """A count, greyed on the diagonal, shaded by size elsewhere so the big confusions stand out."""
    if not count:
        return ""
    if diagonal:
        return f"<span class=diag>{count}</span>"
    return f'<span class=hot style="background:rgba(210,105,30,{0.15 + 0.6 * count / peak:.2f})">{count}</span>'


def gmm_components(loss: np.ndarray, clean_prob: np.ndarray) -> list[tuple[float, float, float]]:
    """(weight, mean, std) of the clean and of the noisy component of the loss mixture.

    One M-step on the saved posteriors recovers the Gaussian mixture that produced them, to
    within one EM iteration, without refitting it or storing it in the run.
    """
    components = []
    for resp in (clean_prob, 1 - clean_prob):
        total = max(float(resp.sum()), 1e-12)
        mean = float((resp * loss).sum() / total)
        std = float(np.sqrt((resp * (loss - mean) ** 2).sum() / total))
        components.append((total / len(loss), mean, max(std, 1e-3)))
    return components


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def loss_histogram(loss: np.ndarray, clean_prob: np.ndarray, threshold: float, title: str) -> str:
    """Histogram of min–max normalized loss (what the GMM saw), both weighted components, and the
    loss at which the clean posterior falls below ``threshold``."""
    spread = loss.max() - loss.min()
    if spread <= 0:
        return ""
    x = (loss - loss.min()) / spread
    grid = np.linspace(0, 1, 201)
    (w0, m0, s0), (w1, m1, s1) = gmm_components(x, clean_prob)
    clean, noisy = w0 * _normal_pdf(grid, m0, s0), w1 * _normal_pdf(grid, m1, s1)
    posterior = clean / np.maximum(clean + noisy, 1e-300)
    beyond = np.flatnonzero((grid > m0) & (posterior < threshold))
    marker = (f"clean_prob = {threshold:g}", float(grid[beyond[0]])) if len(beyond) else None
    return histogram_chart(x, bins=HISTOGRAM_BINS, curves={"clean": (grid, clean), "noisy": (grid, noisy)},
                           marker=marker, title=title, x_label="normalized loss (given label)")


def loss_section(samples: pd.DataFrame, threshold: float) -> str:
    """One loss histogram per network, as its final GMM split it."""
    charts = [loss_histogram(samples[f"loss_net{k}"].to_numpy(), samples[f"clean_prob_net{k}"].to_numpy(),
                             threshold, f"Per-sample loss, network {k}")
              for k in (1, 2) if {f"loss_net{k}", f"clean_prob_net{k}"} <= set(samples.columns)]
    return ("<h2>Loss and the clean/noisy split</h2><p class=muted>Final evaluation: the two-component mixture "
            "fitted to each network's losses; samples right of the dashed line are flagged by that network.</p>"
            f'<div class="cols">{"".join(charts) or "<p>No per-sample losses in this run.</p>"}</div>')


def _series(history: list[dict], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per-network (epochs, values) of a history field, over the epochs that recorded it."""
    epochs = [e for e in history if e.get(key) is not None]
    return {f"network {k + 1}": ([e["epoch"] for e in epochs], [e[key][k] for e in epochs])
            for k in range(len(epochs[0][key]))} if epochs else {}


def curves_section(history: list[dict]) -> str:
    """Per-epoch labeled-set size and losses, from ``history.jsonl``."""
    charts = [line_chart(series, title=title, x_label="epoch", y_label=unit)
              for key, title, unit in CURVES if (series := _series(history, key))]
    return ("<h2>Training curves</h2>"
            f'<div class="cols">{"".join(charts) or "<p>No history in this run.</p>"}</div>')
