"""Model YAML variants written from Ultralytics' own (integrations/ultralytics/models.py).

Oracles: the channel counts Ultralytics' YAML states (yolo26n's first layer is ``Conv [64, 3, 2]``, times the
scale's width multiple, rounded up to a multiple of 8), the layer list of the installed model, and planted
YAMLs whose shape differs from the one each variant relies on.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from gradkit.integrations.ultralytics.models import installed_model, narrow_model, with_box_bins, write_model_yaml
from gradkit.integrations.ultralytics.seams import SeamError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _built(cfg: dict, nc: int = 4):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel({**cfg, "nc": nc}, nc=nc, verbose=False)


def _convs(model) -> list[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_half_width_halves_the_first_layer_and_keeps_every_layer():
    stock_cfg = narrow_model("yolo26n.yaml", 1.0)  # the installed n row, unchanged
    narrow_cfg = narrow_model("yolo26n.yaml", 0.5)
    assert narrow_cfg["scales"] == {"n": [0.5, 0.125, 1024]}  # yolo26n: depth 0.5, width 0.25, cap 1024
    stock, narrow = _built(stock_cfg), _built(narrow_cfg)
    # layer 0 is Conv [64, 3, 2]: 64 x 0.25 = 16 channels in yolo26n, 64 x 0.125 = 8 at half the width
    assert _convs(stock)[0].out_channels == 16 and _convs(narrow)[0].out_channels == 8
    assert [type(m).__name__ for m in narrow.model] == [type(m).__name__ for m in stock.model]
    assert len(_convs(narrow)) == len(_convs(stock))  # depth kept: the same number of convolutions
    params = [sum(p.numel() for p in m.parameters()) for m in (stock, narrow)]
    assert params[1] < 0.35 * params[0]  # a convolution's weights shrink with both channel counts


def test_a_written_variant_loads_back_as_written_with_its_scale(tmp_path):
    from ultralytics.nn.tasks import yaml_model_load

    cfg = narrow_model("yolo26n.yaml", 0.5)
    path = write_model_yaml(cfg, tmp_path / "sub" / "yolo26n-narrow.yaml")
    loaded = yaml_model_load(str(path))
    assert loaded["scale"] == "n"  # the name keeps the letter: no "assuming scale" guess
    assert {k: v for k, v in loaded.items() if k not in ("yaml_file", "scale")} == cfg


def test_box_bins_change_only_reg_max():
    cfg = with_box_bins("yolo26n.yaml", 16)
    stock, _ = installed_model("yolo26n.yaml")  # every scale row, as installed
    assert cfg["reg_max"] == 16 and {k: v for k, v in cfg.items() if k != "reg_max"} == {
        k: v for k, v in stock.items() if k != "reg_max"}
    assert _built(cfg).model[-1].reg_max == 16


def test_a_yaml_without_the_scale_row_fails_naming_what_changed(tmp_path):
    cfg = narrow_model("yolo26n.yaml", 1.0)
    planted = tmp_path / "yolo26n-planted.yaml"
    planted.write_text(yaml.safe_dump({**cfg, "scales": {"n": [0.5, 0.25]}}))  # a row without the channel cap
    with pytest.raises(SeamError, match=r"yolo26n-planted\.yaml.*\[depth, width, max_channels\].*\[0\.5, 0\.25\]"):
        narrow_model(str(planted), 0.5)


def test_box_bins_refuse_a_head_that_already_has_them(tmp_path):
    planted = tmp_path / "yolo26n-dfl.yaml"
    planted.write_text(yaml.safe_dump({**narrow_model("yolo26n.yaml", 1.0), "reg_max": 16}))
    with pytest.raises(SeamError, match="reg_max is 16"):
        with_box_bins(str(planted), 16)


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_a_width_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match=f"width_share={share}"):
        narrow_model("yolo26n.yaml", share)
