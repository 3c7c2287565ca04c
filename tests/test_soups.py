"""Chapter 10: model soups — averaging, the greedy recipe, the logit ensemble, the ingredients."""
import numpy as np
import pytest
import torch
from torch import nn

from clipnotes import soups
from clipnotes.finetune import recipe
from clipnotes.profiles import get_profile
from clipnotes.utils import ClipnotesError


class Linear(nn.Module):
    """A linear classifier with the book's ``features``/``classify`` interface."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(4, 3)
        self.register_buffer("count", torch.tensor(seed))

    def features(self, x):
        return x

    def classify(self, z):
        return self.head(z)


def test_average_state_dicts_means_floats_and_keeps_integer_buffers():
    a, b = Linear(1), Linear(2)
    avg = soups.average_state_dicts([a.state_dict(), b.state_dict()])
    assert torch.allclose(avg["head.weight"], (a.head.weight + b.head.weight) / 2)
    assert avg["count"].item() == 1                      # integer buffers are not averaged
    with pytest.raises(ClipnotesError, match="different keys"):
        soups.average_state_dicts([a.state_dict(), {"x": torch.zeros(1)}])
    with pytest.raises(ClipnotesError, match="at least one"):
        soups.average_state_dicts([])


def test_a_soup_of_linear_models_is_their_logit_ensemble():
    models = [Linear(s) for s in range(3)]
    x = torch.randn(5, 4)
    soup = soups.uniform_soup(models)
    assert torch.allclose(soup.classify(x), torch.stack([m.classify(x) for m in models]).mean(0), atol=1e-6)


def test_greedy_soup_adds_by_held_out_order_and_keeps_only_gains():
    models = [Linear(s) for s in range(4)]
    scores = {id(m): s for m, s in zip(models, (0.5, 0.9, 0.7, 0.6))}
    calls = []

    def held_out(m):                     # ingredients score as given; a soup scores by its size
        calls.append(m)
        return scores.get(id(m), 0.9 + 0.01 * (len(calls) % 2))

    g = soups.greedy_soup(models, held_out)
    assert [row["ingredient"] for row in g.log] == [1, 2, 3, 0]      # best first, then by held-out accuracy
    assert g.kept[0] == 1 and all(r["kept"] == (r["ingredient"] in g.kept) for r in g.log)
    assert max(r["held-out"] for r in g.log if r["kept"]) >= 0.9        # never below the best ingredient


def test_ensemble_correct_averages_logits_from_cached_features():
    models = [Linear(s) for s in range(3)]
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])

    class Evals:                         # what EvalSets offers: features per set, labels
        labels = {"ID": y}

        def features(self, m, autocast=None):
            return {"ID": (m.features(x), y)}

    got = soups.ensemble_correct(models, Evals())["ID"]
    want = (torch.stack([m.classify(x) for m in models]).mean(0).argmax(1) == y).numpy().astype(float)
    assert np.array_equal(got, want)


def test_ingredient_recipes_start_with_chapter_5_and_draw_the_rest():
    mini = get_profile("mini")
    cfgs = soups.ingredient_recipes(mini, k=4)
    assert cfgs[0] == recipe(mini, "ce")                                 # chapter 5's run, reused from the cache
    assert len({c.seed for c in cfgs}) == 4 and cfgs == soups.ingredient_recipes(mini, k=4)
    assert all(cfgs[0].lr / 3 <= c.lr <= cfgs[0].lr * 3 for c in cfgs)
    assert all(c.steps == cfgs[0].steps // 2 and c.weight_decay in soups.WEIGHT_DECAYS for c in cfgs[1:])
    div = soups.divergent_recipe(mini)
    assert div.lr == 30 * cfgs[0].lr and div.seed not in {c.seed for c in cfgs}
    assert div.steps == cfgs[1].steps // 2 and div.warmup <= div.steps // 4
    with pytest.raises(ClipnotesError):
        soups.ingredient_recipes(mini, k=1)


def test_midpoint_loss_is_paired_and_signed():
    a = {"ID": np.array([1, 1, 1, 1, 0, 1, 1, 1.0])}
    b = {"ID": np.array([1, 1, 1, 0, 1, 1, 1, 1.0])}
    broken = {"ID": np.zeros(8)}
    assert soups.midpoint_loss(a, b, broken, ["ID"]).above()           # a collapsed midpoint is a barrier
    assert soups.midpoint_loss(a, b, a, ["ID"]).diff == pytest.approx(0.0)


# ---------------------------------------------------------------- PAINT (chapter 13)
from clipnotes import patching  # noqa: E402


def test_correct_by_head_judges_each_set_by_its_own_head():
    model = Linear(0)
    x = torch.randn(6, 4)
    shape_head = torch.randn(4, 5)

    class Evals:
        def features(self, m, autocast=None):
            return {"patch": (x, torch.zeros(6, dtype=torch.long)), "supported": (x, torch.arange(6) % 5)}

    right = patching.correct_by_head(model, Evals(), {"patch": None, "supported": shape_head})
    assert np.array_equal(right["patch"], (model.classify(x).argmax(1) == 0).numpy().astype(float))
    assert np.array_equal(right["supported"], ((x @ shape_head).argmax(1) == torch.arange(6) % 5).numpy().astype(float))
    with pytest.raises(ClipnotesError, match="no head"):
        patching.correct_by_head(model, Evals(), {"patch": None})


def test_choose_alpha_is_the_largest_within_the_tolerance():
    rows = [{"alpha": a, "supported": s} for a, s in ((0.0, 0.80), (0.2, 0.795), (0.4, 0.78), (0.6, 0.792), (1.0, 0.70))]
    assert patching.choose_alpha(rows, "supported", 0.01) == 0.6      # the largest α within a point, not the first gap
    assert patching.choose_alpha(rows, "supported", 0.0) == 0.0
    with pytest.raises(ClipnotesError, match="α = 0"):
        patching.choose_alpha(rows[1:], "supported")


def test_mini_patching_task_is_size_on_photos_with_held_out_splits():
    from clipnotes.tasks import patching_benchmarks
    patch, supported = patching_benchmarks(get_profile("mini"), n_train=30, n_eval=20)
    assert patch.classnames == ["small", "medium", "large"] and len(patch.train) == 30 and len(patch.val) == 10
    assert np.array_equal(patch.dataset.labels, patch.dataset.factors.size)            # labelled by size ...
    assert set(patch.dataset.factors.named("domain")) == {"photo"}
    assert patch.train.cache_key.endswith("-by-size") and supported.dataset.classnames[0] == "circle"
    assert len(supported.dataset) == 20 and len(supported.val) == 10
    assert len({patch.dataset.cache_key, patch.val.cache_key, patch.train.cache_key}) == 3


def test_paper_patching_reads_eurosat_and_cifar10(tmp_path, monkeypatch):
    from clipnotes import fakes
    from clipnotes.data import cifar
    from clipnotes.tasks import patching_benchmarks
    fakes.write_fake_coop(tmp_path, "EuroSAT", n_classes=4, per_split=2)
    fakes.write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=6)
    monkeypatch.setenv("CLIPNOTES_DATA", str(tmp_path))
    monkeypatch.setattr("clipnotes.tasks.cifar", lambda *a, **k: cifar(*a, **{**k, "verify": False}))
    patch, supported = patching_benchmarks(get_profile("paper", check=False))
    assert patch.name == "EuroSAT" and len(patch.train) == len(patch.val) == len(patch.dataset) == 8
    assert supported.name == "CIFAR-10" and len(supported.dataset) == 6 and len(supported.val) == 20


def test_alpha_grids_are_the_chapters_own_in_mini_and_three_points_in_the_paper_check(monkeypatch):
    """Every α grid of chapters 5, 10 and 13 (WiSE-FT's, the coarse one, chapter 10's paths, PAINT's) is
    unchanged in mini; the paper check sweeps 0, 0.5 and 1, the α the chapters read by name."""
    from clipnotes.patching import PAINT_ALPHAS, alpha_grid
    from clipnotes.wise import ALPHAS, COARSE_ALPHAS, alphas
    mini = get_profile("mini")
    assert alpha_grid(mini) == PAINT_ALPHAS and PAINT_ALPHAS[0] == 0.0 and PAINT_ALPHAS[-1] == 1.0
    for grid in (ALPHAS, COARSE_ALPHAS, PAINT_ALPHAS, (0.0, 0.5, 1.0)):
        assert alphas(mini, grid) == tuple(grid)
    assert alphas(mini) == ALPHAS
    monkeypatch.setenv("CLIPNOTES_PAPER_CHECK", "1")
    check = get_profile("paper")
    assert alpha_grid(check) == alphas(check, COARSE_ALPHAS) == alphas(check) == (0.0, 0.5, 1.0)
