import pytest
import torch

from clipnotes.coop import PromptLearner, nearest_words
from clipnotes.models import create_mini, create_paper
from clipnotes.utils import ClipnotesError

NAMES = ["star", "heart", "circle"]

#: The tiny CLIP and a real architecture at random weights (the paper path).
BOTH_MODELS = pytest.mark.parametrize("make", [lambda: create_mini("shipped"),
                                               lambda: create_paper("ViT-B-16-quickgelu", pretrained=None)],
                                      ids=["mini", "ViT-B-16 random"])


def _real_prompt_features(bundle, template):
    with torch.no_grad():
        return bundle.encode_texts([template.format(c) for c in NAMES])


@BOTH_MODELS
def test_context_initialised_from_words_equals_the_real_prompt(make):
    bundle = make()
    pl = PromptLearner(bundle, NAMES, init="a photo of a")
    assert pl.n_ctx == 4
    with torch.no_grad():
        learned = pl(bundle.model)
    assert torch.allclose(learned, _real_prompt_features(bundle, "a photo of a {}."), atol=1e-5)


@BOTH_MODELS
def test_encoding_from_embeddings_cuts_the_padding_and_changes_nothing(make):
    from clipnotes.models import encode_token_embeddings
    bundle = make()
    texts = ["star", "a photo of a small red star on a striped background", "a heart"]   # different lengths
    tokens = bundle.tokenizer(texts)
    with torch.no_grad():
        ours = encode_token_embeddings(bundle.model, bundle.model.token_embedding(tokens), tokens, normalize=False)
        real = bundle.model.encode_text(tokens)
    assert tokens.shape[1] > int(tokens.argmax(-1).max()) + 1               # there is padding to cut
    assert torch.allclose(ours, real, atol=1e-4, rtol=1e-4)


def test_class_positions_splice_the_name_where_asked():
    bundle = create_mini("shipped")
    for position, template in (("front", "{} a photo of a."), ("middle", "a photo {} of a.")):
        pl = PromptLearner(bundle, NAMES, init="a photo of a", position=position)
        with torch.no_grad():
            assert torch.allclose(pl(bundle.model), _real_prompt_features(bundle, template), atol=1e-5)


def test_random_context_shapes_and_gradients():
    bundle = create_mini("shipped")
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    shared = PromptLearner(bundle, NAMES, n_ctx=6)
    csc = PromptLearner(bundle, NAMES, n_ctx=6, csc=True)
    assert shared.ctx.shape == (6, 96) and csc.ctx.shape == (3, 6, 96)
    assert 0.01 < shared.ctx.std().item() < 0.03
    out = csc(bundle.model)
    out.sum().backward()
    assert csc.ctx.grad is not None and csc.ctx.grad.abs().sum() > 0
    assert len(nearest_words(bundle, shared.ctx)) == 6


def test_prompt_learner_errors():
    bundle = create_mini("shipped")
    with pytest.raises(ClipnotesError, match="class list is empty"):
        PromptLearner(bundle, [])
    with pytest.raises(ClipnotesError, match="unknown class position"):
        PromptLearner(bundle, NAMES, position="side")
    with pytest.raises(ClipnotesError, match="context length"):
        PromptLearner(bundle, NAMES, n_ctx=40)


def test_coop_training_on_cached_features_fits_and_starts_at_the_hand_prompt():
    from clipnotes import world as W
    from clipnotes.coop import prompt_accuracy, train_coop
    bundle = create_mini("shipped")
    ds = W.World(0).few_shot(4, domain="painting")
    names = list(W.CLASSNAMES)
    with torch.no_grad():
        feats = bundle.encode_images(ds.images(slice(None)))
    labels = torch.as_tensor(ds.labels)
    hand = bundle.encode_texts([f"a photo of a {c}." for c in names])
    learner = PromptLearner(bundle, names, init="a photo of a")
    start = prompt_accuracy(bundle, learner, feats, labels)
    assert start == pytest.approx(float(((feats @ hand.T).argmax(1) == labels).float().mean()))
    frozen_before = [p.requires_grad for p in bundle.model.parameters()]
    losses = train_coop(bundle, learner, feats, labels, epochs=30, lr=0.01, batch_size=8)
    assert [p.requires_grad for p in bundle.model.parameters()] == frozen_before     # flags restored
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5                                # it learns ...
    assert prompt_accuracy(bundle, learner, feats, labels) >= start                  # ... and fits the shots
    with pytest.raises(ClipnotesError, match="no training features"):
        train_coop(bundle, learner, feats[:0], labels[:0], epochs=1)


