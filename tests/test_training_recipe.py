"""The trainer's defaults are the shipped recipe: ``Recipe()``, ``train_config.yaml`` and the command line agree."""

from __future__ import annotations

import dataclasses
import re

import pytest

from maskwatch.training.cli import parse
from maskwatch.training.recipe import ARCH_SETTINGS, SHIPPED_CONFIG, Recipe, read_config, shipped_recipe


def test_recipe_defaults_are_the_shipped_train_config():
    assert Recipe() == shipped_recipe()
    # Every recipe setting the config names is a field; nothing in it is silently ignored but the run options.
    assert set(read_config(SHIPPED_CONFIG)) - {f.name for f in dataclasses.fields(Recipe)} == {"out"}


def test_command_line_defaults_are_the_recipe_defaults(tmp_path):
    recipe, run = parse(["--data-root", "d", "--out", "m.onnx"])
    assert recipe == Recipe()
    assert run["threads"] is None  # main() defaults it to 2
    recipe, run = parse(["--config", str(SHIPPED_CONFIG), "--data-root", "d"])
    assert recipe == Recipe()
    assert str(run["out"]) == "maskwatch/assets/mask_classifier.onnx"
    recipe, _ = parse(["--config", str(SHIPPED_CONFIG), "--data-root", "d", "--epochs", "3", "--no-wider"])
    assert recipe == dataclasses.replace(Recipe(), epochs=3, use_wider=False)


def test_another_arch_brings_its_own_settings_unless_named():
    ofm = Recipe.from_settings({"arch": "ofm"})
    assert (ofm.input_px, ofm.lr, ofm.batch, ofm.epoch_samples) == (64, 3e-3, 64, 12000)
    assert Recipe.from_settings({"arch": "ofm", "input_px": 80}).input_px == 80
    assert Recipe.from_settings({"arch": "efficientnet_lite0"}) == Recipe()
    assert set(ARCH_SETTINGS) == {"ofm", "efficientnet_lite0", "efficientnet_lite1"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"arch": "resnet"}, "unknown arch"),
        ({"in_domain_share": 1.0}, "in_domain_share must be in [0, 1)"),
        ({"epochz": 3}, "unknown recipe setting(s) ['epochz']"),
        ({"epochs": 2.5}, "expected int"),
        ({"use_wider": "no"}, "expected bool"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Recipe.from_settings(settings)


def test_val_sets_from_a_comma_list():
    assert Recipe.from_settings({"val_sets": "andrewmvd_dev, jolignier_dev"}).val_sets == Recipe().val_sets
