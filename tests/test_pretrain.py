import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

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


def test_open_clip_loss_is_the_symmetric_infonce():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(14.3)
    logits = scale * img @ txt.T
    target = torch.arange(8)
    by_hand = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(open_clip.ClipLoss()(img, txt, scale), by_hand)
