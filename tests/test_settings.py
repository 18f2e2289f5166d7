"""PGUSettings: one object, checked in one place, read the same way by unlearn, the bench and the store."""

import pytest
import torch

from pgu import CoreGradientSpace, GramStats, PGUSettings
from pgu.settings import SELECTED_DIR, TIER_OVERRIDES, read_selected_section
from pgu.store.settings import check_settings


def test_each_mode_runs_with_its_own_rate_and_threshold():
    s = PGUSettings(lr=(0.2, 0.02), class_lr=(0.5, 0.05), poison_lr=(0.3, 0.1), threshold=0.8, poison_threshold=0.95)
    assert s.lr_for("sample") == (0.2, 0.02) and s.lr_for("class") == (0.5, 0.05) and s.lr_for("poison") == (0.3, 0.1)
    assert s.threshold_for("sample") == s.threshold_for("class") == 0.8 and s.threshold_for("poison") == 0.95
    run = s.for_mode("class")
    assert run.lr == (0.5, 0.05) and run.threshold == 0.8 and run.class_lr is None and run.poison_lr is None
    assert s.for_mode("poison", lr=0.4).lr == (0.4, 0.4)  # an override is the request's own rate, whatever its mode
    unset = PGUSettings(poison_lr=None, poison_threshold=None)
    assert unset.lr_for("poison") == unset.lr and unset.threshold_for("poison") == unset.threshold
    with pytest.raises(ValueError, match="mode must be"):
        s.for_mode("rows")


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(threshold=-0.1), dict(rule="svd"), dict(bias="free"),
                                 dict(lr=(0.1,)), dict(lr=(0.1, -1)), dict(class_lr=(0.0, 0.1)), dict(epochs=0),
                                 dict(batch_size=2.5), dict(momentum=1.0), dict(weight_decay=-1e-4),
                                 dict(poison_threshold=2)])
def test_every_setting_is_checked_on_construction_and_replace(bad):
    with pytest.raises((ValueError, TypeError)):
        PGUSettings(**bad)
    with pytest.raises((ValueError, TypeError)):
        PGUSettings().replace(**bad)


def test_unknown_settings_are_refused_with_the_names_pgu_takes():
    with pytest.raises(ValueError, match="no settings \\['offset'\\].*threshold"):
        PGUSettings.from_dict({"offset": 0.1})
    back = PGUSettings.from_dict(PGUSettings(class_lr=(0.5, 0.05)).to_dict())
    assert back == PGUSettings(class_lr=(0.5, 0.05)) and back.class_lr == (0.5, 0.05)


def test_the_store_and_the_subspace_accept_and_refuse_the_same_thresholds():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    stats = GramStats().fit(model, [torch.randn(8, 3)])
    for threshold in (0.0, 0.5, 1.0):
        settings, _ = check_settings({"threshold": threshold})
        assert settings.threshold == threshold
        CoreGradientSpace(threshold).fit(stats)
    for threshold in (-0.1, 1.01):
        with pytest.raises(ValueError):
            check_settings({"threshold": threshold})
        with pytest.raises(ValueError):
            CoreGradientSpace(threshold).fit(stats)


def test_a_tier_takes_its_overrides_then_its_selected_rates_per_mode():
    assert PGUSettings.for_tier("fashion", "sample") == PGUSettings()  # no override, no selected file
    published = PGUSettings.for_tier("mnist", "class", "published")
    assert published == PGUSettings(**TIER_OVERRIDES["mnist"])
    for mode in ("sample", "class"):
        chosen = read_selected_section(SELECTED_DIR / f"mnist-{mode}.toml", "pgu")
        selected = PGUSettings.for_tier("mnist", mode)
        for key, value in chosen.items():
            assert getattr(selected, key) == tuple(value)
    every_mode = PGUSettings.for_tier("mnist")  # what a store serves: each mode's own selected rate
    assert every_mode.lr_for("sample") == PGUSettings.for_tier("mnist", "sample").lr_for("sample")
    assert every_mode.lr_for("class") == PGUSettings.for_tier("mnist", "class").lr_for("class")
    with pytest.raises(ValueError, match="'published', 'selected' or a selected-settings file"):
        PGUSettings.for_tier("mnist", "sample", "nowhere.toml")
