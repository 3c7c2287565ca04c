"""What a chapter's first cells do in Colab, run here with a fake ``google.colab`` and no network."""
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from IPython.core.inputtransformer2 import TransformerManager

from clipnotes import __version__, book
from clipnotes.profiles import get_profile, resolve_profile_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _code(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _run_launch_cell(source, monkeypatch, drive=False):
    """Execute the first cell as IPython would in Colab: returns the %pip lines and the Drive mounts."""
    magics, mounts = [], []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounts.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: magics.append((name, line)))
    if drive:
        source = source.replace("CACHE_ON_DRIVE = False", "CACHE_ON_DRIVE = True")
    namespace = {"get_ipython": lambda: shell}
    exec(TransformerManager().transform_cell(source), namespace)
    return magics, mounts, namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_installs_this_release_and_can_keep_the_cache_on_drive(path, monkeypatch):
    monkeypatch.delenv("CLIPNOTES_CACHE", raising=False)
    first = _code(path)[0]
    magics, mounts, ns = _run_launch_cell(first, monkeypatch)
    assert magics == [("pip", f"install -q git+{REPO}@v{__version__}")] and mounts == []
    magics, mounts, ns = _run_launch_cell(first, monkeypatch, drive=True)
    assert mounts == ["/content/drive"]
    import os
    assert os.environ["CLIPNOTES_CACHE"].startswith("/content/drive/")
    assert json.loads(path.read_text())["metadata"]["accelerator"] == "GPU"
    if "PROFILE" in ns:                                   # chapter 0 is mini-only and has no profile field
        assert ns["PROFILE"] == "auto" and "book.setup(PROFILE)" in _code(path)[1]


def test_outside_colab_the_first_cell_installs_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    magics = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: magics.append(name))
    exec(TransformerManager().transform_cell(_code(NOTEBOOKS[1])[0]), {"get_ipython": lambda: shell})
    assert magics == []


def test_auto_picks_paper_on_a_gpu_and_mini_elsewhere(monkeypatch, capsys):
    monkeypatch.delenv("CLIPNOTES_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile_name("auto") == "paper"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile_name("auto") == "mini" and resolve_profile_name(None) == "mini"
    book.setup("auto")
    assert "PROFILE = 'auto' chose mini: no CUDA GPU here" in capsys.readouterr().out
    monkeypatch.setenv("CLIPNOTES_PROFILE", "mini")             # make test and CI pin the profile
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile_name("auto") == "mini" and resolve_profile_name("paper") == "paper"
    assert get_profile("auto").name == "mini"


def test_every_notebook_agrees_with_the_one_source(tmp_path):
    for part in ("_config.yml", "notebooks"):
        (shutil.copytree if part == "notebooks" else shutil.copy)(ROOT / part, tmp_path / part)
    assert book.sync_notebooks(tmp_path) == [], "run `python -m clipnotes sync-notebooks` and commit"
    assert book.install_ref() == f"v{__version__}"


def test_glued_numbers_are_printed_where_myst_is_not_rendered(monkeypatch, capsys):
    monkeypatch.delenv("CLIPNOTES_SITE", raising=False)
    book.glue("gain", 0.123456)
    book.glue("label", "+1.2")
    assert capsys.readouterr().out == "gain = 0.1235\nlabel = +1.2\n"
    monkeypatch.setenv("CLIPNOTES_SITE", "1")                     # the website renders them inline instead
    book.glue("gain", 0.5)
    assert capsys.readouterr().out == ""


def test_a_t4_trains_in_fp16_with_a_scaler_and_ampere_in_bf16(monkeypatch):
    """Colab's T4 emulates bf16 (slowly) though is_bf16_supported() says yes: fp16 + GradScaler there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    t4 = get_profile("paper")
    assert t4.precision == "fp16" and t4.fp16_scaler
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    a100 = get_profile("paper")
    assert a100.precision == "bf16" and not a100.fp16_scaler and not get_profile("mini").fp16_scaler


def _workflow_step(name_starts: str) -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    return next(s["run"] for s in steps if s.get("name", "").startswith(name_starts))


@pytest.mark.parametrize("tag, passes", [(f"v{__version__}", True), ("v99.0.0", False), ("main", False)])
def test_the_release_workflow_accepts_only_the_packages_own_tag(tag, passes):
    """The Pages workflow's tag check, run as GitHub would: the install cells follow __version__."""
    check = _workflow_step("Check that this tag")
    done = subprocess.run(["bash", "-c", check], cwd=ROOT, env={**os.environ, "GITHUB_REF_NAME": tag})
    assert (done.returncode == 0) == passes


def test_the_release_workflow_points_the_buttons_at_the_tag(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    point = _workflow_step("Point the Colab and repository buttons")
    subprocess.run(["bash", "-c", point], cwd=tmp_path, env={**os.environ, "GITHUB_REF_NAME": "v7.7.7"}, check=True)
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["repository"]["branch"] == "v7.7.7"
