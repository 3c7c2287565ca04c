import shutil

import open_clip
import pytest
import torch

from clipnotes import models
from clipnotes.models import create_mini, create_paper, mini_tokenizer
from clipnotes.profiles import get_profile
from clipnotes.utils import ClipnotesError
from clipnotes.zeroshot import zero_shot_head


# ----------------------------------------------------------------------------- tokenizer
def test_word_tokenizer_layout():
    tok = mini_tokenizer()
    ids = tok(["a photo of a star.", "zebra"])
    assert ids.shape == (2, tok.context_length)
    assert ids[0, 0] == tok.sot_id
    eot_pos = ids[0].argmax().item()            # open_clip's argmax pooling finds <eot>
    assert ids[0, eot_pos] == tok.eot_id == tok.vocab_size - 1
    assert tok.decode(ids[0]) == "a photo of a star ."
    assert ids[1, 1] == tok.unk_id and tok.unknown_words("zebra star") == ["zebra"]


def test_tokenizer_truncates_keeping_eot():
    tok = mini_tokenizer()
    ids = tok(" ".join(["star"] * 100))
    assert ids[0, -1] == tok.eot_id


# ----------------------------------------------------------------------------- profiles
def test_profiles(monkeypatch):
    monkeypatch.delenv("CLIPNOTES_PROFILE", raising=False)
    monkeypatch.setenv("CLIPNOTES_SEED", "3")
    p = get_profile()
    assert p.name == "mini" and p.seed == 3 and p.device == "cpu"
    with pytest.raises(ClipnotesError, match="unknown profile 'huge'; choose one of auto, mini, paper"):
        get_profile("huge")
    monkeypatch.setenv("CLIPNOTES_SEED", "x")
    with pytest.raises(ClipnotesError, match="CLIPNOTES_SEED"):
        get_profile("mini")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_paper_without_cuda_fails_early():
    with pytest.raises(ClipnotesError, match="needs a CUDA GPU"):
        get_profile("paper")


def test_paper_without_weights_or_permission(tmp_path):
    with pytest.raises(ClipnotesError, match="CLIPNOTES_DOWNLOAD=1"):
        create_paper("ViT-B-32-quickgelu", "openai", cache_dir=tmp_path, download=False)
    with pytest.raises(ClipnotesError, match="unknown open_clip model"):
        create_paper("ViT-Z-99", None)


# ----------------------------------------------------------------------------- checkpoints
def test_shipped_checkpoint_loads_and_is_small():
    assert models.MINI_CHECKPOINT.stat().st_size < 10 * 2**20
    b = create_mini("shipped")
    assert isinstance(b.model, open_clip.CLIP)
    assert b.pretrained.startswith("shipped-")


def test_the_crop_pretrained_tiny_clip_is_shipped_beside_the_first():
    """Chapter 12's second model: its own weights, checked against its own card."""
    crops = create_mini("crops")
    assert crops.pretrained.startswith("crops-") and crops.key != create_mini("shipped").key
    assert models.mini_card("crops")["config"]["crop_share"] > 0
    assert models.CROPS_CHECKPOINT.stat().st_size < 10 * 2**20


def test_missing_or_unknown_shipped_models_get_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "CROPS_CHECKPOINT", tmp_path / "gone.pt")
    with pytest.raises(ClipnotesError, match="pretrain-mini --crops"):
        create_mini("crops")
    with pytest.raises(ClipnotesError, match="no shipped tiny CLIP is called 'big'"):
        models.mini_card("big")


