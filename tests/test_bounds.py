"""The dependency lower bounds are the versions `make bounds` tests (issue 21)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dependencies() -> list[str]:
    """pyproject's ``dependencies``, as written (``"torch>=2.4.1"``, …)."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.findall(r'"([^"]+)"', re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1))


def _pyproject_bounds() -> dict[str, str]:
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d).groups() for d in _dependencies())


def _pinned_minima() -> dict[str, str]:
    lines = (ROOT / "requirements-min.txt").read_text().splitlines()
    return dict(l.split("==") for l in lines if l and not l.startswith("#"))


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_every_lower_bound_is_pinned_in_requirements_min():
    bounds = {k: _release(v) for k, v in _pyproject_bounds().items()}
    assert len(bounds) >= 10, bounds
    assert bounds == {k: _release(v) for k, v in _pinned_minima().items()}


def test_every_dependency_has_a_lower_bound():
    deps = _dependencies()
    assert all(">=" in d for d in deps), deps
