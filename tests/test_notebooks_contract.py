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


CODE_COLUMNS = 79      # what a chapter page shows without a horizontal scroll (d2l keeps to it too)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_lines_fit_the_page(path):
    long = [(i, line) for i, cell in enumerate(_cells(path)) if cell["cell_type"] == "code"
            for line in _source(cell).splitlines() if len(line) > CODE_COLUMNS]
    assert not long, f"{path.name}: {len(long)} code lines over {CODE_COLUMNS} columns, e.g. cell {long[0][0]}: " \
                     f"{long[0][1][:60]}…"


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
    claims = [c for c in code if "with book.claims(profile):" in c]
    assert claims, "an assertion cell (its claims under `with book.claims(profile):`)"
    _assertions_can_fail(claims[0], "\n".join(code[:code.index(claims[0])]), path.name)
    assert "Exercises" in text and "Solution" in text, "exercises with solutions"
    assert "Paper vs ours" in text or "paper vs ours" in text.lower(), "the paper-vs-ours box"
    assert 'glue("runtime", book.run_time())' in code[-1], "the last cell records the run time"


def _assertions_can_fail(cell: str, before: str, name: str) -> None:
    """The assertion cell makes at least three claims, each a comparison (or a call) that reads a
    value computed earlier in the chapter: `assert True` or `assert 1 < 2` does not count."""
    import ast

    def parse(src):
        lines = [l[:len(l) - len(l.lstrip())] + "pass" if l.lstrip().startswith(("%", "!")) else l
                 for l in src.split("\n")]                    # IPython magics and shell lines
        return ast.parse("\n".join(lines))

    tree = parse(cell)
    computed = {n.id for t in (parse(before), tree) for n in ast.walk(t)          # names the chapter assigned
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    claims = [a for a in ast.walk(tree) if isinstance(a, ast.Assert)]
    assert len(claims) >= 3, f"{name}: the assertion cell makes fewer than three claims"
    for a in claims:
        names = {n.id for n in ast.walk(a.test) if isinstance(n, ast.Name)}
        tests_something = any(isinstance(n, (ast.Compare, ast.Call)) for n in ast.walk(a.test))
        assert tests_something and names & computed, f"{name}: `assert {ast.unparse(a.test)}` reads no result"


def test_the_contract_rejects_assertions_that_cannot_fail():
    with pytest.raises(AssertionError, match="reads no result"):
        _assertions_can_fail("assert True\nassert 1 < 2\nassert len([]) == 0", "x = 1", "t")
    with pytest.raises(AssertionError, match="fewer than three"):
        _assertions_can_fail("with book.claims(profile):\n    assert gain > 0", "gain = 1", "t")
    _assertions_can_fail("assert gain > 0\nassert a < b\nassert ok(gain)", "gain = 1\na, b = 1, 2", "t")


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


def test_no_page_cites_a_file_outside_the_book():
    """Chapters cite papers and their code; the developers' notes beside the repository are not
    part of the book (a reader of the site or of a clone cannot follow a link to them)."""
    pages = NOTEBOOKS + sorted((ROOT / "book").glob("*.md")) + [ROOT / "README.md"]
    outside = [p.name for p in pages if any(ref in p.read_text() for ref in ("../shared", "methods.md", "methods-next.md",
                                                                              "DESIGN.md"))]
    assert not outside, f"cites files outside the book: {outside}"
