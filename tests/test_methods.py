"""Every registered unlearning method on a reduced digits tier, and each method's own pieces."""

import json

import pytest
import torch
import torch.nn.functional as F

from pgu import GramStats
from pgu.bench.methods import MethodContext, get_method, method_names, method_settings, run_method
from pgu.data import load_dataset
from pgu.zoo.recipes import load_recipe
from pgu.zoo.training import train_model

EXPECTED = {"finetune", "neggrad", "neggrad+", "random-label", "boundary-shrink", "scrub", "ssd", "salun",
            "l1-sparse", "pgu", "pgu-energy", "pgu-heldout"}
DATA_FREE = {"neggrad", "boundary-shrink", "pgu", "pgu-energy", "pgu-heldout"}
# Run at their published settings for a digits tier's share of epochs, fine-tuning (plain or l1)
# and SCRUB leave this well-separated class as confident as before or more (measured: 0.984 ->
# 0.992 / 0.992 / 0.985): their forgetting needs longer or faster training. The test of their
# mechanism gives them the original training's rate and a few epochs.
MECHANISM = {"finetune": dict(lr=0.1, epochs=3), "l1-sparse": dict(lr=0.1, epochs=3),
             "scrub": dict(lr=0.01, max_steps=3, epochs=3)}


@pytest.fixture(scope="module")
def digits_task():
    """A digits CNN trained 12 epochs (plain cross-entropy, as the baselines train), its statistics,
    class 3 to forget."""
    torch.manual_seed(0)
    splits = load_dataset("digits")
    cfg = load_recipe("digits").train
    from dataclasses import replace

    model = train_model("digits-cnn", splits, replace(cfg, epochs=12, label_smoothing=0.0)).model.eval()
    stats = GramStats().fit(model, splits.train.loader(256))
    mask = splits.train.y == 3
    return splits, model, stats, splits.train.subset(mask), splits.train.subset(~mask)


def _context(splits, stats, **kw):
    mean, std = splits.info["normalise"]
    return MethodContext(num_classes=10, train_epochs=20, forget_mode="class", val_loader=splits.val.loader(256),
                         stats=stats, seed=0, pixel_mean=(mean,), pixel_std=(std,), **kw)


def _forget_scores(model, data):
    with torch.no_grad():
        p = F.softmax(model(data.x), 1)
    return float((p.argmax(1) == data.y).float().mean()), float(p[torch.arange(len(data.y)), data.y].mean())


class NeverIterated:
    """A retain loader that fails the test if anything iterates it."""

    def __iter__(self):
        raise AssertionError("a data-free method iterated the retain loader")


def test_every_method_is_registered_with_settings_and_a_source():
    assert set(method_names()) == EXPECTED
    for name in method_names():
        info, run = get_method(name)
        assert info.name == name and callable(run) and info.reference and info.summary
        assert info.data_free == (name in DATA_FREE), name
        settings, source = method_settings(name)
        assert len(source) > 20 and "batch_size" in settings, name
    with pytest.raises(ValueError, match="unknown unlearning method"):
        get_method("nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_unlearns_a_copy_and_lowers_forget_accuracy_or_confidence(name, digits_task):
    splits, model, stats, forget, retain = digits_task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings, _ = method_settings(name)
    if "epochs" in MECHANISM.get(name, {}):
        settings.pop("epochs_share")
    settings.update(MECHANISM.get(name, {}))
    size = settings["batch_size"]
    retain_loader = NeverIterated() if name in DATA_FREE else retain.loader(settings.get("retain_batch_size", size),
                                                                             shuffle=True)
    info, run = get_method(name)
    result = run(model, forget.loader(size), retain_loader, settings, _context(splits, stats))
    unlearned = result.model
    assert type(unlearned) is type(model) and unlearned is not model
    assert {k: v.shape for k, v in unlearned.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the input model changed"
    acc0, conf0 = _forget_scores(model, forget)
    acc1, conf1 = _forget_scores(unlearned.eval(), forget)
    assert acc1 < acc0 or conf1 < conf0, (name, acc0, acc1, conf0, conf1)
    assert result.samples_processed > 0 and not result.hit_budget
    json.dumps(result.details)  # goes into the bench's results


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_at_its_published_settings_runs_on_a_copy(name, digits_task):
    splits, model, stats, forget, retain = digits_task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings, _ = method_settings(name)
    result = run_method(name, model, forget.loader(settings["batch_size"]),
                        retain.loader(settings.get("retain_batch_size", settings["batch_size"]), shuffle=True),
                        _context(splits, stats))
    assert result.model is not model and result.samples_processed > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED - {"pgu", "pgu-energy", "pgu-heldout"}))
