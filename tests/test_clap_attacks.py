import random

import pytest
import torch
import torch.nn.functional as F

from clipnotes.attacks import cw_margin, fgsm, pgd, robust_accuracy
from clipnotes.clap import (Augment, PromptGrid, ResMLP, augment, encode_with_noise, nt_xent, prompt_robustness,
                            render_prompt)
from clipnotes.models import create_mini


def test_resmlp_is_the_identity_at_initialisation():
    net = ResMLP(16, 8)
    x = torch.randn(5, 16)
    assert torch.equal(net(x), x)
    assert net.fc2.bias is None


def test_nt_xent_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / 0.5
    expected = 0.0
    for i in range(8):
        j = (i + 4) % 8
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        expected += -sim[i, j] + torch.logsumexp(others, 0)
    assert torch.allclose(nt_xent(a, b, 0.5), expected / 8, atol=1e-5)


def test_prompt_rendering_and_augmentations():
    attrs = ("painting", "small", "orange", "on a star pattern")
    assert render_prompt("star", attrs) == "a painting of a small orange star on a star pattern"
    assert render_prompt("star", attrs, frozenset({"size", "colour"})) == "a painting of a star on a star pattern"
    assert render_prompt("star", attrs, swap=True) == "a small orange star on a star pattern in painting style"
    assert render_prompt("arrow", ("", "", "", ""), frozenset({"type"})) == "an arrow"
    rng = random.Random(0)
    outs = {augment("star", attrs, Augment(), rng) for _ in range(200)}
    assert all("star" in o for o in outs) and len(outs) > 4          # content kept, style varied
    grid = PromptGrid(("sketch",), ("small", ""), ("red",), ("",))
    assert len(grid.prompts("star")) == 2


def test_noise_tokens_encoding():
    bundle = create_mini("shipped")
    texts = ["star", "a photo of a heart"]
    with torch.no_grad():
        plain = bundle.encode_texts(texts)
        assert torch.allclose(encode_with_noise(bundle, texts, 0, 0.02), plain)
        noisy = encode_with_noise(bundle, texts, 4, 0.02, torch.Generator().manual_seed(0))
    assert noisy.shape == plain.shape and not torch.allclose(noisy, plain)
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_prompt_robustness_metrics():
    m = prompt_robustness({"C": 0.9, "PC": 0.8, "CP": 0.85, "NC": 0.7})
    assert m["range"] == pytest.approx(0.1) and m["delta_nc"] == pytest.approx(0.2)


def _linear_classifier():
    torch.manual_seed(0)
    w = torch.randn(3, 12)
    return lambda x: x.flatten(1) @ w.T


def test_attacks_stay_in_the_budget_and_hurt():
    clf = _linear_classifier()
    x = torch.rand(64, 3, 2, 2)
    y = clf(x).argmax(1)                                  # start from 100% accuracy
    for adv in (fgsm(clf, x, y, 0.1), pgd(clf, x, y, 0.1, steps=10),
                pgd(clf, x, y, 0.1, steps=10, loss="cw", generator=torch.Generator().manual_seed(0))):
        assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert robust_accuracy(clf, x, y, "none") == 1.0
    assert robust_accuracy(clf, x, y, "pgd", eps=0.1) < robust_accuracy(clf, x, y, "none")
    with pytest.raises(ValueError):
        robust_accuracy(clf, x, y, "magic")


def test_cw_margin():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert cw_margin(logits, torch.tensor([0])) == pytest.approx(-1.0)
    assert cw_margin(logits, torch.tensor([2]), confidence=0.5) == pytest.approx(0.5)
