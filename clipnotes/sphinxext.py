"""A Sphinx extension for the site `make book` builds: the results page is filled from the
results files that the build's own execution of the chapters wrote (and `make seeds` before it).

`make test` fills the page itself (``book.assemble_site``); this does the same for a build that
executes the chapters, by reading the page after every chapter, on every build.
"""
from __future__ import annotations

from pathlib import Path

from .book import RESULTS_MARK, default_results_dir, results_page

RESULTS_DOC = "book/results"


def _read_results_last(app, env, docnames: list[str]) -> None:
    """Read the results page after the chapters (they write the files it shows), and on every
    build, since its source does not change when the results do."""
    if RESULTS_DOC in env.found_docs:
        if RESULTS_DOC in docnames:
            docnames.remove(RESULTS_DOC)
        docnames.append(RESULTS_DOC)


def _fill_results(app, docname: str, source: list[str]) -> None:
    if docname == RESULTS_DOC and RESULTS_MARK in source[0]:
        source[0] = source[0].replace(RESULTS_MARK, results_page(default_results_dir(), Path(app.srcdir) / "notebooks"))


def setup(app) -> dict:
    app.connect("env-before-read-docs", _read_results_last)
    app.connect("source-read", _fill_results)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
