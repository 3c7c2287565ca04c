"""TPT (chapter 12): views, the confident-view selection, the loss, and batched tuning equal to one image at a time."""
import math

import numpy as np
import pytest
import torch

from clipnotes import tpt
from clipnotes.coop import PromptLearner
from clipnotes.models import create_mini
from clipnotes.utils import ClipnotesError
from clipnotes.world import World

NAMES = ["star", "heart", "circle", "square"]


@pytest.fixture(scope="module")
def mini():
    return create_mini("shipped")


def test_crops_cover_the_drawn_share_of_the_image_and_stay_inside():
    theta = tpt.crop_boxes(500, scale=(0.3, 0.6), generator=torch.Generator().manual_seed(0))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    area = w * h
    assert ((area >= 0.3 - 1e-6) & (area <= 0.6 + 1e-6)).all()                # no side needed clipping here
    assert ((theta[:, 0, 2].abs() + w) <= 1 + 1e-6).all() and ((theta[:, 1, 2].abs() + h) <= 1 + 1e-6).all()
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()          # some views flipped, some not
    with pytest.raises(ClipnotesError, match="crop scale"):
        tpt.crop_boxes(2, scale=(0.0, 1.0))


def test_view_zero_is_the_image_and_an_image_gets_its_crops_wherever_it_sits_in_a_batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=g)
    views = tpt.augmented_views(images, n_views=5, seed=7)
    assert views.shape == (3, 5, 3, 16, 16) and 0 <= views.min() and views.max() <= 1
    assert torch.equal(views[:, 0], images.float() / 255)
    alone = tpt.augmented_views(images[2:], n_views=5, seed=7, ids=[2])
    assert torch.equal(alone[0], views[2])
    assert not torch.equal(tpt.augmented_views(images, n_views=5, seed=8), views)
    with pytest.raises(ClipnotesError, match="n_views"):
        tpt.augmented_views(images, n_views=0)


def test_a_full_unflipped_crop_is_the_image():
    x = torch.rand(1, 3, 8, 8)
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 8, 8], align_corners=False)
    assert torch.allclose(torch.nn.functional.grid_sample(x, grid, align_corners=False), x, atol=1e-6)


def test_marginal_entropy_is_the_entropy_of_the_averaged_probabilities():
    logits = torch.randn(4, 6, 5) * 3
    p = logits.softmax(-1).mean(1)
    assert torch.allclose(tpt.marginal_entropy(logits), -(p * p.log()).sum(-1), atol=1e-5)
    assert torch.allclose(tpt.marginal_entropy(logits[:, :1]), tpt.entropy(logits[:, 0]), atol=1e-5)
    assert tpt.marginal_entropy(torch.zeros(1, 3, 5)).item() == pytest.approx(math.log(5))


def test_confident_views_are_the_lowest_entropy_share():
    logits = torch.zeros(1, 10, 3)
    logits[0, [2, 7], 0] = torch.tensor([9.0, 5.0])                          # two confident views
    idx = tpt.confident_views(logits, keep=0.2)
    assert sorted(idx[0].tolist()) == [2, 7]
    assert tpt.confident_views(logits, keep=0.01).shape == (1, 1)            # at least one view is kept