def test_method_stops_at_the_budget(name, digits_task):
    splits, model, stats, forget, retain = digits_task
    settings, _ = method_settings(name)
    result = run_method(name, model, forget.loader(8), retain.loader(8), _context(splits, stats, max_samples=40),
                        batch_size=8)
    assert result.hit_budget and result.samples_processed <= 40


def test_run_method_refuses_unknown_settings_and_missing_retain_data(digits_task):
    splits, model, stats, forget, retain = digits_task
    with pytest.raises(ValueError, match="has no settings"):
        run_method("finetune", model, forget.loader(64), retain.loader(64), _context(splits, stats), learning_rate=1)
    with pytest.raises(ValueError, match="not a data-free method"):
        run_method("scrub", model, forget.loader(64), None, _context(splits, stats))
    with pytest.raises(ValueError, match="Gram statistics"):
        run_method("pgu", model, forget.loader(64), None, _context(splits, None))


def test_random_wrong_labels_are_wrong_and_cover_every_other_class():
    from pgu.bench.methods.gradient import random_wrong_labels

    y = torch.arange(5).repeat(400)
    wrong = random_wrong_labels(y, 5, torch.Generator().manual_seed(0))
    assert not torch.any(wrong == y) and wrong.min() >= 0 and wrong.max() < 5
    for c in range(5):
        assert set(wrong[y == c].tolist()) == set(range(5)) - {c}


def test_distill_kl_is_zero_for_equal_outputs_and_matches_the_definition():
    from pgu.bench.methods.scrub import distill_kl

    s, t = torch.randn(6, 4), torch.randn(6, 4)
    assert float(distill_kl(t, t, 4.0)) == pytest.approx(0, abs=1e-6)
    p, q = F.softmax(t / 4, 1), F.softmax(s / 4, 1)
    by_hand = 16 * float((p * (p.log() - q.log())).sum(1).mean())
    assert float(distill_kl(s, t, 4.0)) == pytest.approx(by_hand, rel=1e-5)


def test_ssd_dampens_exactly_the_selected_weights():
    from pgu.bench.methods.ssd import dampen_

    p = torch.tensor([1.0, 2.0, 3.0, 4.0])
    i_f = torch.tensor([5.0, 0.5, 30.0, 0.0])
    i_d = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert dampen_([p], [i_f], [i_d], alpha=2.0, lam=1.0) == 2
    # index 0: 5 > 2 -> times min(1/5, 1); 1: not selected; 2: times 1/30; 3: 0 > 0 is false
    torch.testing.assert_close(p, torch.tensor([0.2, 2.0, 0.1, 4.0]))


def test_salun_mask_keeps_the_share_and_masked_weights_stay_fixed(digits_task):
    from pgu.bench.methods.base import Budget
    from pgu.bench.methods.salun import saliency_mask

    splits, model, stats, forget, retain = digits_task
    import copy

    probe = copy.deepcopy(model)
    masks = saliency_mask(probe, forget.loader(64), torch.device("cpu"), 0.3, Budget(None))
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.3 * total)
    settings, _ = method_settings("salun")
    settings.update(mask_share=0.3)
    result = get_method("salun")[1](model, forget.loader(64), retain.loader(64, shuffle=True), settings,
                                    _context(splits, stats))
    for (name, p0), p1, m in zip(model.named_parameters(), result.model.parameters(), masks):
        assert torch.equal(p1[~m], p0[~m]), f"{name}: a masked-out weight moved"
        assert not torch.equal(p1[m], p0[m]) or m.sum() == 0


