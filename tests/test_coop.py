import pytest
import torch

from clipnotes.coop import PromptLearner, nearest_words
from clipnotes.models import create_mini, create_paper
from clipnotes.utils import ClipnotesError

NAMES = ["star", "heart", "circle"]


def _real_prompt_features(bundle, template):
    with torch.no_grad():
        return bundle.encode_texts([template.format(c) for c in NAMES])


@pytest.mark.parametrize("make", [lambda: create_mini("shipped"),
                                  lambda: create_paper("ViT-B-16-quickgelu", pretrained=None)],
                         ids=["mini", "ViT-B-16 random"])
def test_context_initialised_from_words_equals_the_real_prompt(make):
    bundle = make()
    pl = PromptLearner(bundle, NAMES, init="a photo of a")
    assert pl.n_ctx == 4
    with torch.no_grad():
        learned = pl(bundle.model)
    assert torch.allclose(learned, _real_prompt_features(bundle, "a photo of a {}."), atol=1e-5)


@pytest.mark.parametrize("make", [lambda: create_mini("shipped"),
                                  lambda: create_paper("ViT-B-16-quickgelu", pretrained=None)],
                         ids=["mini", "ViT-B-16 random"])
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
