import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipnotes import world as W
from clipnotes.classifiers import zero_shot_classifier
from clipnotes.evaluate import logits
from clipnotes.finetune import FinetuneConfig, finetune
from clipnotes.losses import context_kl, flyp_loss
from clipnotes.models import create_mini
from clipnotes.utils import ClipnotesError, load_torch
from clipnotes.wise import interpolate_state_dicts, wise
from clipnotes.zeroshot import zero_shot_head

NAMES = list(W.CLASSNAMES)
TEMPLATES = ["a photo of a {}.", "a sketch of a {}."]


@pytest.fixture(scope="module")
def bundle():
    return create_mini("shipped")


@pytest.fixture(scope="module")
def train():
    return W.World(0).dataset("finetune-test-unit", 64, spurious=0.9, domain="photo")


def test_interpolation_endpoints_and_errors():
    a = {"w": torch.zeros(2, 2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2, 2), "n": torch.tensor(5)}
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state_dicts(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate_state_dicts(a, b, 0.3)["w"], torch.full((2, 2), 0.3))
    with pytest.raises(ClipnotesError, match="different keys"):
        interpolate_state_dicts(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ClipnotesError, match="shape"):
        interpolate_state_dicts(a, {"w": torch.ones(3), "n": b["n"]}, 0.5)
    with pytest.raises(ClipnotesError, match="alpha"):
        interpolate_state_dicts(a, b, 1.5)


def test_zero_shot_classifier_starts_at_zero_shot(bundle, train):
    model = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    x = train.images(slice(0, 8))
    with torch.no_grad():
        ours = model(bundle.preprocess(x))
        zs = logits(bundle.encode_images(x), zero_shot_head(bundle, NAMES, TEMPLATES),
                    scale=bundle.model.logit_scale.exp().item())
    assert torch.allclose(ours, zs, atol=1e-4)


def test_flyp_loss_is_clip_loss_and_masking_removes_same_class_negatives():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    s = torch.tensor(20.0)
    assert torch.allclose(flyp_loss(img, txt, s), open_clip.ClipLoss()(img, txt, s))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    masked = flyp_loss(img, txt, s, labels)
    # with every pair its own class, masking changes nothing
    assert torch.allclose(flyp_loss(img, txt, s, torch.arange(6)), flyp_loss(img, txt, s))
    assert masked < flyp_loss(img, txt, s)          # fewer negatives, lower loss here


def test_context_kl_is_zero_for_equal_distributions():
    p = torch.randn(4, 7)
    assert context_kl(p, p).abs() < 1e-6
    assert context_kl(p, torch.randn(4, 7)) > 0


@pytest.mark.parametrize("loss", ["ce", "carft", "flyp"])
def test_interrupted_finetuning_resumes_to_the_same_weights(bundle, train, tmp_path, loss):
    cfg = FinetuneConfig(loss=loss, steps=6, batch_size=8, warmup=2, lr=1e-4, threads=1)
    straight = finetune(bundle, train, NAMES, TEMPLATES, cfg, quiet=True)
    assert finetune(bundle, train, NAMES, TEMPLATES, cfg, run_dir=tmp_path, save_every=2, stop_after=3,
                    quiet=True) is None
    assert "opt" in load_torch(tmp_path / "state.pt", "state")           # unfinished: resumable
    resumed = finetune(bundle, train, NAMES, TEMPLATES, cfg, run_dir=tmp_path, save_every=2, quiet=True)
    assert "opt" not in load_torch(tmp_path / "state.pt", "state")       # finished: weights and log only
    again = finetune(bundle, train, NAMES, TEMPLATES, cfg, run_dir=tmp_path, quiet=True)
    assert [(e["step"], e["loss"]) for e in again.log] == [(e["step"], e["loss"]) for e in resumed.log]
    assert all(torch.equal(v, again.end.state_dict()[k]) for k, v in resumed.end.state_dict().items())
    sa, sb = straight.end.state_dict(), resumed.end.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    assert [e["step"] for e in resumed.log] == list(range(1, 7))
    # the run moved away from the start, and WiSE at 0 / 1 gives back the endpoints
    assert any(not torch.equal(v, resumed.start.state_dict()[k]) for k, v in sb.items())
    w0 = wise(resumed.start, resumed.end, 0.0).state_dict()
    assert all(torch.equal(w0[k], v) for k, v in resumed.start.state_dict().items())


