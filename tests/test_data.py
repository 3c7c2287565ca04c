"""`paper` dataset loaders on small fake copies written in the real on-disk formats."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from clipnotes import data as D, fakes, tasks
from clipnotes.profiles import get_profile
from clipnotes.utils import ClipnotesError


@pytest.fixture
def no_md5(monkeypatch):
    """Fake files cannot match torchvision's md5 sums; check existence instead."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.exists(path))


@pytest.mark.parametrize("name,n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_fake_cifar_loads_through_torchvision(tmp_path, no_md5, name, n_classes):
    fakes.write_fake_cifar(tmp_path, name, n_train=25, n_test=7)
    test = D.cifar(name, tmp_path, train=False)
    train = D.cifar(name, tmp_path, train=True)
    assert len(test) == 7 and len(train) == 25
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and 0 <= y < n_classes
    assert len(test.classnames) == n_classes
    batches = list(train.batches(10))
    assert [len(b[0]) for b in batches] == [10, 10, 5]


def test_missing_cifar_says_what_to_do(tmp_path):
    with pytest.raises(ClipnotesError, match="CLIPNOTES_DOWNLOAD=1"):
        D.cifar("cifar10", tmp_path / "nothing")
    with pytest.raises(ClipnotesError, match="unknown CIFAR"):
        D.cifar("cifar11", tmp_path)


def test_paper_benchmarks_use_cifar_with_templates(tmp_path, no_md5, monkeypatch):
    for name in ("cifar10", "cifar100"):
        fakes.write_fake_cifar(tmp_path, name, n_train=10, n_test=5)
    monkeypatch.setenv("CLIPNOTES_DATA", str(tmp_path))
    benches = tasks.zero_shot_benchmarks(get_profile("paper", check=False))
    assert [b.name for b in benches] == ["CIFAR-10", "CIFAR-100"]
    assert len(benches[0].templates) == 18 and all("{}" in t for t in benches[0].templates)
    assert len(benches[1].classnames) == 100 and len(benches[0].train) == 10


def test_cifar10_shifts_load_from_their_npy_files(tmp_path):
    fakes.write_fake_cifar10_shifts(tmp_path, n=9)
    for name in ("cifar10.1", "CIFAR-10.2"):
        ds = D.cifar10_shift(name, tmp_path)
        assert len(ds) == 9 and ds.classnames == D.CIFAR10_CLASSNAMES
        assert ds[3][0].shape == (3, 32, 32)


def test_cifar10_shift_errors_are_one_line(tmp_path):
    with pytest.raises(ClipnotesError, match="copy cifar10.1_v6_data.npy"):
        D.cifar10_shift("cifar10.1", tmp_path)
    with pytest.raises(ClipnotesError, match="unknown CIFAR-10 shift"):
        D.cifar10_shift("cifar10.3", tmp_path)
    (tmp_path / "CIFAR-10.2").mkdir()
    np.save(tmp_path / "CIFAR-10.2" / "cifar102_test.npy", np.zeros(3))
    with pytest.raises(ClipnotesError, match="expected format"):
        D.cifar10_shift("cifar10.2", tmp_path)


def test_few_shot_indices_are_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    a = tasks.few_shot_indices(labels, 3, seed=1)
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(a, tasks.few_shot_indices(labels, 3, seed=1))
    assert not np.array_equal(a, tasks.few_shot_indices(labels, 3, seed=2))


def test_finetune_benchmark_paper_reads_cifar10_and_its_shifts(tmp_path, no_md5, monkeypatch):
    fakes.write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=6)
    fakes.write_fake_cifar10_shifts(tmp_path, n=4)
    monkeypatch.setenv("CLIPNOTES_DATA", str(tmp_path))
    bench = tasks.finetune_benchmark(get_profile("paper", check=False))
    assert list(bench.eval_sets) == ["ID", "CIFAR-10.1", "CIFAR-10.2"] and bench.ood_names == ["CIFAR-10.1", "CIFAR-10.2"]
    assert len(bench.train) == 18 and len(bench.val) == 2 and len(bench.eval_sets["CIFAR-10.2"]) == 4
    assert len(bench.templates) == 18
    train_images = {bytes(x.numpy()) for x in bench.train.images(np.arange(18))}
    assert not train_images & {bytes(x.numpy()) for x in bench.val.images(np.arange(2))}   # soups' held-out split
    assert bench.captions == bench.templates            # every CIFAR template says "photo": all are FLYP captions


