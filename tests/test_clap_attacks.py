import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipnotes.attacks import cw_margin, fgsm, pgd, robust_accuracy
from clipnotes.clap import (Augment, PromptGrid, ResMLP, augment, encode_with_noise, nt_xent,
                            prompt_robustness, render_prompt)
from clipnotes.models import create_mini
from clipnotes.utils import ClipnotesError
from clipnotes import clap


@pytest.fixture(scope="module")
def mini():
    return create_mini("shipped")


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
    clap_attrs = ("painting", "large", "red", "realistic")               # CLAP's grid: style before type
    assert render_prompt("dog", clap_attrs) == "a realistic painting of a large red dog"
    assert render_prompt("dog", clap_attrs, swap=True) == "a large red dog in realistic painting style"
    assert render_prompt("dog", clap_attrs, frozenset({"size", "colour", "style"})) == "a painting of a dog"
    assert render_prompt("dog", clap_attrs, frozenset({"type"})) == "a realistic large red dog"
    attrs = ("painting", "small", "orange", "on a dotted background")    # the mini grid: style after the object
    kw = dict(style_before_type=False)
    assert render_prompt("star", attrs, **kw) == "a painting of a small orange star on a dotted background"
    assert render_prompt("star", attrs, frozenset({"size", "colour"}), **kw) == "a painting of a star on a dotted background"
    assert render_prompt("star", attrs, swap=True, **kw) == "a small orange star on a dotted background in painting style"
    assert render_prompt("arrow", attrs, frozenset({"type", "size", "colour", "style"}), **kw) == "an arrow"
    rng = random.Random(0)
    outs = {augment("star", attrs, Augment(type=0.5, style=0.5), rng, False) for _ in range(300)}
    assert all("star" in o for o in outs) and "a star" in outs and len(outs) > 10      # content kept, style varied
    assert len(PromptGrid(("sketch",), ("small", ""), ("red",), ("",))) == 2
    assert len(clap.CLAP_GRID) == 480                                    # CLAP's prompts per class


def test_mini_grid_uses_the_world_vocabulary_and_never_names_a_class():
    from clipnotes import world as W
    grid = clap.mini_grid()
    vocab = set(W.vocabulary())
    words = {w for part in (grid.types, grid.sizes, grid.colours, grid.styles) for p in part for w in p.split()}
    assert words <= vocab
    class_words = set(W.CLASSNAMES) | {w for opts in W.SHAPE_WORDS.values() for w, _ in opts}
    assert not any(class_words & set(s.split()) for s in grid.types + grid.styles)
    assert "on a striped background" in grid.styles and "" in grid.styles


