"""The paper check: `paper` at random weights on fake data in the real formats (``make test-paper``)."""
import pytest
import torch

from clipnotes import book, tasks
from clipnotes.data import cifar
from clipnotes.profiles import get_profile
from clipnotes.utils import ClipnotesError


@pytest.fixture
def check(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPNOTES_PAPER_CHECK", "1")
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path))
    return get_profile("paper")


def test_the_paper_check_is_paper_on_the_cpu_at_random_weights(check, tmp_path):
    assert check.name == "paper" and check.device == "cpu" and check.precision == "fp32"
    assert check.random_weights and check.model == "ViT-B-32-quickgelu" and check.frozen_model == "ViT-B-16-quickgelu"
    assert check.cache_dir == tmp_path / "paper-check"          # never mixed with a real paper run's cache
    assert not get_profile("mini").random_weights
    # runs that depend on the mini world alone (chapter 1's pretraining) are shared with the mini run
    assert check.world_cache_dir == get_profile("mini").world_cache_dir == get_profile("mini").cache_dir == tmp_path


def test_setup_writes_fake_data_that_every_benchmark_loads(check, monkeypatch, capsys):
    monkeypatch.setenv("CLIPNOTES_PROFILE", "paper")
    prof = book.setup()
    assert "PAPER CHECK" in capsys.readouterr().out
    assert [b.name for b in tasks.zero_shot_benchmarks(prof)] == ["CIFAR-10", "CIFAR-100"]
    ft = tasks.finetune_benchmark(prof)
    assert set(ft.ood_names) == {"CIFAR-10.1", "CIFAR-10.2"} and len(ft.train) > 0
    assert len(tasks.few_shot_benchmark(prof).train) > 0
    assert len(tasks.clap_benchmark(prof).val) > 0
    with pytest.raises(ClipnotesError, match="not in"):          # a real load still checks torchvision's md5
        cifar("cifar10", prof.data_dir)


def test_fake_data_written_at_other_sizes_is_written_again(tmp_path, monkeypatch):
    from clipnotes import fakes
    fakes.write_paper_check_data(tmp_path)
    stamp = (tmp_path / ".complete").read_text()
    monkeypatch.setitem(fakes.PAPER_CHECK_SIZES, "cifar_test", fakes.PAPER_CHECK_SIZES["cifar_test"] + 1)
    fakes.write_paper_check_data(tmp_path)
    assert (tmp_path / ".complete").read_text() != stamp     # a stale copy would hide a size-dependent bug


def test_claims_are_checked_except_at_random_weights(check, capsys):
    mini = get_profile("mini")
    with pytest.raises(AssertionError):
        with book.claims(mini):
            assert 1 > 2
    with book.claims(mini):
        assert 2 > 1
    assert "all claims hold" in capsys.readouterr().out
    with book.claims(check):
        assert 1 > 2
    assert "NOT CHECKED" in capsys.readouterr().out


def test_random_weights_are_seeded_and_leave_the_global_stream_alone(check):
    from clipnotes.models import load_model
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_model(check)
    assert torch.equal(torch.rand(3), expected)
    b = load_model(check)
    assert a.pretrained == f"random-{check.seed}"
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


def test_doctor_paper_says_what_each_chapter_lacks(tmp_path, monkeypatch, capsys):
    from clipnotes import fakes
    from clipnotes.__main__ import main
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIPNOTES_DATA", str(tmp_path / "data"))
    fakes.write_fake_pacs(tmp_path / "data")
    assert main(["doctor", "--paper"]) == 1                      # no GPU, nothing downloaded
    out = capsys.readouterr().out
    assert "no CUDA GPU" in out
    assert "chapter 05 (paper)     cifar10, cifar10-shifts, weights ViT-B-32-quickgelu: python -m clipnotes download 5" in out
    assert "chapter 08 (paper)     weights ViT-B-16-quickgelu: python -m clipnotes download 8" in out   # PACS is there
