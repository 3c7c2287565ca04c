"""The `paper` code paths of chapters 2, 3 and 5–7, end to end on random-init ViT-B/32 and fake data.

Real open_clip architectures (no weights are downloaded) and small fake copies of the
datasets in their real on-disk formats: what a Colab reader runs, minus the GPU and the
pretrained weights.
"""
import os

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from clipnotes import data as D, fakes, tasks
from clipnotes.classifiers import zero_shot_classifier
from clipnotes.evaluate import EvalSets, accuracy, logits
from clipnotes.features import encode_dataset
from clipnotes.finetune import finetune, recipe
from clipnotes.models import create_paper
from clipnotes.profiles import get_profile
from clipnotes.wise import wise_sweep
from clipnotes.zeroshot import zero_shot_head


@pytest.fixture(scope="module")
def vit_b32():
    torch.manual_seed(0)
    return create_paper("ViT-B-32-quickgelu", pretrained=None)


@pytest.fixture
def paper(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.exists(path))
    fakes.write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    fakes.write_fake_cifar(tmp_path, "cifar100", n_train=10, n_test=4)
    fakes.write_fake_cifar10_shifts(tmp_path, n=3)
    monkeypatch.setenv("CLIPNOTES_DATA", str(tmp_path))
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path / "cache"))
    return get_profile("paper", check=False)


def test_zero_shot_chapter_path(paper, vit_b32):
    bench = tasks.zero_shot_benchmarks(paper)[0]
    head = zero_shot_head(vit_b32, bench.classnames, bench.templates)
    assert head.shape == (vit_b32.model.text_projection.shape[1], 10)
    feats = encode_dataset(vit_b32, bench.dataset, paper.cache_dir, batch_size=2)
    assert feats.features.shape[0] == 4 and torch.allclose(feats.features.norm(dim=-1), torch.ones(4), atol=1e-4)
    again = encode_dataset(vit_b32, bench.dataset, paper.cache_dir, batch_size=2)       # a cache hit
    assert torch.equal(again.features, feats.features)
    assert 0.0 <= accuracy(logits(feats.features, head), feats.labels) <= 1.0


def test_prompt_engineering_chapter_path(paper, vit_b32):
    from clipnotes.zeroshot import forward_selection, probability_ensemble, template_heads
    bench = tasks.zero_shot_benchmarks(paper)[0]
    feats = encode_dataset(vit_b32, bench.dataset, paper.cache_dir, batch_size=2)
    single = template_heads(vit_b32, bench.classnames, bench.pool[:3])
    history = forward_selection(single, feats.features, feats.labels, torch.arange(4) % 2 == 0)
    assert sorted(h["template"] for h in history) == sorted(bench.pool[:3])
    assert probability_ensemble(feats.features, list(single.values())).shape == (4, 10)


def test_wise_chapter_path(paper, vit_b32):
    bench = tasks.finetune_benchmark(paper)
    cfg = recipe(paper, "ce", steps=1, batch_size=2, warmup=1, threads=1)
    run = finetune(vit_b32, bench.train, bench.classnames, bench.templates[:2], cfg, quiet=True)
    changed = any(not torch.equal(a, b) for a, b in zip(run.start.state_dict().values(), run.end.state_dict().values()))
    assert changed, "one step of fine-tuning should move the weights"
    evals = EvalSets(vit_b32, bench.eval_sets, batch_size=2)
    rows = wise_sweep(run.start, run.end, evals.accuracy, alphas=(0.0, 1.0), progress_bar=False)
    assert [sorted(r) for r in rows] == [sorted(["alpha", "ID", "CIFAR-10.1", "CIFAR-10.2"])] * 2
    start = zero_shot_classifier(vit_b32, bench.classnames, bench.templates[:2])
    assert np.isclose(evals.accuracy(start)["ID"], rows[0]["ID"])


