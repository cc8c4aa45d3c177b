"""Issue 12 §3: a transform parameter the transform does not accept is an error before training;
``build_transforms`` accepts whatever ``attach`` accepts."""

from __future__ import annotations

import subprocess
import sys

import albumentations as A
import pytest
import yaml

from gradkit.augment import AugmentError, build_transforms
from gradkit.augment.pipeline import accepted_parameters
from gradkit.config import ConfigError, GradkitConfig, load_config, preset_path

TYPO = {"__class_fullname__": "GaussianBlur", "sigma_limitt": [0.1, 1.0]}


def _cfg(transforms):
    return {"augment": {"transforms": transforms}}


def test_misspelt_parameter_names_entry_parameter_and_closest_name():
    valid = {"__class_fullname__": "D4", "p": 1.0}
    with pytest.raises(ValueError, match=r"augment\.transforms\[1\]") as info:
        build_transforms(_cfg([valid, TYPO]))
    assert isinstance(info.value, ConfigError | AugmentError)
    message = str(info.value)
    assert "'sigma_limitt'" in message and "did you mean 'sigma_limit'?" in message


def test_misspelt_parameter_inside_oneof_is_named():
    entry = {"__class_fullname__": "OneOf", "p": 1.0,
             "transforms": [{"__class_fullname__": "Blur", "p": 1.0}, dict(TYPO, p=1.0)]}
    with pytest.raises(ValueError, match=r"augment\.transforms\[0\]\.transforms\[1\]: GaussianBlur has no "
                                         r"parameter 'sigma_limitt'; did you mean 'sigma_limit'"):
        build_transforms(_cfg([entry]))


def test_every_parameter_albumentations_writes_is_accepted_back():
    """Oracle: what A.to_dict serialises for a transform must pass the check unchanged."""
    for transform in (A.GaussianBlur(sigma_limit=(0.1, 1.0), p=0.3), A.PadIfNeeded(64, 64), A.SafeRotate(limit=10),
                      A.RGBShift(), A.OneOf([A.Blur(), A.MedianBlur()])):
        entry = A.to_dict(transform)["transform"]
        (built,) = build_transforms(_cfg([entry]))
        assert A.to_dict(built)["transform"] == entry


def test_accepted_parameters_of_a_known_transform():
    assert accepted_parameters(A.GaussianBlur) == {"__class_fullname__", "blur_limit", "sigma_limit", "p"}


def test_the_typo_stops_gradkit_train_before_training(tmp_path):
    cfg = tmp_path / "aug.yaml"
    cfg.write_text(yaml.safe_dump(_cfg([TYPO])))
    proc = subprocess.run([sys.executable, "-m", "gradkit.cli", "train", "model=yolo26n.yaml",
                           f"data={tmp_path / 'missing.yaml'}", f"gradkit={cfg}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "augment.transforms[0]" in proc.stderr and "sigma_limitt" in proc.stderr
    assert "did you mean 'sigma_limit'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _serialised(transforms) -> list[dict]:
    return [A.to_dict(t)["transform"] for t in transforms]


def test_build_transforms_accepts_what_attach_accepts(tmp_path):
    extra = [{"__class_fullname__": "GaussianBlur", "sigma_limit": [0.1, 1.0], "p": 0.5}]
    data = yaml.safe_load(preset_path("defect").read_text())
    data["augment"]["transforms"] = extra
    data["augment"]["preset"] = "defect"  # the file's auto resolves against training data; here: its largest list
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    expected = _serialised(build_transforms(GradkitConfig.model_validate(data)))
    assert [e["__class_fullname__"] for e in expected][-2:] == ["GaussNoise", "GaussianBlur"]
    for source in (str(path), path, data, load_config(path), load_config(path).augment):
        assert _serialised(build_transforms(source)) == expected, type(source)
    # a preset name (the file's auto chosen as it is on defects that stand out), and None for the default preset
    assert _serialised(build_transforms(load_config("defect", {"augment.preset": "defect"}))) == expected[:-1]
    assert build_transforms(None) == []


def test_defect_keeps_thin_lines_and_defect_sensor_adds_blur_and_jpeg():
    """Oracle: a 1 px diagonal line drawn by hand. Every transform of ``defect`` at p=1 keeps at least
    half of its contrast against the background; ``defect-sensor`` is ``defect`` plus exactly the
    blur and the JPEG, and its blur at the strongest setting does not keep half."""
    import numpy as np

    defect = build_transforms(load_config(None, {"augment.preset": "defect"}))
    sensor = build_transforms(load_config(None, {"augment.preset": "defect-sensor"}))
    assert _serialised(sensor)[:len(defect)] == _serialised(defect)
    assert [type(t).__name__ for t in sensor[len(defect):]] == ["GaussianBlur", "ImageCompression"]

    img = np.full((64, 64, 3), 128, np.uint8)
    idx = np.arange(8, 56)
    img[idx, idx] = 40  # 1 px wide, 48 px long, 45 degrees

    def contrast(out):
        return float(np.median(out[idx, idx, 0].astype(float)) - np.median(out[20:44, 44:60, 0]))

    def forced(t, **params):
        return A.from_dict({"transform": {**A.to_dict(t)["transform"], "p": 1.0, **params}})

    for t in defect:
        if type(t).__name__ in ("D4", "RandomBrightnessContrast", "RandomGamma", "Illumination", "CLAHE"):
            continue  # geometric (moves the line) or global intensity maps (scale the contrast by design)
        out = forced(t)(image=img)["image"]
        assert abs(contrast(out)) >= 0.5 * 88, type(t).__name__
    blurred = forced(sensor[len(defect)], blur_limit=[7, 7], sigma_limit=[3.0, 3.0])(image=img)["image"]
    assert abs(contrast(blurred)) < 0.5 * 88


def test_the_config_accepts_exactly_the_built_in_presets():
    """config.py may import only pydantic and yaml, so it names the presets again: keep the two equal."""
    import typing

    from gradkit.augment import PRESETS
    from gradkit.augment.pipeline import AUTO_CHOICES
    from gradkit.config import AugmentConfig

    assert set(typing.get_args(AugmentConfig.model_fields["preset"].annotation)) == {*PRESETS, "auto"}
    assert set(AUTO_CHOICES) <= set(PRESETS)
