"""The noise margins every chapter's claims are asserted with (clipnotes.stats)."""
import math

import numpy as np
import pytest

from clipnotes.stats import Gap, Z, binomial_se, difference_of_gaps, paired_gap, paired_se


def test_paired_se_counts_only_disagreements():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0], float)
    assert paired_se(a, a) == 0.0                             # identical predictions: no noise
    b = a.copy(); b[0] = 0
    d = a - b
    assert paired_se(a, b) == pytest.approx(d.std(ddof=1) / math.sqrt(8))
    with pytest.raises(ValueError):
        paired_se([1.0], [0.0])


def test_paired_gap_averages_sets_and_adds_errors_in_quadrature():
    rng = np.random.default_rng(0)
    a = {k: rng.integers(0, 2, 400).astype(float) for k in "xy"}
    b = {k: rng.integers(0, 2, 400).astype(float) for k in "xy"}
    g = paired_gap(a, b, ["x", "y"])
    assert g.diff == pytest.approx(np.mean([a[k].mean() - b[k].mean() for k in "xy"]))
    assert g.se == pytest.approx(math.hypot(paired_se(a["x"], b["x"]), paired_se(a["y"], b["y"])) / 2)


def test_noise_alone_does_not_clear_the_margin_but_an_effect_does():
    """Two equally good models disagreeing at random: the margin is cleared about 2 % of the time;
    a model right on 5 % more images clears it every time at n = 1000."""
    rng = np.random.default_rng(1)
    fake = real = 0
    for _ in range(400):
        truth = rng.random(1000)
        a, b = (truth < 0.8).astype(float), (rng.random(1000) < 0.8).astype(float)
        fake += paired_gap({"t": a}, {"t": b}, ["t"]).above()
        better = np.maximum(b, (rng.random(1000) < 0.25).astype(float))   # b, plus right on ~5 % more
        real += paired_gap({"t": better}, {"t": b}, ["t"]).above()
    assert fake / 400 < 0.06 and real == 400


def test_gap_words_and_points():
    g = Gap(0.031, 0.004)
    assert g.margin == Z * 0.004 and g.above() and not g.above(0.03)
    assert g.points() == "+3.1 ± 0.8"
    assert Gap(0.001, 0.004).verdict("up", "level", "down") == "level"
    assert Gap(-0.02, 0.004).verdict("up", "level", "down") == "down"
    assert difference_of_gaps(Gap(0.05, 0.003), Gap(0.01, 0.004)) == Gap(0.04, 0.005)
    assert binomial_se(0.5, 100) == 0.05 and math.isnan(binomial_se(0.5, 0))


def test_retrieval_hits_are_the_recall_per_query():
    """Chapter 1's paired retrieval margin reads per-query hits; their mean is Recall@k."""
    import torch
    from clipnotes.evaluate import retrieval_hits, retrieval_recall
    img = torch.eye(4)
    txt = torch.eye(4)[[0, 1, 3, 2]]                  # queries 2 and 3 find each other's caption first
    assert retrieval_hits(img, txt).tolist() == [1, 1, 0, 0]
    assert retrieval_hits(img, txt, k=2).tolist() == [1, 1, 1, 1]   # one caption beats the true one: rank 2
    rec = retrieval_recall(img, txt, ks=(1,))
    assert rec == {"image->text R@1": 0.5, "text->image R@1": 0.5}


def test_bootstrap_gap_resamples_within_strata():
    from clipnotes.stats import bootstrap_gap
    strata = np.array(["a"] * 50 + ["b"] * 50)
    x = np.r_[np.zeros(50), np.ones(50)]
    seen = []

    def metric(idx):
        seen.append(np.bincount((strata[idx] == "b").astype(int), minlength=2))
        return float(x[idx].mean())

    g = bootstrap_gap(metric, strata, n_boot=20)
    assert g.diff == 0.5 and g.se == 0.0                 # within-stratum resampling keeps the mean here
    assert all((c == [50, 50]).all() for c in seen)      # every resample keeps each stratum's size
    noisy = np.random.default_rng(0).random(100)
    g2 = bootstrap_gap(lambda idx: float(noisy[idx].mean()), strata, n_boot=300)
    assert g2.se == pytest.approx(noisy.std() / 10, rel=0.3)


def test_mean_gap_of_independent_samples():
    from clipnotes.stats import mean_gap
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0, 1.0])
    g = mean_gap(a, b)
    assert g.diff == pytest.approx(1.5)
    assert g.se == pytest.approx(math.hypot(1.0 / math.sqrt(3), np.std(b, ddof=1) / 2))
    with pytest.raises(ValueError):
        mean_gap([1.0], [1.0, 2.0])


def test_chapter_2s_probe_chooses_c_on_the_pool_never_on_its_shots():
    """CLIP's protocol: each C scored on other images of the pool; the best one kept."""
    import numpy as np
    import pytest
    import torch

    from clipnotes.evaluate import fit_linear_probe, tuned_linear_probe
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 3, 300))
    feats = torch.from_numpy(rng.normal(size=(300, 8)) + 1.5 * np.eye(3, 8)[labels.numpy()]).float()
    shots = np.arange(12)
    probe, c = tuned_linear_probe(feats, labels, shots, cs=(0.001, 1.0, 100.0), n_val=200)
    val = np.arange(12, 212)
    scores = {cc: fit_linear_probe(feats[shots], labels[shots], cc).score(feats[val].numpy(), labels[val].numpy())
              for cc in (0.001, 1.0, 100.0)}
    assert c == max(scores, key=scores.get) and probe.score(feats[val].numpy(), labels[val].numpy()) == scores[c]
    # trained on the shots alone
    np.testing.assert_allclose(probe.predict_proba(feats[:5].numpy()),
                               fit_linear_probe(feats[shots], labels[shots], c).predict_proba(feats[:5].numpy()))
    # a pool of only the shots (the paper check's fake data): nothing to choose C on, C = 1 kept
    with pytest.warns(UserWarning, match="no image is left to choose C on"):
        alone, c = tuned_linear_probe(feats[:12], labels[:12], shots)
    assert c == 1.0
    np.testing.assert_allclose(alone.predict_proba(feats[:5].numpy()),
                               fit_linear_probe(feats[shots], labels[shots], 1.0).predict_proba(feats[:5].numpy()))