def test_corrupt_shipped_checkpoint_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "mini_clip.pt"
    shutil.copy(models.MINI_CHECKPOINT, bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    monkeypatch.setattr(models, "MINI_CHECKPOINT", bad)
    with pytest.raises(ClipnotesError, match="fails its sha256 check"):
        create_mini("shipped")


def test_corrupt_or_foreign_files_get_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ClipnotesError, match="corrupt or not a torch weights file"):
        create_mini(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(ClipnotesError, match="does not fit CLIP"):
        create_mini(foreign)
    with pytest.raises(ClipnotesError, match="does not exist"):
        create_mini(tmp_path / "missing.pt")


def test_checkpoint_round_trip(tmp_path):
    b = create_mini(None, seed=1)
    path = tmp_path / "w.pt"
    torch.save(b.model.state_dict(), path)
    c = create_mini(path)
    assert all(torch.equal(v, c.model.state_dict()[k]) for k, v in b.model.state_dict().items())


# ----------------------------------------------------------------------------- paper architectures
@pytest.mark.parametrize("name", models.PAPER_MODELS)
def test_paper_architectures_run_with_random_weights(name):
    b = create_paper(name, pretrained=None)
    assert b.image_size == 224
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)     # CIFAR-sized, upscaled on device
    with torch.no_grad():
        img = b.encode_images(images)
        txt = b.encode_texts(["a photo of a cat.", "a photo of a dog."])
    assert img.shape == txt.shape == (2, 512)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-4)


# ----------------------------------------------------------------------------- zero-shot head
def test_zero_shot_head_equals_one_built_by_hand():
    b = create_mini("shipped")
    templates = ["a photo of a {}.", "a sketch of a {}."]
    names = ["star", "heart", "circle"]
    h1 = zero_shot_head(b, names, templates)
    with torch.no_grad():                       # the head written out: normalise, mean, renormalise
        cols = [b.encode_texts([t.format(c) for t in templates]).mean(0) for c in names]
        h2 = torch.stack([c / c.norm() for c in cols], 1)
    assert h1.shape == (b.model.text_projection.shape[1], 3)
    assert torch.allclose(h1, h2, atol=1e-5)


def test_zero_shot_head_rejects_empty_inputs():
    b = create_mini("shipped")
    with pytest.raises(ClipnotesError, match="class list is empty"):
        zero_shot_head(b, [], ["a photo of a {}."])
    with pytest.raises(ClipnotesError, match="template list is empty"):
        zero_shot_head(b, ["star"], [])


def test_template_ensembles_and_forward_selection():
    from clipnotes.zeroshot import ensemble_of_heads, forward_selection, probability_ensemble, template_heads
    bundle = create_mini("shipped")
    names, templates = ["star", "heart", "moon"], ["a photo of a {}.", "a sketch of a {}.", "{}"]
    single = template_heads(bundle, names, templates)
    assert torch.allclose(ensemble_of_heads(single.values()), zero_shot_head(bundle, names, templates), atol=1e-5)
    # synthetic features: class k sits on the good template's column k; the other templates are noise
    torch.manual_seed(0)
    good = torch.nn.functional.normalize(torch.randn(16, 3), dim=0)
    heads = {"good": good, **{f"noise{i}": torch.nn.functional.normalize(torch.randn(16, 3), dim=0) for i in range(3)}}
    labels = torch.arange(3).repeat(20)
    feats = torch.nn.functional.normalize(good.T[labels] + 0.05 * torch.randn(60, 16), dim=1)
    val = torch.arange(60) % 2 == 0
    history = forward_selection(heads, feats, labels, val)
    assert [h["n"] for h in history] == [1, 2, 3, 4] and history[0]["template"] == "good"
    assert history[0]["validation"] == 1.0 and history[0]["test"] == 1.0
    probs = probability_ensemble(feats, list(heads.values()))
    assert torch.allclose(probs.sum(1), torch.ones(60)) and probs.shape == (60, 3)
    with pytest.raises(ClipnotesError, match="at least one"):
        ensemble_of_heads([])


def test_corrupt_paper_weights_are_one_line(tmp_path, monkeypatch):
    from clipnotes import models
    bad = tmp_path / "open_clip_pytorch_model.bin"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(models, "paper_weights", lambda *a, **k: str(bad))
    with pytest.raises(ClipnotesError, match="corrupt or not this model's"):
        create_paper("ViT-B-32-quickgelu", "openai")


def test_loading_the_mini_model_leaves_the_chapters_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    create_mini("shipped")
    assert torch.equal(torch.rand(3), expected)         # CLIPNOTES_SEED, not seed 0, drives what follows
    fresh = lambda seed: create_mini(None, seed=seed).model.state_dict()
    a, b, c = fresh(1), fresh(1), fresh(2)
    assert all(torch.equal(a[k], b[k]) for k in a)      # a random init is still a function of its seed
    assert any(not torch.equal(a[k], c[k]) for k in a)