def test_boundary_shrink_labels_come_from_the_perturbed_images(digits_task):
    from pgu.bench.methods.boundary_shrink import fgsm_neighbour_labels

    splits, model, _, forget, _ = digits_task
    x, y = forget.x[:64], forget.y[:64]
    mean, std = _context(splits, None).pixel_scale(1)
    assert torch.equal(fgsm_neighbour_labels(model, x, y, 1e-9, mean, std), model(x).argmax(1))  # no move
    moved = fgsm_neighbour_labels(model, x, y, 0.5, mean, std)
    assert (moved != y).float().mean() > 0.5  # a large step leaves the class for most samples


def test_ssd_data_batches_mix_forget_samples_in_their_share():
    """I_D's batches hold D_f in its share of D, as a shuffled loader of D would (whole forget batches
    would make I_f > alpha I_D impossible whenever D_f is at least 1/alpha of D)."""
    from pgu.bench.methods.ssd import mixed_batches
    from pgu.data.base import ArrayDataset

    retain = ArrayDataset(torch.zeros(900, 2), torch.zeros(900, dtype=torch.long), torch.arange(900))
    ids = torch.arange(900, 1000)
    forget = ArrayDataset(torch.stack([torch.ones(100), ids.float()], 1), torch.ones(100, dtype=torch.long), ids)
    got = list(mixed_batches(retain.loader(90), forget.loader(32), torch.device("cpu"), seed=0))
    assert len(got) == 10
    for x, y in got:
        assert len(y) == 100 and int(y.sum()) == 10 and torch.equal(x[:, 0], y.float())
    seen = torch.cat([x[y == 1, 1] for x, y in got]).long()
    assert sorted(seen.tolist()) == ids.tolist()  # every forget sample once per pass


@pytest.mark.parametrize("name, passes", [("neggrad", 5), ("boundary-shrink", 10)])
def test_forget_only_methods_keep_the_authors_passes_over_the_forget_set(name, passes):
    """settings.toml: a forget-only method's epochs are passes over D_f and do not scale with the training length."""
    from pgu.bench.methods.base import epochs_for

    settings, _ = method_settings(name)
    assert "epochs_share" not in settings
    for train_epochs in (3, 20, 182):
        assert epochs_for(settings, MethodContext(num_classes=10, train_epochs=train_epochs)) == passes


def test_pgu_heldout_serves_a_sample_request_with_its_own_loss_and_stop_and_counts_the_anchor(digits_task):
    splits, model, stats, _, _ = digits_task
    forget = splits.train.subset(torch.arange(len(splits.train)) % 10 == 0)
    context = _context(splits, stats)
    context.forget_mode = "sample"
    # this model trained without label smoothing (sharp logits): at the published 1.0 its 15-sample batches diverge
    result = run_method("pgu-heldout", model, forget.loader(64), None, context, lr=[0.3, 0.03])
    d = result.details
    assert 0 < d["target_FA"] <= 100 and d["tolerance"] > 0
    assert d["stop_reason"] in ("already_forgotten", "reached_target", "target_plateau", "val_drop", "max_epochs")
    assert result.samples_processed == d["samples_processed"] + d["anchor_samples"]
    if d["stop_reason"] != "already_forgotten":
        assert d["anchor_samples"] > 0
    with pytest.raises(ValueError, match="val loader"):
        context.val_loader = None
        run_method("pgu-heldout", model, forget.loader(64), None, context)