def _fake_features(n_per_class, dim, n_classes=4, seed=0):
    """Unit features clustered by class, as a FeatureSet-like object."""
    from types import SimpleNamespace
    centres = torch.nn.functional.normalize(torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(9)), dim=-1)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = torch.nn.functional.normalize(centres[y] + 0.5 / dim ** 0.5 * torch.randn(len(y), dim, generator=g), dim=-1)
    return SimpleNamespace(features=x, labels=y)


def test_coop_lr_scales_with_the_logit_scale_and_epochs_follow_coop():
    from clipnotes.coop import coop_epochs, coop_lr
    bundle = create_mini("shipped")
    scale = bundle.model.logit_scale.exp().item()
    assert coop_lr(bundle) == pytest.approx(0.002 * 100 / scale)
    with torch.no_grad():
        bundle.model.logit_scale.fill_(torch.log(torch.tensor(100.0)))
    assert coop_lr(bundle) == pytest.approx(0.002)                      # real CLIP keeps CoOp's 0.002
    assert [coop_epochs(k) for k in (1, 2, 4, 8, 16, 32)] == [50, 100, 100, 200, 200, 200]


def test_shared_context_moves_to_new_classes_but_class_specific_cannot():
    bundle = create_mini("shipped")
    pl = PromptLearner(bundle, NAMES, n_ctx=4, seed=3)
    other = pl.for_classes(bundle, ["square", "cross"])
    assert torch.equal(other.ctx, pl.ctx) and other.classnames == ["square", "cross"]
    with pytest.raises(ClipnotesError, match="class-specific"):
        PromptLearner(bundle, NAMES, n_ctx=4, csc=True).for_classes(bundle, ["square"])


def test_few_shot_curves_and_base_to_new_tables():
    from clipnotes.coop import base_to_new, few_shot_curves
    bundle = create_mini("shipped")
    names = ["star", "heart", "circle", "square"]
    dim = bundle.encode_texts(["star"]).shape[1]
    pool, test = _fake_features(8, dim, seed=0), _fake_features(5, dim, seed=1)
    curves = few_shot_curves(bundle, pool, test, names, "a photo of a {}.", shots=(1, 2), draws=2,
                             variants={"CoOp": dict(init="a photo of a")})
    assert set(curves.method) == {"hand prompt", "linear probe", "CoOp"}
    assert len(curves) == 2 * 2 * 3 and curves.accuracy.between(0, 1).all()
    hand = curves[curves.method == "hand prompt"].accuracy
    assert hand.nunique() == 1                                           # the hand prompt learns nothing
    probe2 = curves[(curves.method == "linear probe") & (curves.shots == 2)].accuracy
    assert probe2.mean() > 0.5                                           # clustered features are learnable
    b2n = base_to_new(bundle, pool, test, names, "a photo of a {}.", shots=2, draws=2)
    assert list(b2n.method) == ["hand prompt", "CoOp"] * 2
    row = b2n.iloc[1]
    assert row.H == pytest.approx(2 * row.base * row.new / (row.base + row.new))


# --- CoCoOp (chapter 11) ---------------------------------------------------------------------------

