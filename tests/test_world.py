import re

import numpy as np
import pytest
import torch

from clipnotes import world as W


def test_items_are_a_pure_function_of_seed_stream_and_index():
    a = W.World(0).dataset("test", 64)
    b = W.World(0).dataset("test", 64)
    assert torch.equal(a.images(), b.images())
    assert a.captions() == b.captions()
    # the same item rendered alone equals the item rendered in a batch
    img, label = a[17]
    assert torch.equal(img, a.images()[17]) and label == a.labels[17]
    # an offset window reproduces the same items
    c = W.World(0).dataset("test", 16, start=10)
    assert torch.equal(c.images(), a.images()[10:26])


def test_streams_and_seeds_differ():
    a = W.World(0).dataset("test", 256)
    assert not torch.equal(a.images(), W.World(1).dataset("test", 256).images())
    assert not torch.equal(a.images(), W.World(0).dataset("pretrain", 256).images())


def test_factor_distribution_is_roughly_uniform():
    f = W.World(0).factors(W.Split("pretrain", 20000))
    for name in W.FACTOR_NAMES:
        counts = np.bincount(getattr(f, name), minlength=len(W.FACTOR_VALUES[name]))
        expected = len(f) / len(counts)
        assert np.all(np.abs(counts - expected) < 0.1 * expected), name


def test_constraints_and_cycles():
    ds = W.World(3).dataset("test", 100, domain="sketch", shape=["star", "heart"])
    assert set(ds.factors.named("domain")) == {"sketch"}
    assert set(ds.factors.named("shape")) == {"star", "heart"}
    bal = W.World(0).dataset("test", 100, domain=W.Cycle(W.DOMAINS), shape=W.Cycle(range(10), every=5))
    pairs = set(zip(bal.factors.domain.tolist(), bal.factors.shape.tolist()))
    assert len(pairs) == 50
    with pytest.raises(ValueError, match="unknown factor"):
        W.World(0).dataset("test", 4, texture="wood")


def test_spurious_colour_correlation_strength():
    w = W.World(0)
    ds = w.dataset("finetune", 4000, spurious=0.9, domain="photo")
    tied = ds.factors.colour == np.asarray(w.spurious_colours())[ds.factors.shape]
    # 90% tied on purpose, plus the 1-in-10 random draws that land on the class colour
    assert 0.89 < tied.mean() < 0.93
    free = w.dataset("finetune", 4000, domain="photo")
    assert (free.factors.colour == np.asarray(w.spurious_colours())[free.factors.shape]).mean() < 0.15


def test_images_are_uint8_at_the_training_resolution():
    imgs = W.World(0).dataset("test", 10).images()
    assert imgs.dtype == torch.uint8 and imgs.shape == (10, 3, W.IMAGE_SIZE, W.IMAGE_SIZE)
    assert imgs.float().std() > 10  # not blank


def test_domains_look_different():
    """Sketches are grey, the other styles are coloured."""
    ds = W.World(0).dataset("test", 200, domain=W.Cycle(W.DOMAINS))
    imgs = ds.images().float()
    chroma = (imgs.max(1).values - imgs.min(1).values).mean((1, 2))
    dom = np.array(ds.factors.named("domain"))
    assert chroma[torch.from_numpy(dom == "sketch")].max() < 1.0
    assert chroma[torch.from_numpy(dom != "sketch")].mean() > 20


def test_caption_grammar():
    ds = W.World(0).dataset("pretrain", 3000)
    vocab = set(W.vocabulary())
    for text, shape, tilted, dom in zip(ds.captions(), ds.factors.named("shape"), ds.factors.tilted,
                                        ds.factors.named("domain")):
        words = re.findall(r"[a-z0-9]+|[,.]", text)
        assert set(words) <= vocab, text
        # articles agree with the next word
        for a, nxt in zip(words, words[1:]):
            if a in ("a", "an"):
                assert (a == "an") == (nxt[0] in "aeiou"), text
        # the caption names the object with one of its words
        key = "tilted square" if tilted else shape
        assert any(w in words for w, _ in W.SHAPE_WORDS[key]), text
        # colour is never mentioned where it cannot be seen
        if dom == "sketch":
            assert not set(words) & set(W.COLOURS) - {"white"}, text
        # positions are never captioned
        assert not set(words) & {"left", "right", "top", "bottom", "center"}, text


def test_caption_statistics_match_the_design():
    caps = W.World(0).dataset("pretrain", 5000).captions()
    n_words = np.array([len(c.split()) for c in caps])
    assert (n_words == 1).mean() < 0.02                    # bare nouns are rare
    framed = np.mean([c.startswith(W.FRAMES) for c in caps])
    assert 0.3 < framed < 0.5                              # "a photo of ..." about anything
    # "crescent" is a rare caption word, "moon" the common one
    text = " ".join(caps).split()
    assert text.count("moon") > 4 * text.count("crescent")


def test_vocabulary_asset_matches_the_world():
    from clipnotes.models import mini_vocabulary
    assert mini_vocabulary() == W.vocabulary()