def test_flyp_writes_its_captions_with_caption_templates_and_keeps_the_heads_templates(bundle, train):
    from clipnotes.finetune import run_key
    cfg = FinetuneConfig(loss="flyp", steps=2, batch_size=8, warmup=1, lr=1e-4, threads=1)
    default = finetune(bundle, train, NAMES, TEMPLATES, cfg, quiet=True)
    same = finetune(bundle, train, NAMES, TEMPLATES, cfg, quiet=True, captions=TEMPLATES)
    photo = finetune(bundle, train, NAMES, TEMPLATES, cfg, quiet=True, captions=TEMPLATES[:1])
    sd, ss, sp = default.end.state_dict(), same.end.state_dict(), photo.end.state_dict()
    assert all(torch.equal(sd[k], ss[k]) for k in sd)                  # captions default to the templates
    assert any(not torch.equal(sd[k], sp[k]) for k in sd)              # other captions, another run ...
    assert photo.end.templates == TEMPLATES                            # ... whose head still uses every template
    key = lambda loss, captions: run_key(bundle, train, NAMES, TEMPLATES, FinetuneConfig(loss=loss), captions)
    assert key("flyp", TEMPLATES[:1]) != key("flyp", None) == key("flyp", TEMPLATES)
    assert key("ce", TEMPLATES[:1]) == key("ce", None)                 # cross-entropy writes no captions


def test_mini_photo_templates_never_call_a_photo_something_else():
    from clipnotes.templates import MINI_PHOTO_TEMPLATES, MINI_TEMPLATES
    styles = ("sketch", "drawing", "cartoon", "illustration", "painting", "watercolor", "pixel", "sprite")
    assert set(MINI_PHOTO_TEMPLATES) < set(MINI_TEMPLATES)
    assert all(not any(w in t for w in styles) for t in MINI_PHOTO_TEMPLATES)
    assert len(MINI_TEMPLATES) - len(MINI_PHOTO_TEMPLATES) == len(styles)


def test_bad_config_is_refused():
    with pytest.raises(ClipnotesError, match="unknown fine-tuning loss"):
        FinetuneConfig(loss="mse")


def test_linear_head_starts_at_zero_shot_and_learns(bundle):
    from clipnotes.finetune import train_linear_head
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(200, bundle.model.text_projection.shape[1], generator=g), dim=-1)
    labels = torch.arange(200) % 10
    head = zero_shot_head(bundle, NAMES, TEMPLATES)
    start = train_linear_head(feats, labels, head, 30.0, steps=0)
    assert torch.allclose(start(feats), logits(feats, head, 30.0), atol=1e-5)
    trained = train_linear_head(feats, labels, head, 30.0, steps=200, lr=1e-2)
    acc = lambda m: (m(feats).argmax(1) == labels).float().mean().item()
    assert acc(trained) > acc(start) + 0.2          # random labels: it can only fit them by training
    with pytest.raises(ClipnotesError, match="no training features"):
        train_linear_head(feats[:0], labels[:0], head, 30.0)


def test_wise_sweep_endpoints_are_the_two_models():
    from clipnotes.wise import ALPHAS, wise_sweep
    m0, m1 = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    rows = wise_sweep(m0, m1, lambda m: {"w": m.weight.sum().item()}, progress_bar=False)
    assert [r["alpha"] for r in rows] == list(ALPHAS)
    assert rows[0]["w"] == pytest.approx(m0.weight.sum().item()) and rows[-1]["w"] == pytest.approx(m1.weight.sum().item())


def test_domain_contexts_and_domain_reading():
    from clipnotes.carft import domain_contexts, domain_read_accuracy
    templates, domains = domain_contexts({"photo": ("photograph",), "cartoon": ("illustration", "comic")})
    assert templates == ["a photograph of a {}.", "an illustration of a {}.", "a comic of a {}."]
    assert domains == ["photo", "cartoon", "cartoon"]
    # two images: one puts its mass on the photo context, one splits it over the cartoon contexts
    ctx_logits = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.3, 0.3]]))
    assert domain_read_accuracy(ctx_logits, domains, "photo") == 0.5
    assert domain_read_accuracy(ctx_logits, domains, "cartoon") == 0.5


