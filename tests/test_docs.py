"""The documentation's structure: theory anchors that docstrings cite, notebooks without outputs.

These checks need no docs dependencies; `make docs` (strict mkdocs build) and `make notebooks`
(nbmake) are the full checks and run in CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_theory_page_has_the_cited_section_anchors() -> None:
    """Docstrings cite "docs/theory.md §N" for N = 0..7: each section must exist, in order."""
    text = (ROOT / "docs" / "theory.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\d+)\. .*\{#sec-(\d+)\}\s*$", text, flags=re.MULTILINE)
    assert [(int(a), int(b)) for a, b in headings] == [(n, n) for n in range(8)], headings


def test_docs_never_point_at_the_private_spec() -> None:
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        # The private spec's names; our own docs/experiments.md page is linked as "experiments.md".
        for private in ("shared/docs", "math.md", "experiments.md §"):
            assert private not in text, (page, private)


def test_there_are_notebooks() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "certificates", "observer", "youla_control", "rl"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_jupytext_percent_script_with_a_quick_mode(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "format_name: percent" in text.split("# ---", 2)[1], "missing jupytext header"
    assert text.count("# %% [markdown]") >= 2 and re.search(r"^# %%$", text, re.MULTILINE)
    assert 'os.environ.get("QUICK"' in text, "notebooks must honour QUICK=1 (CI size)"
    compile(text, str(path), "exec")  # valid Python as stored


def test_no_notebook_is_stored_with_outputs() -> None:
    for path in (ROOT / "notebooks").rglob("*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, path


def test_docstrings_cite_the_repository_theory_page() -> None:
    """Users never get the private spec: the code cites docs/theory.md and docs/experiments.md."""
    for source in [*(ROOT / "r2dn_control").rglob("*.py"), *(ROOT / "envs").rglob("*.py")]:
        text = source.read_text(encoding="utf-8")
        for private in ("shared/docs", "math.md", "experiments.md §"):
            assert private not in text, (source, private)
