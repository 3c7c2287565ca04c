import os
import subprocess
import sys
import textwrap

import pytest
import torch

from clipnotes import features as FE
from clipnotes import world as W
from clipnotes.models import create_mini
from clipnotes.utils import atomic_path, save_torch


@pytest.fixture(autouse=True)
def _fresh_memory():
    FE.clear_memory()
    yield
    FE.clear_memory()


def test_features_are_cached_and_reused(tmp_path, monkeypatch):
    b = create_mini("shipped")
    ds = W.World(0).dataset("test", 40)
    first = FE.encode_dataset(b, ds, cache_dir=tmp_path, batch_size=16)
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1 and first.features.shape == (40, 128)
    assert torch.allclose(first.features.norm(dim=1), torch.ones(40), atol=1e-4)
    FE.clear_memory()
    # a second call must not encode anything
    monkeypatch.setattr(b.model, "encode_image", lambda *a, **k: pytest.fail("cache miss"))
    second = FE.encode_dataset(b, ds, cache_dir=tmp_path, batch_size=16)
    assert torch.equal(first.features, second.features)


def test_cache_key_separates_data_and_weights(tmp_path):
    b = create_mini("shipped")
    FE.encode_dataset(b, W.World(0).dataset("test", 8), cache_dir=tmp_path)
    FE.encode_dataset(b, W.World(1).dataset("test", 8), cache_dir=tmp_path)
    FE.encode_dataset(create_mini(None), W.World(0).dataset("test", 8), cache_dir=tmp_path)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 3


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    b = create_mini("shipped")
    ds = W.World(0).dataset("test", 8)
    good = FE.encode_dataset(b, ds, cache_dir=tmp_path)
    (path,) = (tmp_path / "features").glob("*.pt")
    path.write_bytes(b"garbage")
    FE.clear_memory()
    again = FE.encode_dataset(b, ds, cache_dir=tmp_path)
    assert torch.allclose(good.features, again.features)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_file(tmp_path):
    """A process killed in the middle of a save never leaves a partial file at the target path."""
    target = tmp_path / "big.pt"
    code = textwrap.dedent(f"""
        import os, signal, torch
        import clipnotes.utils as U
        from pathlib import Path
        real = Path.write_bytes
        def dying_write(self, data):
            real(self, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        Path.write_bytes = dying_write
        U.save_torch({{"x": torch.zeros(1000)}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode != 0
    assert not target.exists()
    save_torch({"x": torch.ones(3)}, target)            # and a normal save works
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(3))


def test_cli_doctor_is_clean():
    env = dict(os.environ, CLIPNOTES_PROFILE="mini")
    out = subprocess.run([sys.executable, "-m", "clipnotes", "doctor"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all good" in out.stdout and "PROBLEM" not in out.stdout


def test_cli_reports_bad_profile_on_one_line():
    env = dict(os.environ, CLIPNOTES_PROFILE="huge")
    out = subprocess.run([sys.executable, "-m", "clipnotes", "doctor"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "unknown profile 'huge'" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_glue_turns_numpy_scalars_into_python_numbers(monkeypatch):
    import numpy as np
    myst_nb = pytest.importorskip("myst_nb", reason="the book's stack (make bounds installs the package's only)")
    from clipnotes import book
    seen = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: seen.update({name: value}))
    book.glue("x", np.float64(0.25))
    book.glue("t", torch.tensor(3))
    assert type(seen["x"]) is float and seen["x"] == 0.25 and seen["t"] == 3


def test_an_unwritable_cache_is_one_line_before_any_encoding(tmp_path, monkeypatch):
    from clipnotes.utils import ClipnotesError
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    calls = []
    b = create_mini("shipped")
    monkeypatch.setattr(b, "encode_images", lambda *a, **k: calls.append(1))
    with pytest.raises(ClipnotesError, match="set CLIPNOTES_CACHE"):
        FE.encode_dataset(b, W.World(0).dataset("test", 8), cache_dir=blocked / "cache")
    assert calls == []


def test_doctor_survives_a_bad_seed(monkeypatch, capsys):
    from clipnotes.__main__ import main
    monkeypatch.setenv("CLIPNOTES_SEED", "abc")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "CLIPNOTES_SEED='abc' is not an integer" in out and "mini checkpoint" in out


def test_doctor_reports_an_unwritable_cache_on_one_line(tmp_path, monkeypatch, capsys):
    from clipnotes.__main__ import main
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CLIPNOTES_CACHE", str(blocker / "cache"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "set CLIPNOTES_CACHE to a writable folder" in out
