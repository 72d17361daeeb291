"""The user's guide holds together: README within its size, every link and anchor between the pages
resolves, and every result file the pages cite is in ``benchmarks/results/``."""

from __future__ import annotations

import itertools
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "results"
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED = re.compile(r"`([^`\s]*\.json)`")
PLACEHOLDER = re.compile(r"<|…|NAME|\bS\b|DEVICE|\.\.\.")
# a benchmark's result file, or the tail of one named just before it ("seed 2 in `-seed2.json`")
RESULT_NAME = re.compile(r"((^|/)(quality|speed|fit-time|pretrain|gpu|memory|scaling|start-screen)[-\w.]*|^-[-\w.]+)\.json$")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, spaces and
    hyphens kept), spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def expand(pattern: str) -> list[str]:
    """``a{b,c}d`` → ``abd``, ``acd`` (each brace group, as a shell expands it)."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def cited_files(page: Path) -> list[str]:
    names = [name for match in CITED.finditer(page.read_text()) for name in expand(match.group(1))]
    return [name for name in names if RESULT_NAME.search(name) and not PLACEHOLDER.search(name)]


def test_readme_stays_a_short_guide():
    assert len((ROOT / "README.md").read_bytes()) <= 15_000


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_between_the_pages_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # web address
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_cited_result_file_exists(page):
    present = {p.relative_to(ROOT).as_posix() for p in RESULTS.rglob("*.json")}
    missing = [name for name in cited_files(page)
               if not any(p.endswith(name if name.startswith("-") else "/" + name) or Path(p).match(name)
                          for p in present)]
    assert not missing, f"{page.name} cites result files that are not in benchmarks/results/: {missing}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Speed and memory (`--compile`)\n[a](#speed-and-memory---compile) [b](#nowhere) "
                    "`quality-{x,y}.json` `config.json`\n")
    assert anchors(page) == {"speed-and-memory---compile"}
    assert anchor("28×28 digits") == "2828-digits"
    assert cited_files(page) == ["quality-x.json", "quality-y.json"]
