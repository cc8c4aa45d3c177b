"""Model YAML variants written from Ultralytics' own (integrations/ultralytics/models.py).

Oracles: the channel counts Ultralytics' YAML states (yolo26n's first layer is ``Conv [64, 3, 2]``, times the
scale's width multiple, rounded up to a multiple of 8), the layer list of the installed model, and planted
YAMLs whose shape differs from the one each variant relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gradkit.integrations.ultralytics.models import (
    installed_model,
    narrow_model,
    resolved_model,
    with_box_bins,
    write_model_yaml,
)
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
    assert {k: v for k, v in loaded.items() if k != "yaml_file"} == cfg


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


def test_the_plans_half_width_name_resolves_to_a_written_yaml_of_half_the_channels(tmp_path, monkeypatch):
    from gradkit.plan import MODEL_HALF

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "cache"))  # this test's own: nothing else writes there
    path = resolved_model(MODEL_HALF)
    assert Path(path) == tmp_path / "cache" / "models" / MODEL_HALF and not (tmp_path / MODEL_HALF).exists()
    assert [p.name for p in Path(path).parent.iterdir()] == [MODEL_HALF]  # no temporary file left beside it
    from ultralytics.nn.tasks import DetectionModel

    assert _convs(DetectionModel(path, nc=4, verbose=False))[0].out_channels == 8  # Conv [64, 3, 2] x 0.125
    assert resolved_model("yolo26n.yaml") == "yolo26n.yaml"  # Ultralytics' own names pass through


@pytest.mark.parametrize("args", [["data=d.yaml", "epochs=1"], ["model=runs/x/weights/last.pt", "epochs=1"],
                                  ["model=yolo26n.yaml", "epochs=1"]])
def test_train_arguments_without_a_variant_pass_through_unchanged(args, tmp_path, monkeypatch):
    from gradkit.cli import _with_model_variant

    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "cache"))
    assert _with_model_variant(list(args)) == args and not (tmp_path / "cache").exists()


def test_train_arguments_naming_the_variant_get_its_written_path(tmp_path, monkeypatch):
    from gradkit.cli import _with_model_variant

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "cache"))
    written = tmp_path / "cache" / "models" / "yolo26n-half.yaml"
    assert _with_model_variant(["epochs=1", "model=yolo26n-half.yaml", "imgsz=64"]) == [
        "epochs=1", "imgsz=64", f"model={written}"]
    assert written.is_file()


def test_a_users_own_file_of_a_variants_name_wins_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolo26n-half.yaml").write_text("nc: 2\n")  # the user's, whatever it holds
    assert resolved_model("yolo26n-half.yaml") == "yolo26n-half.yaml"
    assert (tmp_path / "yolo26n-half.yaml").read_text() == "nc: 2\n"
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("gradkit: model=yolo26n-half.yaml is your file ")
    assert str(tmp_path / "yolo26n-half.yaml") in said[0]
    resolved_model("yolo26n.yaml")  # Ultralytics' own name, no file here: nothing to say
    assert capsys.readouterr().err == ""


def test_the_plan_times_gradkits_half_width_and_warns_of_a_users_file_of_its_name(tiny_data, tmp_path, monkeypatch):
    from gradkit.integrations.ultralytics.models import users_own_variant
    from gradkit.integrations.ultralytics.throughput import _model_and_batch
    from gradkit.plan import MODEL, MODEL_HALF, plan_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / MODEL_HALF).write_text("nc: 2\n")  # the user's: not a model at all
    model, _ = _model_and_batch(MODEL_HALF, nc=4, batch=2, size=128)
    assert _convs(model)[0].out_channels == 8  # the timer times gradkit's variant, not the file here
    out = tmp_path / "p" / "plan.yaml"
    assert plan_command([f"data={tiny_data}", "budget=1", f"out={out}"],
                        lambda m, s, n: 0.05 if m == MODEL else 0.025, None, users_own_variant) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["train"]["model"] == MODEL_HALF
    assert [w for w in doc["warnings"] if MODEL_HALF in w] == [users_own_variant(MODEL_HALF)]
    assert f"is your file {tmp_path / MODEL_HALF}" in users_own_variant(MODEL_HALF)
    (tmp_path / MODEL_HALF).unlink()
    assert users_own_variant(MODEL_HALF) is None and users_own_variant(MODEL) is None


def test_the_timer_builds_the_variant_it_is_asked_for():
    from gradkit.integrations.ultralytics.throughput import _model_and_batch

    model, _ = _model_and_batch("yolo26n-half.yaml", nc=4, batch=2, size=128)
    assert _convs(model)[0].out_channels == 8 and model.yaml["scales"] == {"n": [0.5, 0.125, 1024]}


def test_gradkit_train_trains_the_half_width_model(tiny_data, tmp_path, gradkit_here):
    import torch as _torch

    run = gradkit_here("train", "model=yolo26n-half.yaml", f"data={tiny_data}", "epochs=1", "imgsz=64", "batch=8",
                       "workers=0", "device=cpu", "val=False", "plots=False", f"project={tmp_path}", "name=half",
                       cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    ckpt = _torch.load(tmp_path / "half" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert _convs(ckpt["model"])[0].out_channels == 8 and ckpt["model"].yaml["scales"]["n"][1] == 0.125


def test_a_cache_folder_that_cannot_be_written_is_a_one_line_error(tiny_data, tmp_path, monkeypatch, gradkit_here):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "a-file" / "cache"))  # below a file: never a folder
    run = gradkit_here("train", "model=yolo26n-half.yaml", f"data={tiny_data}", "epochs=1", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # 2: a user's mistake, as the other checks
    assert run.stderr.strip().splitlines()[-1].startswith(
        f"gradkit: cannot write the YAML of model=yolo26n-half.yaml into {tmp_path / 'a-file' / 'cache' / 'models'}")
    assert "GRADKIT_CACHE_DIR" in run.stderr


def test_train_with_a_model_yaml_that_does_not_exist_is_one_line(tiny_data, tmp_path, gradkit_here):
    r = gradkit_here("train", "model=missing.yaml", f"data={tiny_data}", "epochs=1", "imgsz=64", "device=cpu",
                     f"project={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-500:]
    assert r.stderr.strip().endswith("gradkit: model config missing.yaml not found: neither a file nor one of "
                                     "Ultralytics' model configurations (e.g. model=yolo26n.yaml); check model=")
