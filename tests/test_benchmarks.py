"""The GPU check (benchmarks/gpu_check.py) runs every chapter's row at a tiny size, on the pretend GPU
(clipnotes.pretend_gpu): every chapter's heavy package function, with its tensors kept on one device."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_chapter_at_a_tiny_size_on_a_pretend_gpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check                 # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    rows = gpu_check.main(["--tiny", "--device", "pretend-gpu"])
    chapters = {c.strip() for r in rows for c in r.chapter.replace("-", ",").split(",")}
    assert {f"{c:02d}" for c in range(2, 14)} <= chapters, chapters
    assert all(r.seconds > 0 and r.precision == "fp32" for r in rows)
    out = capsys.readouterr().out
    assert "peak GiB" in out and "total" in out and out.startswith("pretend GPU")


def test_coop_epoch_benchmark_times_coop_and_cocoop(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("coop_epoch", ROOT / "benchmarks" / "coop_epoch.py")
    coop_epoch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coop_epoch)
    monkeypatch.setattr(sys, "argv", ["coop_epoch", "--model", "clipnotes-mini", "--classes", "3", "--shots", "2",
                                      "--batch", "4", "--epochs", "1", "--device", "cpu"])
    coop_epoch.main()
    out = capsys.readouterr().out
    assert "cached features" in out and "CoCoOp, cached, batch 1" in out