def _views(bundle, n=3, v=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        f = bundle.encode_images(tpt.augmented_views(images, v, seed=seed).flatten(0, 1))
    return torch.nn.functional.normalize(f.float(), dim=-1).view(n, v, -1)


def test_batched_tpt_equals_tuning_one_image_at_a_time_with_a_fresh_prompt(mini):
    views = _views(mini)
    learner = PromptLearner(mini, NAMES, init="a photo of a")
    scale = mini.model.logit_scale.exp().detach()
    ours = []
    for x in views:                                                          # TPT as its paper runs it
        fresh = PromptLearner(mini, NAMES, init="a photo of a")
        with torch.no_grad():
            start = scale * x @ fresh(mini.model).T
        kept = x[tpt.confident_views(start, keep=0.5)]
        opt = torch.optim.AdamW([fresh.ctx], lr=tpt.TPT_LR)
        for _ in range(3):
            loss = tpt.marginal_entropy(scale * kept @ fresh(mini.model).T)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ours.append(scale * x[0] @ fresh(mini.model).T)
    package = tpt.tpt_logits(mini, learner, views, steps=3, keep=0.5, batch_size=2)
    assert torch.allclose(torch.stack(ours), package, atol=1e-4)
    assert torch.equal(learner.ctx, PromptLearner(mini, NAMES, init="a photo of a").ctx)   # the learner is untouched
    assert not torch.allclose(package, tpt.tpt_logits(mini, learner, views, steps=0), atol=1e-4)


def test_zero_steps_is_the_starting_prompt_on_the_image_and_the_control_averages_confident_views(mini):
    views = _views(mini, seed=1)
    learner = PromptLearner(mini, NAMES, init="a photo of a")
    scale = mini.model.logit_scale.exp()
    with torch.no_grad():
        text = learner(mini.model)
        plain = scale * views[:, 0] @ text.T
        every = scale * views @ text.T
    assert torch.allclose(tpt.tpt_logits(mini, learner, views, steps=0), plain, atol=1e-5)
    control = tpt.confident_average(mini, learner, views, keep=1.0)          # keep every view: the plain average
    assert torch.allclose(control.exp(), every.softmax(-1).mean(1), atol=1e-5)


def test_tpt_refuses_learners_it_cannot_tune_and_empty_datasets(mini):
    csc = PromptLearner(mini, NAMES, n_ctx=2, csc=True)
    with pytest.raises(ClipnotesError, match="shared context"):
        tpt.tpt_logits(mini, csc, torch.zeros(1, 2, 32))
    with pytest.raises(ClipnotesError, match="empty"):
        tpt.encode_views(mini, World(0).zero_shot_test(0), n_views=2)


def test_view_features_are_cached_under_their_settings(mini, tmp_path):
    ds = World(0).zero_shot_test(1)
    first = tpt.encode_views(mini, ds, n_views=3, seed=0, cache_dir=tmp_path, batch_size=2)
    assert first.shape == (5, 3, mini.model.text_projection.shape[1])
    assert torch.allclose(first.norm(dim=-1), torch.ones(5, 3), atol=1e-5)
    with torch.no_grad():
        plain = torch.nn.functional.normalize(mini.encode_images(ds.images()).float(), dim=-1)
    assert torch.allclose(first[:, 0], plain, atol=1e-5)                     # view 0 is the image
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    assert torch.equal(tpt.encode_views(mini, ds, n_views=3, seed=0, cache_dir=tmp_path), first)
    assert not torch.equal(tpt.encode_views(mini, ds, n_views=3, seed=1, cache_dir=tmp_path), first)
    assert len(list(tmp_path.rglob("*.pt"))) == 2


def test_view_scores_read_the_image_all_views_and_the_kept_ones(mini):
    views = _views(mini, n=4, v=5, seed=2)
    learner = PromptLearner(mini, NAMES, init="a photo of a")
    with torch.no_grad():
        pred = (views @ learner(mini.model).T).argmax(-1)                        # (N, V)
    labels = pred[:, 0].clone()
    labels[0] = (labels[0] + 1) % len(NAMES)                                     # the first image read wrong
    sc = tpt.view_scores(mini, learner, views, labels, keep=1.0)
    assert sc["image"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert sc["all views"] == pytest.approx((pred[:, 1:] == labels[:, None]).float().mean(1).numpy())
    assert sc["kept views"] == pytest.approx((pred == labels[:, None]).float().mean(1).numpy())   # keep=1: every view


def test_the_paper_check_runs_fewer_views(monkeypatch):
    from clipnotes.profiles import get_profile
    assert tpt.tpt_budget(get_profile("mini")).views == tpt.TPT_VIEWS == 64
    monkeypatch.setenv("CLIPNOTES_PAPER_CHECK", "1")
    check = tpt.tpt_budget(get_profile("paper"))
    assert check.views < 64 and len(check.scales) >= 2


def test_tpt_benchmark_can_hold_only_some_styles_as_new_images():
    """Section 4's test set: only the shifted styles, from a stream of their own (not the main set's images)."""
    from clipnotes import tasks
    from clipnotes.profiles import get_profile
    mini = get_profile("mini")
    main = tasks.tpt_benchmark(mini, per_style=4)
    some = tasks.tpt_benchmark(mini, per_style=4, styles=["sketch", "painting"])
    assert sorted(set(some.groups)) == ["painting", "sketch"] and len(some.dataset) == 8
    pairs = list(zip(some.groups, some.dataset.labels.tolist()))
    assert len(set(pairs)) == 8 and sorted(set(some.dataset.labels.tolist())) == [0, 1, 2, 3]   # classes in turn
    assert some.dataset.cache_key != main.dataset.cache_key
    assert tpt.tpt_budget(mini).cause_per_style == 200
    for bad in (["watercolour"], [], "sketch"):
        with pytest.raises(ClipnotesError, match="styles"):
            tasks.tpt_benchmark(mini, per_style=4, styles=bad)


def test_correct_by_group_pairs_per_image_scores_by_style():
    from clipnotes.evaluate import correct_by_group
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    right = correct_by_group(logits, torch.tensor([0, 0, 0, 1]), ["a", "b", "a", "b"])
    assert list(right) == ["a", "b"] and right["a"].tolist() == [1, 1] and right["b"].tolist() == [0, 1]
    assert list(correct_by_group(logits.argmax(1), np.array([0, 0, 0, 1]), np.array(list("abab")), ["b"])) == ["b"]
    with pytest.raises(ClipnotesError, match="no items in group"):
        correct_by_group(logits, torch.tensor([0, 0, 0, 1]), ["a", "b", "a", "b"], ["c"])


def test_augmix_views_keep_view_zero_and_are_seeded_per_image():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    views = tpt.augmix_views(images, n_views=4, seed=3)
    assert views.shape == (3, 4, 3, 16, 16) and 0 <= views.min() and views.max() <= 1
    assert torch.equal(views[:, 0], images.float() / 255)
    assert not torch.equal(views[:, 1], views[:, 0])                          # the others are changed
    assert torch.equal(tpt.augmix_views(images[1:2], n_views=4, seed=3, ids=[1])[0], views[1])
    assert not torch.equal(tpt.augmix_views(images, n_views=4, seed=4), views)
    with pytest.raises(ClipnotesError, match="uint8"):
        tpt.augmix_views(images.float() / 255, n_views=2)


def test_augmix_moves_the_shape_by_a_few_pixels_at_most():
    """Severity 1 (TPT's): the outline stays whole, at most a fifteenth of the side away."""
    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    image[:, :, 24:40, 24:40] = 255
    views = tpt.augmix_views(image, n_views=40, seed=0)[0, 1:].mean(1)        # (V, H, W)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mass = views.sum((-1, -2))
    centre = torch.stack([(views * ys).sum((-1, -2)) / mass, (views * xs).sum((-1, -2)) / mass], 1)
    assert (centre - 31.5).abs().max() < 64 / 15


def test_encode_views_knows_its_kinds(mini, tmp_path):
    ds = World(0).zero_shot_test(1)
    crops = tpt.encode_views(mini, ds, n_views=2, cache_dir=tmp_path)
    augmix = tpt.encode_views(mini, ds, n_views=2, cache_dir=tmp_path, kind="augmix")
    assert torch.allclose(crops[:, 0], augmix[:, 0]) and not torch.allclose(crops[:, 1], augmix[:, 1])
    assert len(list(tmp_path.rglob("*.pt"))) == 2
    with pytest.raises(ClipnotesError, match="kind of views"):
        tpt.encode_views(mini, ds, n_views=2, kind="mixup")


def test_views_need_one_id_per_image():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    for make in (tpt.augmented_views, tpt.augmix_views):
        with pytest.raises(ClipnotesError, match="2 ids for 3 images"):
            make(images, n_views=2, ids=[0, 1])


def test_control_share_is_a_share_only_where_tpt_gains_beyond_its_noise():
    from clipnotes.stats import Gap
    assert tpt.control_share(Gap(0.012, 0.005), Gap(0.02, 0.005)) == "60% of it"
    assert tpt.control_share(Gap(-0.003, 0.005), Gap(0.02, 0.005)).startswith("none: the control gains nothing")
    assert tpt.control_share(Gap(0.02, 0.005), Gap(0.005, 0.005)).startswith("not defined")