def test_finetune_benchmark_mini_has_id_and_five_ood_sets():
    bench = tasks.finetune_benchmark(get_profile("mini"), n_train=50, n_eval=20)
    assert bench.eval_sets["ID"] is not None and len(bench.ood_names) == 5
    assert len(bench.train) == 50 and all(len(d) == 20 for d in bench.eval_sets.values()) and len(bench.val) == 20
    assert bench.val.cache_key not in {bench.train.cache_key, bench.dataset.cache_key}
    assert set(bench.captions) < set(bench.templates)   # photos are not captioned "a sketch of a …"


def test_coop_split_loader_reads_coops_format(tmp_path):
    fakes.write_fake_coop(tmp_path, "EuroSAT", n_classes=4, per_split=2)
    train = D.coop_dataset("EuroSAT", tmp_path, "train", size=32)
    test = D.coop_dataset("EuroSAT", tmp_path, "test", size=32)
    assert len(train) == 8 and len(test) == 8
    assert train.classnames == [f"fake class {i}" for i in range(4)]
    x, y = train[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 1
    base, new = tasks.base_new_classes(len(train.classnames))
    assert (base, new) == ([0, 1], [2, 3])
    new_test = test.subset(new)
    assert new_test.classnames == ["fake class 2", "fake class 3"] and set(new_test.labels) == {0, 1}
    assert new_test.cache_key != test.cache_key
    batches = list(train.batches(5))
    assert [len(y) for _, y in batches] == [5, 3]
    assert torch.equal(torch.cat([x for x, _ in batches]), train.images(slice(None)))
    assert isinstance(train, D.ImageDataset)


def test_coop_and_pacs_loaders_say_what_to_do(tmp_path):
    with pytest.raises(ClipnotesError, match="DATASETS.md"):
        D.coop_dataset("DTD", tmp_path)
    with pytest.raises(ClipnotesError, match="unknown CoOp dataset"):
        D.coop_dataset("ImageNet", tmp_path)
    fakes.write_fake_coop(tmp_path, "DTD")
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text("{not json")
    with pytest.raises(ClipnotesError, match="not a CoOp split file"):
        D.coop_dataset("DTD", tmp_path)
    with pytest.raises(ClipnotesError, match="PACS is not in"):
        D.pacs(tmp_path, "photo")
    with pytest.raises(ClipnotesError, match="unknown PACS domain"):
        D.pacs(tmp_path, "clipart")


def test_pacs_folder_loader(tmp_path):
    fakes.write_fake_pacs(tmp_path, classes=("dog", "elephant", "guitar"), per_class=2)
    ds = D.pacs(tmp_path, "sketch", size=24)
    assert ds.classnames == ["dog", "elephant", "guitar"] and list(ds.labels) == [0, 0, 1, 1, 2, 2]
    x, _ = ds[5]
    assert x.shape == (3, 24, 24)
    (tmp_path / "PACS" / "sketch" / "dog" / "0.jpg").write_bytes(b"not an image")
    with pytest.raises(ClipnotesError, match="cannot read image"):
        ds[0]


def test_clap_benchmark_mini_holds_out_source_photos_and_a_balanced_pool():
    from clipnotes import world as W
    bench = tasks.clap_benchmark(get_profile("mini", seed=1), n_val=50, shots_pool=2)
    assert set(bench.val.factors.named("domain")) == {"photo"} and len(bench.val) == 50
    assert bench.val.split.name != bench.dataset.split.name                 # another stream than the test set
    pool = pd.crosstab(np.asarray(bench.train.factors.named("domain")), bench.train.labels)
    assert pool.shape == (len(W.DOMAINS), len(W.CLASSNAMES)) and (pool.values == 2).all()
    assert len(bench.groups) == len(bench.dataset)
    images = bench.val.images(np.array([0, 3]))
    assert images.dtype == torch.uint8 and images.shape[0] == 2


def test_draw_seeds_never_collide_across_run_seeds_and_refuse_draws_past_the_rule():
    seeds = {tasks.draw_seed(s, d) for s in range(5) for d in range(1000)}
    assert len(seeds) == 5 * 1000                      # seed 1's draw 0 is not seed 0's draw 100
    assert tasks.draw_seed(0, 0) == 0 and tasks.draw_seed(2, 7) == 2007
    with pytest.raises(ClipnotesError, match="draws are numbered 0 to 999"):
        tasks.draw_seed(0, 1000)