def test_cached_run_and_sweep_are_computed_once(bundle, train, tmp_path, monkeypatch):
    from clipnotes import finetune as FT
    from clipnotes import wise as wise_module
    from clipnotes.evaluate import EvalSets
    from clipnotes.profiles import get_profile
    from clipnotes.tasks import Benchmark
    from clipnotes.wise import sweep_run
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path))
    profile = get_profile("mini")
    bench = Benchmark("unit", train, NAMES, TEMPLATES, train=train)
    cfg = FinetuneConfig(steps=3, batch_size=8, warmup=1, threads=1)
    run = FT.run_finetune(profile, bundle, bench, cfg, quiet=True)
    assert run.run_dir is not None and run.run_dir.is_relative_to(tmp_path)
    evals = EvalSets(bundle, {"ID": W.World(0).dataset("finetune-test-unit-eval", 20)})
    rows = sweep_run(run, evals, alphas=(0.0, 1.0))
    assert rows[0]["ID"] == evals.accuracy(run.start)["ID"] and rows[1]["ID"] == evals.accuracy(run.end)["ID"]
    # features + the head give the same predictions as the classifier itself
    feats, labels = evals.features(run.end)["ID"]
    assert (run.end.head(feats).argmax(1) == labels).float().mean().item() == pytest.approx(rows[1]["ID"])
    # the second time, neither the run nor the sweep is recomputed
    monkeypatch.setattr(wise_module, "wise_sweep", lambda *a, **k: pytest.fail("sweep recomputed"))
    monkeypatch.setattr(FT, "batch_indices", lambda *a, **k: pytest.fail("run retrained"))
    again = FT.run_finetune(profile, bundle, bench, cfg, quiet=True)
    assert sweep_run(again, evals, alphas=(0.0, 1.0)) == rows
    sa, sb = run.end.state_dict(), again.end.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ood_at_id_reads_the_curve_between_alphas():
    import math

    import pandas as pd
    from clipnotes.wise import ood_at_id
    sweep = pd.DataFrame({"ID": [0.80, 0.90, 0.95, 0.94], "OOD mean": [0.70, 0.78, 0.74, 0.75]},
                         index=[0.0, 0.5, 0.8, 1.0])
    assert ood_at_id(sweep, 0.85) == pytest.approx(0.78)         # reaches α = 0.5 (ID 0.90 ≥ 0.85)
    assert ood_at_id(sweep, 0.93) == pytest.approx(0.756)        # on the way from α = 0.5 to 0.8
    assert ood_at_id(sweep, 0.945) == pytest.approx(0.745)       # two crossings (0.744, 0.745) and α = 0.8
    assert math.isnan(ood_at_id(sweep, 0.99))
    assert ood_at_id(sweep, 0.99, tol=0.05) == pytest.approx(0.75)


def test_frozen_features_are_the_start_models_features(bundle, train):
    from clipnotes.evaluate import frozen_features
    start = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    cached = frozen_features(start, train, bundle.preprocess, batch_size=16)
    with torch.no_grad():
        direct = start.features(bundle.preprocess(train.images(slice(0, 8))))
    assert cached.shape == (len(train), direct.shape[1]) and torch.allclose(cached[:8], direct, atol=1e-5)


def test_eval_sets_evaluate_each_weights_once(bundle, tmp_path):
    """EvalSets (chapters 5–7): a model whose weights were evaluated before is not run again — in
    memory, or from disk in a new EvalSets — and its answer equals evaluating the model directly."""
    from clipnotes.classifiers import zero_shot_classifier
    from clipnotes.evaluate import EvalSets
    from clipnotes.wise import wise
    data = {"ID": W.World(0).dataset("evalsets-cache-unit", 24)}
    model = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    calls = []
    forward = model.visual.forward
    model.visual.forward = lambda x: calls.append(len(x)) or forward(x)
    with torch.no_grad():
        direct = torch.cat([model(bundle.preprocess(x)).argmax(1) for x, _ in data["ID"].batches(10)])
    evals = EvalSets(bundle, data, batch_size=10, cache_dir=tmp_path)
    calls.clear()
    acc = evals.accuracy(model)
    assert acc["ID"] == (direct == evals.labels["ID"]).sum().item() / 24
    n = len(calls)
    assert n == 3                                            # 24 images in batches of 10
    assert evals.accuracy(model) == acc and len(calls) == n  # memory
    fresh = EvalSets(bundle, data, batch_size=10, cache_dir=tmp_path)
    assert fresh.accuracy(model) == acc and len(calls) == n  # disk
    # α = 0 of a WiSE mixture has θ₀'s weights exactly: the same entry
    other = zero_shot_classifier(bundle, NAMES, TEMPLATES[:1])
    mixed = wise(model, other, 0.0)
    assert fresh._model_key(mixed, None) == fresh._model_key(model, None)
    assert fresh._model_key(wise(model, other, 0.5), None) != fresh._model_key(model, None)
    feats, labels = fresh.features(model)["ID"]               # features were not kept: computed now
    assert len(calls) == n + 3 and feats.shape[0] == 24 and torch.equal(labels, evals.labels["ID"])
    assert torch.allclose(feats.norm(dim=-1), torch.ones(24), atol=1e-5)


