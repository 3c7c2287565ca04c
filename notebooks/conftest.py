"""Keep the execution nbval does, so the site is built from it instead of executing again.

With ``CLIPNOTES_EXECUTED=DIR`` set (``make test`` and ``make book`` set it), every notebook
nbval runs is written to ``DIR/notebooks/<name>.ipynb`` with the outputs its cells produced,
and ``DIR/times.json`` records each chapter's wall time. A plain ``pytest --nbval`` writes
nothing. Files are written atomically.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

_STARTED: dict[str, float] = {}
_SECONDS: dict[str, float] = {}
_FILES: dict[str, object] = {}
_FAILED: dict[str, int] = {}


def _target() -> Path | None:
    raw = os.environ.get("CLIPNOTES_EXECUTED")
    return Path(raw) if raw else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    nb = getattr(item, "parent", None)
    name = str(getattr(nb, "fspath", ""))
    if _target() is None or not hasattr(item, "test_outputs") or not name.endswith(".ipynb"):
        yield
        return
    _STARTED.setdefault(name, time.time())
    _FILES[name] = nb
    outcome = yield
    count = _SECONDS.get(name + "#n", 0) + 1
    _SECONDS[name + "#n"] = count
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = count
    _SECONDS[name] = time.time() - _STARTED[name]
    if outcome.excinfo is not None:
        _FAILED[name] = _FAILED.get(name, 0) + 1


def pytest_sessionfinish(session):
    target = _target()
    if target is None or not _FILES:
        return
    (target / "notebooks").mkdir(parents=True, exist_ok=True)
    times_path = target / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for name, nb_file in _FILES.items():
        path = target / "notebooks" / Path(name).name
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb_file.nb, str(tmp))
        os.replace(tmp, path)
        times[Path(name).stem] = {"seconds": round(_SECONDS[name], 1), "failed_cells": _FAILED.get(name, 0),
                                  "seed": os.environ.get("CLIPNOTES_SEED", "0"),
                                  "profile": os.environ.get("CLIPNOTES_PROFILE", "mini")}
    tmp = times_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, times_path)
