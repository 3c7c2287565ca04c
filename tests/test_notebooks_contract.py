"""Every chapter follows the book's contract (DESIGN.md §1); committed notebooks carry no outputs."""
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_contract(path):
    cells = _cells(path)
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    text = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# "), "a title first"
    assert "Run time" in _source(cells[0]), "the header states the run time in both profiles"
    assert "`paper`" in _source(cells[0]) and "`mini`" in _source(cells[0])
    assert '"google.colab" in sys.modules' in code[0], "first code cell: the Colab-only install"
    assert "book.setup(" in code[1], "second code cell: the settings cell"
    assert any("assert " in c and "all claims hold" in c for c in code), "an assertion cell"
    assert "Exercises" in text and "Solution" in text, "exercises with solutions"
    assert "Paper vs ours" in text or "paper vs ours" in text.lower(), "the paper-vs-ours box"
    assert 'glue("runtime", book.run_time())' in code[-1], "the last cell records the run time"


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in files, f"{path.name} is not in _toc.yml"


def test_bibliography_covers_every_citation():
    bib = (ROOT / "book" / "references.bib").read_text()
    for path in NOTEBOOKS:
        for cell in _cells(path):
            src = _source(cell)
            for part in src.split("{cite:p}`")[1:] + src.split("{cite:t}`")[1:]:
                for key in part.split("`")[0].split(","):
                    assert "{" + key.strip() + "," in bib, f"{path.name} cites unknown {key}"
