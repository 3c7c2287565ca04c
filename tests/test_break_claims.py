"""The mutations of tests/break_claims.py land where they break something (issue 16)."""
import ast
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="the book's stack (make bounds installs the package's only)")
sys.path.insert(0, str(Path(__file__).parent))
import break_claims  # noqa: E402


def test_each_mutation_follows_its_chapters_setup_and_rebinds_what_the_chapter_calls():
    for name, mutation in break_claims.MUTATIONS.items():
        nb = break_claims._broken(mutation)
        at = next(i for i, c in enumerate(nb.cells) if "BROKEN ON PURPOSE" in c.source)
        assert "book.setup(" in nb.cells[at - 1].source, name
        rebound = {t.id for node in ast.walk(ast.parse(nb.cells[at].source))
                   if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
        later = "\n".join(c.source for c in nb.cells[at + 1:] if c.cell_type == "code")
        assert any(f"{n}(" in later for n in rebound - {"_recipe"}), (name, rebound)
        claims = [c for c in nb.cells[at + 1:] if "book.claims" in c.source]
        assert len(claims) == 1 and "assert" in claims[0].source, name


def test_an_unknown_mutation_is_one_line_of_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        break_claims.main(["no-such"])
    assert stop.value.code == 2
    assert "unknown mutation(s) ['no-such']" in capsys.readouterr().err