@pytest.mark.parametrize("loss", ["flyp", "carft"])
def test_flyp_and_carft_chapter_paths(paper, vit_b32, loss):
    from clipnotes.finetune import run_finetune
    from clipnotes.wise import sweep_run
    bench = tasks.finetune_benchmark(paper)
    bench.templates = bench.templates[:2]
    cfg = recipe(paper, loss, steps=1, batch_size=2, warmup=1, threads=1)
    run = run_finetune(paper, vit_b32, bench, cfg, quiet=True)
    assert run.run_dir is not None and (run.run_dir / "state.pt").exists()
    evals = EvalSets(vit_b32, bench.eval_sets, batch_size=2)
    rows = sweep_run(run, evals, alphas=(0.0, 0.5, 1.0))
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert set(rows[0]) == {"alpha", "ID", "CIFAR-10.1", "CIFAR-10.2"}
    start = zero_shot_classifier(vit_b32, bench.classnames, bench.templates, loss)
    assert np.isclose(evals.accuracy(start)["ID"], rows[0]["ID"])


def test_coop_chapter_path(paper, monkeypatch):
    """Chapters 4 and 11 in `paper`: EuroSAT from CoOp's split file, ViT-B/16 features cached, CoOp and CoCoOp on them."""
    from clipnotes import coop
    fakes.write_fake_coop(paper.data_dir, "EuroSAT", n_classes=4, per_split=2)
    bench = tasks.few_shot_benchmark(paper, "EuroSAT")
    assert bench.templates == ["a centered satellite photo of {}."] and len(bench.classnames) == 4
    torch.manual_seed(0)
    vit_b16 = create_paper("ViT-B-16-quickgelu", pretrained=None)
    pool = encode_dataset(vit_b16, bench.train, paper.cache_dir, batch_size=4)
    test = encode_dataset(vit_b16, bench.dataset, paper.cache_dir, batch_size=4)
    assert coop.coop_lr(vit_b16) == pytest.approx(0.002 * 100 / vit_b16.model.logit_scale.exp().item())
    monkeypatch.setattr(coop, "COOP_EPOCHS", {1: 2})                 # two epochs: the path, not the result
    curves = coop.few_shot_curves(vit_b16, pool, test, bench.classnames, bench.templates[0], shots=(1,), draws=1,
                                     variants={"CoOp": dict(init="a photo of a")})
    assert set(curves.method) == {"hand prompt", "linear probe", "CoOp"}
    b2n = coop.base_to_new(vit_b16, pool, test, bench.classnames, bench.templates[0], shots=1, draws=1, max_epochs=1,
                           methods=("CoOp", "CoCoOp"))                     # chapter 11: CoCoOp on ViT-B/16
    assert b2n[["base", "new", "H"]].notna().all().all() and list(b2n.method) == ["hand prompt", "CoOp", "CoCoOp"]


def test_clap_chapter_path(paper):
    """Chapter 8 in `paper`: PACS from its folders, a fifth of the photos held out, ViT-B/16, CLAP end to end."""
    from clipnotes import clap
    from clipnotes.attacks import robust_accuracy
    fakes.write_fake_pacs(paper.data_dir, per_class=5)
    bench = tasks.clap_benchmark(paper)
    assert bench.classnames == ["dog", "elephant", "guitar"] and len(bench.val) == 3
    assert len(bench.dataset) + len(bench.train) == 4 * 15 - 3 and len(bench.groups) == len(bench.dataset)
    assert not set(bench.val.paths) & set(bench.dataset.paths)
    assert not set(bench.train.paths) & (set(bench.dataset.paths) | set(bench.val.paths))   # the pool leaves the test
    pool_cells = set(zip(bench.train_groups, bench.train.labels.tolist()))
    assert len(pool_cells) == 4 * 3 and len(bench.train_groups) == len(bench.train)     # every domain and class
    torch.manual_seed(0)
    vit_b16 = create_paper("ViT-B-16-quickgelu", pretrained=None)
    test = encode_dataset(vit_b16, bench.dataset, paper.cache_dir, batch_size=8, normalize=False)
    source = encode_dataset(vit_b16, bench.val, paper.cache_dir, batch_size=8, normalize=False)
    assert test.features.norm(dim=-1).std() > 0                           # raw, not unit-norm
    grid, aug, cfg = clap.clap_recipe(paper)
    assert grid is clap.CLAP_GRID and aug == clap.Augment() and (cfg.batch_size, cfg.latent) == (8, 256)
    net, _ = clap.train_clap(vit_b16, bench.classnames, grid, clap.ClapConfig(steps=2, batch_size=4), aug, quiet=True)
    texts = clap.format_text_features(vit_b16, bench.classnames, noise_draws=2)
    alpha, _ = clap.choose_alpha(net, source.features, source.labels, texts, alphas=(0.1,))
    table = clap.format_accuracy(test.features, test.labels, bench.groups, texts, net, alpha)
    assert list(table.index) == list(D.PACS_DOMAINS) and table.notna().all().all()
    images = bench.dataset.images(np.array([0, 1])).float() / 255
    classify = clap.zero_shot_classifier(vit_b16, texts["C"], net, alpha)
    assert 0.0 <= robust_accuracy(classify, images, torch.as_tensor(bench.dataset.labels[:2]), "fgsm") <= 1.0


