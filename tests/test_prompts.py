import pytest
import torch

from clipnotes.models import create_mini, create_paper
from clipnotes.prompts import PromptLearner, nearest_words
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
    from clipnotes.prompts import prompt_accuracy, train_coop
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
