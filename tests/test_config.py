"""Config validation: every error names the key, the bad value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from gradkit.config import ConfigError, GradkitConfig, load_config, preset_path


def test_presets_load_and_default_is_stock():
    default = load_config("default")
    assert default.clip.mode == "stock"
    assert default.monitor.enabled
    assert load_config(None) == default
    assert load_config(str(preset_path("defect"))).monitor.on_nonfinite == "skip"


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"monitr": {}}, ["monitr", "unknown key", "did you mean 'monitor'", "allowed keys here"]),
        ({"monitor": {"evry": 2}}, ["monitor.evry", "did you mean 'every'"]),
        ({"monitor": {"every": 0}}, ["monitor.every", "greater than or equal to 1", "got 0"]),
        ({"monitor": {"on_nonfinite": "explode"}}, ["monitor.on_nonfinite", "'skip', 'stop' or 'warn'",
                                                    "got 'explode'"]),
        ({"clip": {"mode": "agcc"}}, ["clip.mode", "'agc'", "'autoclip'", "got 'agcc'"]),
        ({"clip": {"mode": "norm", "max_norm": -1}}, ["clip.max_norm", "greater than 0", "got -1"]),
        ({"clip": {"mode": "autoclip", "percentile": 150}}, ["clip.percentile", "less than or equal to 100"]),
        ({"clip": {"mode": "norm", "clip_factor": 0.1}}, ["clip", "clip_factor is not a parameter of clip "
                                                          "mode 'norm'", "max_norm, norm_type"]),
        ({"monitor": {"alerts": {"exploding_factor": 0.5}}}, ["monitor.alerts.exploding_factor", "greater than 1"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(data, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("clip:\n  mode: norm\n  max_norm: zero\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*clip\.max_norm.*got 'zero'"):
        load_config(path)
    path.write_text("clip: [unbalanced\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown gradkit preset 'nope'; presets: default, defect"):
        load_config("nope")


def test_overrides_apply_and_mode_switch_starts_clip_fresh(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"clip": {"mode": "autoclip", "percentile": 5}}))
    cfg = load_config(path, {"clip.mode": "agc", "clip.clip_factor": 0.02, "monitor.every": 3})
    assert cfg.clip.mode == "agc"
    assert cfg.clip.params() == {"clip_factor": 0.02}
    assert cfg.monitor.every == 3
    same = load_config(path, {"clip.percentile": 20})
    assert same.clip.params() == {"percentile": 20}
    with pytest.raises(ConfigError, match=r"monitor\.every is a value, not a section"):
        load_config(None, {"monitor.every.x": 1})


def test_resolved_yaml_round_trips():
    cfg = load_config("default", {"clip.mode": "norm", "clip.max_norm": 3.0})
    again = GradkitConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_hyps_given_to_yolo_replace_the_config_s_and_say_what_changed():
    """What ``gradkit train`` and the demo do with the hyps given on the command line (``given`` as yolo parsed it):
    a number replaces the configured value, Ultralytics' default included; a value that is no number, or a key the
    config does not set, is left alone. Hand-made case."""
    cfg = load_config(None, {"augment.ultralytics": {"degrees": 4.0, "fliplr": 0.0, "hsv_v": 0.1}})
    changed_cfg, changed = cfg.with_given_hyps({"degrees": 0.0, "fliplr": 0, "hsv_v": "abc", "scale": 0.2,
                                                "epochs": 3, "flipud": True})
    assert changed_cfg.augment.ultralytics == {"degrees": 0.0, "fliplr": 0.0, "hsv_v": 0.1}
    assert changed == {"degrees": (4.0, 0.0)}
    assert cfg.augment.ultralytics["degrees"] == 4.0  # the original untouched
    assert cfg.with_given_hyps({"epochs": 3}) == (cfg, {})


@pytest.mark.parametrize(("key", "value"), [("report.conf", True), ("report.gallery", False),
                                            ("clip.max_norm", True), ("monitor.every", True),
                                            ("augment.copy_paste.class_weights", [True, 1, 1, 1]),
                                            ("augment.ultralytics", {"degrees": True})])
def test_true_or_false_is_not_taken_for_a_number(key, value):
    """``gradkit.report.conf=yes`` (YAML reads yes as true) became conf 1.0 and ``gallery=off`` 0 galleries: pydantic
    reads a bool as 1 or 0 where a number is asked for. Found by review."""
    overrides = {key: value} if key != "clip.max_norm" else {"clip.mode": "norm", key: value}
    named = rf"gradkit\.{key.replace('.', '[.]')}=.*: .*numbers, not true" if not isinstance(value, bool) else \
        rf"gradkit\.{key.replace('.', '[.]')}={value}: .*numbers, not {str(value).lower()}"
    with pytest.raises(ConfigError, match=named):
        load_config(None, overrides)
    assert load_config(None, {"report.enabled": False}).report.enabled is False  # a bool where one is asked for