def test_lpft_chapter_path(paper, vit_b32):
    """Chapter 9 in `paper`: LP-FT's probe head and the random head on ViT-B/32, CIFAR-10 files."""
    from clipnotes.evaluate import frozen_features
    from clipnotes.finetune import run_finetune, train_linear_head
    bench = tasks.finetune_benchmark(paper)
    bench.templates = bench.templates[:2]
    runs = {h: run_finetune(paper, vit_b32, bench, recipe(paper, "ce", head_init=h, steps=1, batch_size=2, warmup=1,
                                                            threads=1), quiet=True) for h in ("probe", "random")}
    start = zero_shot_classifier(vit_b32, bench.classnames, bench.templates)
    feats = frozen_features(start, bench.train, vit_b32.preprocess)
    probe = train_linear_head(feats, torch.as_tensor(bench.train.labels), zero_shot_head(vit_b32, bench.classnames,
                              bench.templates).cpu(), vit_b32.model.logit_scale.exp().item(), seed=paper.seed)
    assert torch.allclose(runs["probe"].start.head.weight, probe.weight, atol=1e-6)
    assert not torch.allclose(runs["random"].start.head.weight, start.head.weight)
    evals = EvalSets(vit_b32, bench.eval_sets, batch_size=2)
    assert set(evals.accuracy(runs["probe"].end)) == {"ID", "CIFAR-10.1", "CIFAR-10.2"}


def test_tpt_chapter_path(paper):
    """Chapter 12 in `paper`: PACS's four domains, a seeded few per domain, ViT-B/16 views cached, TPT from the
    hand prompt and from a CoOp context learned on the photo shots."""
    from clipnotes import coop, tpt
    fakes.write_fake_pacs(paper.data_dir, per_class=5)
    bench = tasks.tpt_benchmark(paper, per_style=2, shots=1)
    assert sorted(set(bench.groups)) == sorted(D.PACS_DOMAINS) and len(bench.dataset) == 2 * len(D.PACS_DOMAINS)
    clap = tasks.clap_benchmark(paper, shots_pool=1)
    assert set(bench.dataset.paths) <= set(clap.dataset.paths)                 # chapter 8's test split
    assert len(bench.train) == 3 and all("photo" in str(p) for p in bench.train.paths)
    shifted = tasks.tpt_benchmark(paper, per_style=2, shots=1, styles=["sketch", "cartoon"])
    assert sorted(set(shifted.groups)) == ["cartoon", "sketch"] and len(shifted.dataset) == 4
    assert tpt.tpt_budget(paper).cause_per_style is None           # section 4 reads the main images again
    torch.manual_seed(0)
    vit_b16 = create_paper("ViT-B-16-quickgelu", pretrained=None)
    views = tpt.encode_views(vit_b16, bench.dataset, n_views=3, cache_dir=paper.cache_dir, batch_size=4)
    assert views.shape == (8, 3, 512)
    shots = encode_dataset(vit_b16, bench.train, paper.cache_dir, batch_size=4)
    learned = coop.fit_coop(vit_b16, bench.classnames, shots.features, shots.labels, shots=1, max_epochs=1,
                            init="a photo of a")
    hand = coop.PromptLearner(vit_b16, bench.classnames, init="a photo of a")
    for start in (hand, learned):
        out = tpt.tpt_logits(vit_b16, start, views, steps=1, keep=0.5)
        assert out.shape == (8, 3) and torch.isfinite(out).all()