def test_noise_tokens_encoding(mini):
    texts = ["star", "a photo of a heart"]
    with torch.no_grad():
        plain = mini.encode_texts(texts)
        assert torch.allclose(encode_with_noise(mini, texts, 0, 0.02), plain)
        outs = {pos: encode_with_noise(mini, texts, 4, 0.02, torch.Generator().manual_seed(0), pos)
                for pos in clap.NOISE_POSITIONS}
        raw = encode_with_noise(mini, texts, 4, 0.02, torch.Generator().manual_seed(0), normalize=False)
    for noisy in outs.values():
        assert noisy.shape == plain.shape and not torch.allclose(noisy, plain)
        assert torch.allclose(noisy.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(outs["front"], outs["end"]) and not torch.allclose(outs["front"], outs["middle"])
    assert torch.allclose(F.normalize(raw, dim=-1), outs["front"], atol=1e-5) and raw.norm(dim=-1).min() > 2
    with pytest.raises(ClipnotesError, match="noise position"):
        encode_with_noise(mini, texts, 4, position="back")


def test_front_noise_is_a_splice_after_the_start_token(mini):
    """Inline: "X X X X star" with the X rows replaced by the noise is the same text feature."""
    from clipnotes.models import encode_token_embeddings
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(4, mini.model.token_embedding.weight.shape[1], generator=torch.Generator().manual_seed(1)) * 0.02
    tokens = mini.tokenizer(["X X X X star"])
    with torch.no_grad():
        emb = mini.model.token_embedding(tokens)
        emb[0, 1:5] = noise
        expected = encode_token_embeddings(mini.model, emb, tokens)
        got = encode_with_noise(mini, ["star"], 4, 0.02, g)
    assert torch.allclose(got, expected, atol=1e-5)


def test_train_clap_moves_the_network_and_adapt_restores_alpha(mini):
    grid = PromptGrid(("photo", "sketch"), ("small",), ("red", "blue"), ("",), style_before_type=False)
    cfg = clap.ClapConfig(steps=20, batch_size=4, latent=16, seed=0)
    net, log = clap.train_clap(mini, ["star", "heart", "circle"], grid, cfg, Augment(type=0.5), quiet=True)
    assert net.fc2.weight.abs().sum() > 0 and list(log.columns) == ["step", "loss"] and log.step.iloc[-1] == 20
    x = torch.randn(3, 128) * 10
    out = clap.adapt(net, x, 0.25)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    # α scales the learned residual: α = 0 is CLIP itself, α = 0.25 lies between CLIP and α = 1
    assert torch.allclose(clap.adapt(net, x, 0.0), F.normalize(x, dim=-1), atol=1e-6)
    with torch.no_grad():
        r = net(x, 1.0) - x
        assert r.abs().max() > 1e-3 and torch.allclose(net(x, 0.25), x + 0.25 * r, atol=1e-5)
    assert torch.allclose(clap.adapt(None, x, 0.25), F.normalize(x, dim=-1))
    with pytest.raises(ClipnotesError, match="empty"):
        clap.train_clap(mini, [], grid, cfg, quiet=True)


def _clusters(n_per=20, classes=4, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 5
    labels = torch.arange(classes).repeat_interleave(n_per)
    return centres[labels] + torch.randn(len(labels), dim, generator=g) * 0.5, labels, centres


def test_format_accuracy_and_choose_alpha():
    feats, labels, centres = _clusters()
    texts = {"C": centres, "PC": centres + 0.1, "CP": -centres, "NC": torch.stack([centres, -centres])}
    groups = np.array(["a", "b"] * (len(labels) // 2))
    table = clap.format_accuracy(feats, labels, groups, texts)
    assert list(table.index) == ["a", "b"] and list(table.columns) == ["C", "PC", "CP", "NC"]
    assert table["C"].min() == 1.0 and table["CP"].max() == 0.0 and table["NC"].mean() == pytest.approx(0.5)
    right = clap.format_correct(feats, labels, texts)          # the same, per image (the margins' input)
    for fmt, per_image in right.items():
        assert [per_image[groups == g].mean() for g in ("a", "b")] == pytest.approx(table[fmt].tolist())
    identity = ResMLP(12, 8)                                  # W2 = 0: every α is free, the largest wins
    alpha, scan = clap.choose_alpha(identity, feats, labels, texts, alphas=(0.1, 1.0))
    assert alpha == 1.0 and list(scan.index) == [0.0, 0.1, 1.0]


    class Collapse(ResMLP):                                   # at α = 1 every feature is the same point
        def forward(self, x, alpha=1.0):
            return (1 - alpha) * x + alpha * torch.ones_like(x)

    alpha, _ = clap.choose_alpha(Collapse(12, 8), feats, labels, texts, alphas=(1.0,), budget=0.0)
    assert alpha == 0.0


def test_factor_readouts_and_few_shot_probes():
    feats, labels, _ = _clusters(n_per=30)
    noise = np.random.default_rng(0).integers(0, 4, len(labels))
    probe = clap.probe_factors(feats, {"class": labels.numpy(), "noise": noise})
    knn = clap.knn_factors(feats, {"class": labels.numpy(), "noise": noise})
    assert probe["class"] > 0.95 and knn["class"] > 0.95
    assert probe["noise"] < 0.5 and knn["noise"] < 0.5                    # a factor the features do not hold
    groups = np.array(["a", "b"] * (len(labels) // 2))
    table = clap.few_shot_probes(feats, labels, groups, feats, labels, groups, {"raw": (None, 0.0)}, shots=(1, 2))
    assert len(table) == 2 * 2 and table.accuracy.min() > 0.9


def test_zero_shot_classifier_for_attacks(mini):
    x = torch.rand(2, 3, 64, 64)
    text = mini.encode_texts(["star", "heart"], normalize=False)
    with torch.no_grad():
        plain = clap.zero_shot_classifier(mini, text)(x)
        through_identity = clap.zero_shot_classifier(mini, text, ResMLP(text.shape[1], 8), 0.5)(x)
    assert plain.shape == (2, 2) and torch.allclose(plain, through_identity, atol=1e-5)


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


def test_attack_budget_is_clap_s_except_in_the_paper_check(tmp_path, monkeypatch):
    from clipnotes.clap import AttackBudget, attack_budget
    from clipnotes.profiles import get_profile
    assert attack_budget(get_profile("mini")) == AttackBudget(4, 20, None, (0.5 / 255, 1 / 255, 2 / 255, 4 / 255))
    monkeypatch.setenv("CLIPNOTES_PAPER_CHECK", "1")
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path))
    assert attack_budget(get_profile("paper")) == AttackBudget(1, 2, 2, (0.5 / 255, 1 / 255))


def test_robust_accuracy_runs_the_steps_it_is_given():
    import torch
    from clipnotes.attacks import robust_accuracy
    calls = []
    lin = torch.nn.Linear(3 * 4 * 4, 2)

    def classify(x):
        calls.append(1)
        return lin(x.flatten(1))
    x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    robust_accuracy(classify, x, y, "pgd", steps=3)
    few = len(calls)
    calls.clear()
    robust_accuracy(classify, x, y, "pgd", steps=6)
    assert len(calls) - few == 3
