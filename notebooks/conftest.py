"""Keep the execution nbval does, so the site is built from it instead of executing again.

With ``CLIPNOTES_EXECUTED=DIR`` set (``make test`` and ``make book`` set it), every notebook
nbval runs is written to ``DIR/notebooks/<name>.ipynb`` with the outputs its cells produced,
and ``DIR/times.json`` records each chapter's wall time, its slowest cells, and whether
the run started from an empty cache (cold) or not (warm). A plain ``pytest --nbval`` writes
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
_CELLS: dict[str, list[tuple[int, float, str]]] = {}
_CACHE_STATE: list[str] = []


def pytest_sessionstart(session):
    """Note whether the run starts from an empty cache (cold) or reuses one (warm)."""
    if _target() is None:
        return
    from clipnotes.profiles import default_cache_dir

    cache = Path(os.environ.get("CLIPNOTES_CACHE") or default_cache_dir())
    _CACHE_STATE.append("warm" if any((cache / d).exists() for d in ("features", "finetune")) else "cold")


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
    cell_started = time.time()
    outcome = yield
    first_line = item.cell.source.strip().split("\n")[0][:70]
    cells = _CELLS.setdefault(name, [])
    cells.append((len(cells), round(time.time() - cell_started, 1), first_line))
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = len(cells)
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
        slowest = sorted(_CELLS.get(name, []), key=lambda c: -c[1])[:3]
        times[Path(name).stem] = {"seconds": round(_SECONDS[name], 1), "failed_cells": _FAILED.get(name, 0),
                                  "cache": _CACHE_STATE[0] if _CACHE_STATE else "unknown",
                                  "slowest_cells": [{"code_cell": i, "seconds": t, "starts": src} for i, t, src in slowest],
                                  "seed": os.environ.get("CLIPNOTES_SEED", "0"),
                                  "profile": os.environ.get("CLIPNOTES_PROFILE", "mini")}
    tmp = times_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, times_path)