def test_eval_sets_keep_every_model_within_their_memory_budget(bundle, monkeypatch):
    """EvalSets keeps the features of as many models as its byte budget holds (chapter 10 asks
    again for the features of models it evaluated many evaluations earlier), dropping the oldest."""
    from clipnotes.classifiers import zero_shot_classifier
    from clipnotes.evaluate import EvalSets, _nbytes
    evals = EvalSets(bundle, {"ID": W.World(0).dataset("evalsets-memo-unit", 12)}, batch_size=12)
    models = [zero_shot_classifier(bundle, NAMES, TEMPLATES[:1]) for _ in range(10)]
    for i, m in enumerate(models):
        with torch.no_grad():
            m.head.weight.add_(0.01 * i)                     # ten distinct weights
        evals.accuracy(m)
    calls = []
    forward = models[0].visual.forward
    models[0].visual.forward = lambda x: calls.append(len(x)) or forward(x)
    evals.features(models[0])                                # more than the old eight: still in memory
    assert calls == []
    one = _nbytes(evals._memo[next(iter(evals._memo))])
    monkeypatch.setattr(EvalSets, "MEMO_BYTES", 3 * one)     # room for three models
    evals.accuracy(zero_shot_classifier(bundle, NAMES, TEMPLATES))
    assert len(evals._memo) == 3
    evals.features(models[0])                                # dropped: encoded again
    assert calls == [12]


def test_lpft_head_inits(bundle, train):
    """LP-FT's starting heads: a random head at the zero-shot scale, and chapter 5's linear
    classifier on the frozen features; the encoder starts at the zero-shot one in both."""
    from clipnotes.evaluate import frozen_features
    from clipnotes.finetune import init_head, train_linear_head
    zs = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    rand, probe = zero_shot_classifier(bundle, NAMES, TEMPLATES), zero_shot_classifier(bundle, NAMES, TEMPLATES)
    init_head(rand, bundle, train, NAMES, TEMPLATES, FinetuneConfig(head_init="random", seed=3))
    assert torch.allclose(rand.head.weight.norm(dim=1), zs.head.weight.norm(dim=1))
    cos = F.cosine_similarity(rand.head.weight, zs.head.weight, dim=1)
    assert cos.abs().max() < 0.5                                    # not the text directions
    init_head(probe, bundle, train, NAMES, TEMPLATES, FinetuneConfig(head_init="probe"))
    feats = frozen_features(zs, train, bundle.preprocess)
    lin = train_linear_head(feats, torch.as_tensor(train.labels), zero_shot_head(bundle, NAMES, TEMPLATES),
                            bundle.model.logit_scale.exp().item())
    assert torch.allclose(probe.head.weight, lin.weight) and torch.allclose(probe.head.bias, lin.bias)
    sa, sb = probe.visual.state_dict(), zs.visual.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ClipnotesError, match="head_init"):
        FinetuneConfig(head_init="lucky")
    with pytest.raises(ClipnotesError, match="FLYP"):
        FinetuneConfig(loss="flyp", head_init="probe")


def test_frozen_features_are_encoded_once_per_weights(bundle, train):
    """CAR-FT's two runs and LP-FT's probe (chapters 7, 9) share one encoding of the training set."""
    from clipnotes.evaluate import frozen_features
    a = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    first = frozen_features(a, train, bundle.preprocess)
    assert frozen_features(zero_shot_classifier(bundle, NAMES, TEMPLATES), train, bundle.preprocess) is first
    with torch.no_grad():
        a.visual.proj.mul_(2.0) if getattr(a.visual, "proj", None) is not None else next(a.visual.parameters()).mul_(2.0)
    assert frozen_features(a, train, bundle.preprocess) is not first          # other weights: encoded again


def test_freeze_head_trains_the_encoder_behind_a_fixed_head(bundle, train):
    """PAINT (chapter 13): the patching task's zero-shot head stays as it was."""
    cfg = FinetuneConfig(steps=3, batch_size=8, warmup=1, lr=1e-4, threads=1, freeze_head=True)
    run = finetune(bundle, train.relabelled("size"), list(W.SIZES), ["a photo of a {} shape."], cfg, quiet=True)
    assert torch.equal(run.end.head.weight, run.start.head.weight) and run.end.head.weight.shape[0] == 3
    assert any(not torch.equal(p, q) for p, q in zip(run.end.visual.parameters(), run.start.visual.parameters()))
    with pytest.raises(ClipnotesError, match="freeze_head"):
        FinetuneConfig(loss="flyp", freeze_head=True)
