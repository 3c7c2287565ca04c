"""Break a chapter's method on purpose and check that its claims cell fails (issue 16).

An assertion that passes whatever the method does proves nothing. Each mutation below
inserts one cell after a chapter's setup cell that breaks the method the chapter is about
(the code path stays the same), executes the chapter, and checks that it stops with an
``AssertionError`` in the cell holding ``book.claims``. The unbroken chapters pass under
nbval in ``make test``; this is their counterpart. Not part of ``make test`` (each mutation
executes a chapter, a few minutes on a CPU); run it with ``make break-claims``.

    python tests/break_claims.py [NAME ...]     # default: every mutation
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass(frozen=True)
class Mutation:
    notebook: str
    what: str
    patch: str                      # a code cell inserted right after the chapter's setup cell
    claims: dict[str, str]          # {the chapter's claim label: the expression of its Gap}


MUTATIONS = {
    "coop-never-learns": Mutation(
        "04_coop", "CoOp's context never moves (learning rate 0): it stays the hand prompt's words",
        "import clipnotes.coop\n"
        "clipnotes.coop.coop_lr = lambda bundle, lr=0.002: 0.0\n"
        "coop_lr = clipnotes.coop.coop_lr",
        {"CoOp minus hand prompt, 16 shots": "coop_gaps[16]"}),
    "finetune-never-learns": Mutation(
        "05_wise_ft", "fine-tuning at learning rate 0: the fine-tuned model is the zero-shot one",
        "_recipe = recipe\n"
        "recipe = lambda profile, loss='ce', **kw: _recipe(profile, loss, **{**kw, 'lr': 0.0})",
        {"fine-tuned minus zero-shot, ID": "id_gap"}),
    "carft-beta-0": Mutation(
        "07_car_ft", "CAR-FT with beta = 0: its context regulariser switched off",
        "_recipe = recipe\n"
        "recipe = lambda profile, loss='ce', **kw: _recipe(\n"
        "    profile, loss, **({**kw, 'carft_beta': 0.0} if loss == 'carft' else kw))",
        {"context KL, CE minus CAR-FT (nats)": "kl_gap", "CAR-FT minus CE, mean OOD": "carft_ood"}),
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _broken(mutation: Mutation) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{mutation.notebook}.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "book.setup(" in c.source)
    nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(f"# BROKEN ON PURPOSE: {mutation.what}\n{mutation.patch}"))
    return nb


@dataclass
class Outcome:
    caught: bool                    # an AssertionError in the chapter's claims cell
    detail: str                     # where it stopped, and on which assert
    claims: dict[str, tuple[float, float]]   # the broken run's claimed gaps: (difference, margin)


def run(name: str) -> Outcome:
    """Execute one broken chapter cell by cell, up to the first error, and read its claims' gaps."""
    mutation = MUTATIONS[name]
    nb = _broken(mutation)
    client = NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        failed = None
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except CellExecutionError:
                failed = cell
                break
        probe = nbformat.v4.new_code_cell("print(repr([(float(g.diff), float(g.margin)) for g in ["
                                          + ", ".join(mutation.claims.values()) + "]]))")
        nb.cells.append(probe)
        try:
            client.execute_cell(probe, len(nb.cells) - 1)
        except CellExecutionError:        # stopped before the gaps were computed
            pass
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
    gaps = dict(zip(mutation.claims, ast.literal_eval(text.strip()))) if text.strip() else {}
    if failed is None:
        return Outcome(False, "the chapter passed: its claims did not notice the broken method", gaps)
    error = next(o for o in failed.outputs if o.get("output_type") == "error")
    in_claims = "book.claims" in failed.source
    where = "its claims cell" if in_claims else "another cell"
    return Outcome(in_claims and error.get("ename") == "AssertionError",
                   f"{error.get('ename')} in {where}, at `{_failing_line(error)}`", gaps)


def _failing_line(error: dict) -> str:
    """The source line the traceback's arrow points at."""
    for frame in error.get("traceback", []):
        for row in _ANSI.sub("", frame).splitlines():
            arrow = re.match(r"^\s*-+>\s*\d*\s*(.*)$", row)   # "---->  5 ..." or "---> 10 ..."
            if arrow:
                return arrow.group(1).strip()
    return "?"


def _gap(label: str, gap: tuple[float, float] | None) -> str:
    if gap is None:
        return "not run"
    if "(nats)" in label:
        return f"{gap[0]:+.3f} ± {gap[1]:.3f} nats"
    return f"{100 * gap[0]:+.1f} ± {100 * gap[1]:.1f} points"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"mutations to run (default: all): {', '.join(MUTATIONS)}")
    names = parser.parse_args(argv).names or list(MUTATIONS)
    unknown = sorted(set(names) - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; choose from {', '.join(MUTATIONS)}")
    missed = 0
    for name in names:
        t0, mutation = time.time(), MUTATIONS[name]
        outcome = run(name)
        missed += not outcome.caught
        print(f"{'caught' if outcome.caught else 'MISSED'}  {name} ({mutation.notebook}, {time.time() - t0:.0f} s): "
              f"{mutation.what}\n    {outcome.detail}", flush=True)
        real = _real_claims(mutation.notebook)
        for label in mutation.claims:
            print(f"    {label}: broken {_gap(label, outcome.claims.get(label))}, "
                  f"real run {_gap(label, real.get(label))}")
    return 1 if missed else 0


def _real_claims(chapter: str) -> dict[str, tuple[float, float]]:
    """The unbroken chapter's claimed gaps from its results file, where it has run here."""
    from clipnotes import book, profiles

    saved = book.load_results(profiles.get_profile(), chapter) or {}
    return {k: (v["diff"], v["margin"]) for k, v in saved.get("claims", {}).items()}


if __name__ == "__main__":
    sys.exit(main())