@BOTH_MODELS
def test_conditional_prompt_with_zero_shift_is_the_real_prompt_for_every_image(make):
    from clipnotes.coop import ConditionalPromptLearner
    bundle = make()
    cl = ConditionalPromptLearner(bundle, NAMES, init="a photo of a")
    text_width, embed = bundle.model.text_projection.shape                   # CoCoOp: D → D/16 → W
    assert cl.meta_net[0].out_features == max(1, embed // 16) and cl.meta_net[-1].out_features == text_width
    with torch.no_grad():
        cl.meta_net[-1].weight.zero_()
        cl.meta_net[-1].bias.zero_()
        feats = torch.nn.functional.normalize(torch.randn(2, embed), dim=-1)
        per_image = cl.class_embeddings(bundle.model, feats)
    assert per_image.shape == (2, len(NAMES), embed)
    real = _real_prompt_features(bundle, "a photo of a {}.")
    assert torch.allclose(per_image[0], real, atol=1e-5) and torch.allclose(per_image[1], real, atol=1e-5)


def test_conditional_prompt_depends_on_the_image_and_trains_context_and_meta_net():
    from clipnotes.coop import ConditionalPromptLearner
    bundle = create_mini("shipped")
    bundle.model.requires_grad_(False)
    cl = ConditionalPromptLearner(bundle, NAMES, init="a photo of a", seed=1)
    feats = torch.nn.functional.normalize(torch.randn(3, bundle.model.text_projection.shape[1]), dim=-1)
    emb = cl.embeddings_for(feats).view(3, len(NAMES), -1, cl.prefix.shape[-1])
    shift = cl.meta_net(feats)
    assert torch.allclose(emb[1, 2, 1:1 + cl.n_ctx], cl.ctx + shift[1], atol=1e-6)      # v_m + π(x), every m
    assert torch.equal(emb[0, 0, :1], cl.prefix[0]) and torch.equal(emb[2, 1, 1 + cl.n_ctx:], cl.suffix[1])
    per_image = cl.class_embeddings(bundle.model, feats)
    assert not torch.allclose(per_image[0], per_image[1])                              # the prompt follows x
    cl.logits(bundle.model, feats, 10.0).logsumexp(1).sum().backward()
    assert cl.ctx.grad is not None and all(p.grad is not None for p in cl.meta_net.parameters())
    assert all(p.grad is None for p in bundle.model.parameters())
    again = ConditionalPromptLearner(bundle, NAMES, init="a photo of a", seed=1)
    assert torch.equal(again.meta_net[0].weight, cl.meta_net[0].weight)                # seeded
    new = cl.for_classes(bundle, ["square", "cross"])
    assert torch.equal(new.ctx, cl.ctx) and torch.equal(new.meta_net[2].weight, cl.meta_net[2].weight)
    assert new.class_embeddings(bundle.model, feats).shape == (3, 2, feats.shape[1])


def test_cocoop_trains_at_batch_one_and_base_to_new_compares_it_with_coop():
    from clipnotes.coop import (COCOOP_EPOCHS, ConditionalPromptLearner, base_to_new, base_to_new_runs, fit_cocoop,
                                prompt_accuracy)
    bundle = create_mini("shipped")
    names = ["star", "heart", "circle", "square"]
    dim = bundle.encode_texts(["star"]).shape[1]
    pool, test = _fake_features(8, dim, seed=0), _fake_features(5, dim, seed=1)
    learner = fit_cocoop(bundle, names, pool.features[:8], pool.labels[:8], max_epochs=2)
    acc = prompt_accuracy(bundle, learner, test.features, test.labels, batch_size=3)   # batched = whole
    assert acc == prompt_accuracy(bundle, learner, test.features, test.labels, batch_size=100)
    assert COCOOP_EPOCHS == 10
    run = base_to_new_runs(bundle, pool, test, names, "a photo of a {}.", shots=2, draws=2, max_epochs=2,
                           methods=("CoOp", "CoCoOp"))
    b2n = run.table
    assert list(b2n.method) == ["hand prompt", "CoOp", "CoCoOp"] * 2
    assert (b2n.seconds[b2n.method != "hand prompt"] > 0).all() and b2n[["base", "new"]].stack().between(0, 1).all()
    assert len(run.shots[1][1]) == 2 * 2 and set(run.shots[1][1].tolist()) == {0, 1}      # 2 shots of 2 base classes
    h = b2n.pivot(index="draw", columns="method", values="H")
    gap = run.gap("CoCoOp", "CoOp", "H")
    assert gap.diff == pytest.approx((h["CoCoOp"] - h["CoOp"]).mean()) and gap.se >= 0
    same = run.gap("CoOp", "CoOp", "new")
    assert same.diff == 0 and same.se == 0                                             # paired: no noise
    assert isinstance(run.learners["CoCoOp", 0], ConditionalPromptLearner)
    with pytest.raises(ClipnotesError, match="unknown prompt learner"):
        base_to_new(bundle, pool, test, names, "a photo of a {}.", shots=2, draws=1, methods=("MaPLe",))


def test_unconditioned_cocoop_is_the_context_plus_the_mean_shift():
    from clipnotes.coop import ConditionalPromptLearner
    bundle = create_mini("shipped")
    cl = ConditionalPromptLearner(bundle, NAMES, init="a photo of a", seed=2)
    feats = torch.nn.functional.normalize(torch.randn(4, bundle.model.text_projection.shape[1]), dim=-1)
    plain = cl.unconditioned(bundle, feats)
    with torch.no_grad():
        assert torch.allclose(plain.ctx, cl.ctx + cl.meta_net(feats).mean(0))
        same = feats[:1].expand(3, -1)                   # one image: its shift is the mean shift
        assert torch.allclose(cl.unconditioned(bundle, same)(bundle.model), cl.class_embeddings(bundle.model, same)[0],
                              atol=1e-5)
