import math

import pytest
import torch

from clipnotes.models import create_mini
from clipnotes.pretrain import PretrainConfig, lr_at, pretrain
from clipnotes.utils import load_torch

TINY = PretrainConfig(steps=6, batch_size=16, warmup=2, eval_every=3, eval_per_domain=4, threads=1)


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path):
    straight = pretrain(TINY, tmp_path / "a", quiet=True)
    assert pretrain(TINY, tmp_path / "b", stop_after=4, quiet=True) == {"stopped_at": 4}
    resumed = pretrain(TINY, tmp_path / "b", quiet=True)
    wa = load_torch(tmp_path / "a" / "mini_clip.pt")
    wb = load_torch(tmp_path / "b" / "mini_clip.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert straight["sha256"] == resumed["sha256"]
    assert [e["step"] for e in resumed["log"]] == [3, 6]
    # the temperature never leaves [0, ln 100]
    assert 0 <= math.log(resumed["log"][-1]["logit_scale"]) <= math.log(100) + 1e-6
    # the written checkpoint loads as a model
    create_mini(tmp_path / "b" / "mini_clip.pt")


def test_learning_rate_schedule():
    cfg = PretrainConfig(steps=100, warmup=10, lr=1e-3)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) < 1e-5
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_one_schedule_for_every_loop():
    """Pretraining, fine-tuning, the linear head and CoOp share optim.cosine / warmup_cosine."""
    from clipnotes.optim import cosine, warmup_cosine
    cfg = PretrainConfig(steps=100, warmup=10, lr=1e-3)
    for step in (0, 5, 9, 10, 50, 99, 150):
        t = (step - 10) / 90
        by_hand = 1e-3 * (step + 1) / 10 if step < 10 else 0.5 * 1e-3 * (1 + math.cos(math.pi * min(1.0, t)))
        assert warmup_cosine(step, 100, 10, 1e-3) == pytest.approx(by_hand, rel=1e-12) == lr_at(step, cfg)
    assert cosine(0, 5, 0.002) == 0.002 and cosine(5, 5, 0.002) == 0.0 and cosine(9, 5, 0.002) == 0.0


def test_shipped_card_names_the_config_key_of_its_run():
    """The card's key is what `pretrain-mini` computes for the card's config today (the world's
    behavioural fingerprint included), so a re-run reproduces into the same run directory."""
    from clipnotes.models import mini_card
    card = mini_card()
    assert PretrainConfig(**card["config"]).key == card["config_key"]


def test_the_readme_quotes_the_card():
    """The README's numbers about the shipped checkpoint are the card's, not typed from memory."""
    from pathlib import Path

    from clipnotes.models import mini_card
    card, readme = mini_card(), (Path(__file__).resolve().parents[1] / "README.md").read_text()
    last = card["log"][-1]
    assert f"{100 * last['zs_mean']:.1f} % single-prompt zero-shot" in readme
    assert f"{100 * last['retrieval_r1']:.1f} % image→caption" in readme
    assert f"**{card['minutes']:.0f} minutes on a 2-core CPU**" in readme
    assert f"{card['config']['steps']:,} steps of {card['config']['batch_size']} pairs" in readme
