"""Each clip policy's parameters and defaults have one definition (gradkit.clip.POLICY_DEFAULTS)."""

from __future__ import annotations

from gradkit.clip import POLICY_DEFAULTS, make_clipper
from gradkit.config import CLIP_MODE_PARAMS, ClipConfig
from gradkit.docs import config_reference


def test_config_accepts_exactly_the_parameters_the_policies_define():
    assert set(CLIP_MODE_PARAMS) == set(POLICY_DEFAULTS)
    for mode, params in POLICY_DEFAULTS.items():
        assert set(CLIP_MODE_PARAMS[mode]) == set(params), mode


def test_unset_parameters_take_the_policy_defaults_and_do_not_share_them():
    cfg = ClipConfig(mode="agc")
    clipper = make_clipper(cfg.mode, **cfg.params())
    assert clipper.params == POLICY_DEFAULTS["agc"]
    clipper.params["exclude"].append("x")  # a clipper's own copy
    assert "x" not in POLICY_DEFAULTS["agc"]["exclude"]
    assert make_clipper("norm", max_norm=3.0).params == {**POLICY_DEFAULTS["norm"], "max_norm": 3.0}


def test_reference_shows_the_defaults_from_their_definition():
    rows = {line.split("|")[1].strip(): line for line in config_reference().splitlines() if line.startswith("| `")}
    assert f"norm: `{POLICY_DEFAULTS['norm']['max_norm']}`" in rows["`clip.max_norm`"]
    assert f"agc: `{POLICY_DEFAULTS['agc']['clip_factor']}`" in rows["`clip.clip_factor`"]
    assert f"autoclip: `{POLICY_DEFAULTS['autoclip']['percentile']}`" in rows["`clip.percentile`"]
