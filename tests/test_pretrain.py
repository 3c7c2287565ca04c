import math

import pytest
import torch

from clipnotes.models import create_mini
from clipnotes.pretrain import CROPS_SHARE, PretrainConfig, lr_at, pretrain
from clipnotes.utils import ClipnotesError, load_torch

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


def test_crop_pretraining_crops_its_share_of_each_batch_the_same_way_every_run():
    """`pretrain-mini --crops`: the first crop_share of a batch are crops drawn from the step's own
    generator (a resumed run sees the same ones); the rest, and every image of a run without
    crops, reach the model as rendered."""
    from clipnotes.pretrain import pretraining_images
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    assert pretraining_images(images, TINY, step=3) is images
    cfg = PretrainConfig(crop_share=0.75)
    seen = pretraining_images(images, cfg, step=3)
    assert seen.shape == (8, 3, 16, 16) and seen.dtype == torch.float32
    assert torch.equal(seen[6:], images[6:].float() / 255)
    assert all(not torch.allclose(seen[i], images[i].float() / 255) for i in range(6))
    assert torch.equal(pretraining_images(images, cfg, step=3), seen)
    assert not torch.equal(pretraining_images(images, cfg, step=4)[:6], seen[:6])
    with pytest.raises(ClipnotesError, match="crop_share must lie in"):
        PretrainConfig(crop_share=1.5)


def test_crops_change_the_run_key_and_leave_uncropped_keys_alone():
    assert PretrainConfig(crop_share=0.75).key != PretrainConfig().key
    assert PretrainConfig(crop_share=0.75).key != PretrainConfig(crop_share=0.75, crop_scale_min=0.3).key
    assert PretrainConfig(crop_scale_min=0.3).key == PretrainConfig().key   # no crops: the scale is unused


def test_the_readme_quotes_the_crops_card():
    """Chapter 12's second model: the README's numbers are its card's, and the card's key is what
    `pretrain-mini --crops` computes for its config today."""
    from pathlib import Path

    from clipnotes.models import mini_card
    card, readme = mini_card("crops"), (Path(__file__).resolve().parents[1] / "README.md").read_text()
    last = card["log"][-1]
    assert f"**{card['minutes']:.0f} minutes**" in readme
    assert f"{100 * last['zs_mean']:.1f} % zero-shot and\n{100 * last['retrieval_r1']:.1f} % R@1" in readme
    assert PretrainConfig(**card["config"]).key == card["config_key"]
    assert card["config"]["crop_share"] == CROPS_SHARE
