"""Issue 18 §4: the Python API does what it is told."""

from __future__ import annotations

import os
import re
import typing

import pytest
import torch
from pydantic import BaseModel

from conftest import TINY_TRAIN, read_csv, train_tiny
from gradkit.config import CLIP_MODE_PARAMS, ConfigError, GradkitConfig, load_config
from test_records_crash import _Interrupt, log_lines

# ------------------------------------------------------------------ a config object keeps every field
#: Values for the fields whose default is "unset" (None): no generic rule gives a valid one.
UNSET_FIELD_VALUES = {
    "clip.max_norm": 5.0, "clip.norm_type": 1.0, "clip.clip_value": 0.5, "clip.clip_factor": 0.02,
    "clip.eps": 1e-2, "clip.exclude": ["model\\.0\\."], "clip.percentile": 20.0, "clip.history": 7,
    "augment.transforms": [{"__class_fullname__": "Blur", "blur_limit": [3, 5], "p": 0.5}],
    "augment.copy_paste.class_weights": [1.0, 2.0], "augment.ultralytics": {"degrees": 3.0},
    "augment.copy_paste.contrast": (0.3, 0.9),
    "clip.alpha": 0.9, "clip.z_thresh": 3.0, "clip.warmup_steps": 10, "report.conf": 0.4, "report.tile_size": 640,
    "report.tile_overlap": 96, "monitor.alerts.diverging_growth": 3.0, "assign.nwd_scale": 16.0,
    "assign.class_loss_weights": {"scratch": 2.0}, "size.final_scale": 1.5,
}


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _changed_value(path: str, field):
    """A valid value different from the default."""
    if path in UNSET_FIELD_VALUES:
        return UNSET_FIELD_VALUES[path]
    default = field.get_default(call_default_factory=True)
    if typing.get_origin(field.annotation) is typing.Literal:
        return next(c for c in typing.get_args(field.annotation) if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    if isinstance(default, str):
        return default + "x"
    raise AssertionError(f"no rule for {path}: add it to UNSET_FIELD_VALUES")


def _assign(cfg: GradkitConfig, path: str, value) -> None:
    *sections, leaf = path.split(".")
    node = cfg
    for s in sections:
        node = getattr(node, s)
    if sections == ["clip"] and leaf != "mode":  # a clip parameter needs a mode that takes it
        node.mode = next(m for m, params in CLIP_MODE_PARAMS.items() if leaf in params)
    if path == "report.tile_overlap":  # an overlap needs the tiles it is of
        node.tile_size = UNSET_FIELD_VALUES["report.tile_size"]
    if path == "assign.nwd_scale":  # a scale needs NWD on
        node.nwd = True
    if path == "init.classes":  # class outputs by name need a prior to take them from
        node.prior = "defect"
    setattr(node, leaf, value)


def _get(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.fixture(scope="module")
def yolo():
    from ultralytics import YOLO

    return YOLO("yolo26n.yaml")


def test_every_field_of_a_config_object_survives_attach(yolo):
    import gradkit

    fields = dict(_leaf_fields(GradkitConfig))
    assert len(fields) > 30
    for path, field in fields.items():
        cfg = GradkitConfig()
        value = _changed_value(path, field)
        _assign(cfg, path, value)
        assert _get(cfg, path) == value
        resolved = gradkit.attach(yolo, cfg)
        assert _get(resolved, path) == value, path
        assert _get(yolo.gradkit.cfg, path) == value, path
        assert resolved == cfg  # nothing else changed either


def test_the_issue_example_trains_with_what_was_set(yolo):
    import gradkit

    cfg = GradkitConfig()
    cfg.clip.mode, cfg.monitor.every, cfg.data.check = "none", 3, False
    gradkit.attach(yolo, cfg, {"monitor.flush_every": 7})
    got = yolo.gradkit.cfg
    assert (got.clip.mode, got.monitor.every, got.data.check, got.monitor.flush_every) == ("none", 3, False, 7)


# ------------------------------------------------------------------ overrides as a list, like the CLI
def test_overrides_as_a_list_read_like_the_cli(yolo):
    import gradkit

    got = gradkit.attach(yolo, "defect", ["clip.mode=autoclip", "gradkit.clip.percentile=25",
                                          "monitor.every=3", "augment.copy_paste.rare_first=false"])
    expected = load_config("defect", {"clip.mode": "autoclip", "clip.percentile": 25, "monitor.every": 3,
                                      "augment.copy_paste.rare_first": False})
    assert got == expected and got.monitor.every == 3 and got.clip.percentile == 25.0
    with pytest.raises(ConfigError, match=r"'clip\.mode'.*SECTION\.KEY=VALUE"):
        gradkit.attach(yolo, None, ["clip.mode"])
    with pytest.raises(ConfigError, match=r"gradkit\.clip\.mode=agcc: .*'autoclip'"):
        gradkit.attach(yolo, None, ["clip.mode=agcc"])
    with pytest.raises(ConfigError, match=r"gradkit\.report\.resamples=1_0: .*at least 100"):  # as typed, not 10
        gradkit.attach(yolo, None, ["report.resamples=1_0"])


# ------------------------------------------------------------------ a clipper given model.parameters()
def test_clipper_given_parameters_instead_of_named_parameters_says_so():
    from gradkit.clip import make_clipper

    net = torch.nn.Linear(3, 2)
    net(torch.ones(1, 3)).sum().backward()
    for mode in ("stock", "norm", "agc", "autoclip"):
        with pytest.raises(TypeError, match=r"named_parameters\(\), not model.parameters\(\)"):
            make_clipper(mode)(net.parameters())
    assert float(make_clipper("norm", max_norm=1e-3)(net.named_parameters()).clip_coef) < 1


# ------------------------------------------------------------------ tune
def test_tune_is_refused_with_a_clear_message(yolo, tiny_data):
    import gradkit
    from gradkit.integrations.ultralytics import PluginError

    gradkit.attach(yolo, None)
    with pytest.raises(PluginError, match=r"model.tune\(\).*without the plugin"):
        yolo.tune(data=str(tiny_data), epochs=1, iterations=1)


# ------------------------------------------------------------------ resume of a checkpoint gradkit did not write
def test_resume_refuses_a_checkpoint_without_plugin_state(tmp_path):
    import gradkit

    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"last\.gradkit\.pt not found"):
        gradkit.resume(tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="checkpoint not found"):
        gradkit.resume(tmp_path / "missing.pt")


def test_resume_never_unpickles_a_state_file_with_arbitrary_objects(tmp_path):
    import numpy as np

    import gradkit

    (tmp_path / "last.pt").write_bytes(b"")
    torch.save({"step": 3, "config": {}, "hist": np.zeros(3)}, tmp_path / "last.gradkit.pt")  # an older format
    with pytest.raises(ConfigError, match=r"last\.gradkit\.pt holds objects other than tensors.*not unpickled"):
        gradkit.resume(tmp_path / "last.pt")


def test_resume_names_the_state_file_and_key_of_a_saved_configuration_that_no_longer_validates(tmp_path):
    """A state file is read back as untrusted input: a configuration it holds that this gradkit refuses (an older
    release's key, a hand-edited value, a preset's name) is a one-line error naming the file and each bad key,
    before the checkpoint is even opened (the empty last.pt here would fail to load)."""
    import gradkit

    def refused(config) -> str:
        torch.save({"step": 3, "config": config}, tmp_path / "last.gradkit.pt")
        with pytest.raises(ConfigError) as err:
            gradkit.resume(tmp_path / "last.pt")
        assert "\n" not in str(err.value) and str(tmp_path / "last.gradkit.pt") in str(err.value)
        return str(err.value)

    (tmp_path / "last.pt").write_bytes(b"")
    saved = load_config("default").model_dump(mode="json")
    saved["clip"] = {"mode": "norm", "max_norm": -1.0}
    saved["monitor"]["evry"] = 2
    said = refused(saved)
    problems = said.split(": ", 1)[1].split(" | ")  # one per bad key, in pydantic's order
    assert len(problems) == 2 and any(re.fullmatch(r"clip\.max_norm: .*\(got -1\.0\)", p) for p in problems)
    assert any(p.startswith("monitor.evry: unknown key (did you mean 'every'?)") for p in problems)
    # a string would otherwise be taken for a preset name or a YAML path: loading what the file does not hold
    assert "a str, not a mapping" in refused("defect")
    assert "a list, not a mapping" in refused([1, 2])
    torch.save([{"config": saved}], tmp_path / "last.gradkit.pt")  # the whole state not a mapping
    with pytest.raises(ConfigError, match=r"last\.gradkit\.pt holds a list, not gradkit's state"):
        gradkit.resume(tmp_path / "last.pt")


@pytest.mark.e2e
@pytest.mark.parametrize("folder_config", ["valid", "unusable"])
def test_resume_with_a_saved_configuration_that_no_longer_validates_continues_with_the_run_s_own_else_the_attached(
        tiny_data, tmp_path, folder_config):
    """Resumed through attach + train(resume=True) with a state file whose configuration does not validate: as
    without a state file, the run goes on with the settings its folder's gradkit.yaml records (it went on with the
    attached one, though the run's own were at hand), else with the attached configuration; either way it says
    which file and key it could not use and starts the plugin state afresh but for the step numbers, which go on
    from last.pt's, instead of a pydantic traceback."""
    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip"},
                   callbacks=[("on_train_epoch_start", crash)])
    last = tmp_path / "run" / "weights" / "last.pt"
    side = last.with_name("last.gradkit.pt")
    state = torch.load(side, weights_only=True)
    assert state["config"]["clip"]["mode"] == "autoclip" and state["step"] > 0
    state["config"]["clip"]["percentile"] = 150.0  # no percentile above 100
    torch.save(state, side)
    folder = tmp_path / "run" / "gradkit.yaml"
    if folder_config == "unusable":
        stamp = folder.stat().st_mtime
        folder.write_text(folder.read_text().replace("mode: autoclip", "mode: autoclipp"))
        os.utime(folder, (stamp, stamp))  # still older than last.pt: refused for its content
    model = YOLO(str(last))
    gradkit.attach(model, "default", {"clip.mode": "norm", "clip.max_norm": 5.0})
    with log_lines() as lines:
        model.train(resume=str(last))
    said = [line for line in lines if "last.gradkit.pt" in line and "clip.percentile" in line]
    assert len(said) == 1 and "150.0" in said[0] and "starts afresh" in said[0] and "\n" not in said[0], lines
    plugin = model.gradkit
    if folder_config == "valid":
        assert plugin.cfg.clip.mode == "autoclip"
        assert any("resuming with" in line and str(folder) in line for line in lines), lines
        assert not any("attached configuration" in line for line in lines), lines
    else:
        assert plugin.cfg.clip.mode == "norm" and plugin.cfg.clip.max_norm == 5.0
        assert any("autoclipp" in line and "attached configuration" in line for line in lines), lines
    # step numbers go on from the optimizer steps last.pt counts (its EMA updates), so every one is recorded once
    assert plugin.step == model.trainer.ema.updates > state["step"]
    steps = [int(r["step"]) for r in read_csv(tmp_path / "run" / "gradient_steps.csv")]
    assert steps == list(range(1, plugin.step + 1))


@pytest.mark.e2e
def test_resume_with_the_configuration_the_run_started_with_says_nothing_of_configurations(tiny_data, tmp_path):
    """The saved configuration went through JSON (tuples became lists): compared with the attached one as saved,
    the same configuration is the same, so no warning says the checkpoint's replaced it."""
    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    jitter = [{"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": (-0.1, 0.1), "p": 0.5}]
    overrides = {"augment.transforms": jitter, "report.enabled": False, "monitor.plot": False}
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides=overrides, callbacks=[("on_train_epoch_start", crash)])
    last = tmp_path / "run" / "weights" / "last.pt"
    model = YOLO(str(last))
    attached = gradkit.attach(model, "default", overrides)
    assert attached.augment.transforms[0]["brightness_limit"] == (-0.1, 0.1)  # a tuple, as the user gave it
    with log_lines() as lines:
        model.train(resume=str(last))
    assert not [line for line in lines if "configuration" in line or "afresh" in line], lines  # the state was used
    assert model.gradkit.step == model.trainer.ema.updates  # every optimizer step counted once across the resume


# ------------------------------------------------------------------ attaching twice; grad/* keys; one plugin
@pytest.mark.e2e
def test_attaching_twice_runs_one_plugin_and_user_callbacks_see_grad_keys(tiny_data, tmp_path):
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics import CopyPasteStage, GradkitCallback

    seen_keys = []
    model = YOLO("yolo26n.yaml")
    # registered BEFORE attach: still sees the epoch's grad/* keys
    model.add_callback("on_train_epoch_end", lambda trainer: seen_keys.append(sorted(trainer.lr)))
    copy_paste = {"augment.copy_paste.p": 0.5, "report.enabled": False}
    gradkit.attach(model, "defect", copy_paste)
    first = model.gradkit
    with log_lines() as lines:
        gradkit.attach(model, "defect", {**copy_paste, "clip.mode": "autoclip"})
    assert lines == ["gradkit: attach() replaces the gradkit plugin attached to this model before"]
    second = model.gradkit
    assert second is not first
    plugins = {fn.__self__ for fns in model.callbacks.values() for fn in fns
               if isinstance(getattr(fn, "__self__", None), GradkitCallback)}
    assert plugins == {second}
    model.train(data=str(tiny_data), project=str(tmp_path), name="run", exist_ok=True,
                **{**TINY_TRAIN, "epochs": 3})
    trainer = model.trainer
    assert first.step == 0 and second.step == trainer.ema.updates > 0
    steps = read_csv(tmp_path / "run" / "gradient_steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, second.step + 1))
    stages = [t for t in trainer.train_loader.dataset.transforms.transforms if isinstance(t, CopyPasteStage)]
    assert len(stages) == 1  # not multiplied by epochs or by plugins
    assert len(seen_keys) == 3 and all({"grad/total_norm", "grad/clip_rate"} <= set(k) for k in seen_keys)


# ------------------------------------------------------------------ a custom trainer's optimizer_step
def _counting_trainer(call_super: bool):
    from ultralytics.models.yolo.detect import DetectionTrainer

    calls = []

    class ChainingTrainer(DetectionTrainer):
        def optimizer_step(self):
            calls.append(self.epoch)
            super().optimizer_step()

    class MyTrainer(DetectionTrainer):
        def optimizer_step(self):  # its own step: Ultralytics' (and gradkit's) never runs
            calls.append(self.epoch)
            self.optimizer.step()
            self.optimizer.zero_grad()

    return (ChainingTrainer if call_super else MyTrainer), calls


@pytest.mark.e2e
def test_custom_optimizer_step_calling_super_is_chained_to_gradkit(tiny_data, tmp_path):
    trainer_cls, calls = _counting_trainer(call_super=True)
    model, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "value", "clip.clip_value": 1e-4},
                            trainer=trainer_cls, epochs=1)
    plugin = model.gradkit
    assert len(calls) == plugin.step == model.trainer.ema.updates > 0
    steps = read_csv(run / "gradient_steps.csv")
    assert len(steps) == plugin.step and all(int(r["clipped"]) == 1 for r in steps)  # gradkit's clip ran


def test_custom_optimizer_step_without_super_is_refused_before_training(tiny_data, tmp_path):
    from gradkit.integrations.ultralytics import PluginError

    trainer_cls, calls = _counting_trainer(call_super=False)
    with pytest.raises(PluginError, match=r"MyTrainer.optimizer_step .*super\(\).optimizer_step\(\)"):
        train_tiny(tiny_data, tmp_path, trainer=trainer_cls, epochs=1)
    assert calls == []


@pytest.mark.e2e
def test_a_run_refused_during_set_up_leaves_a_used_folder_s_gradkit_records(tiny_data, tmp_path):
    """gradkit took over a reused folder (removed the earlier run's records, wrote its gradkit.yaml) before its last
    refusals (a trainer's own step, an assigner it cannot change): the refused run left the folder without the earlier
    run's records. Oracle: their bytes before the refused run."""
    from gradkit.integrations.ultralytics import PluginError
    from gradkit.integrations.ultralytics.callback import RUN_OUTPUTS

    _, run = train_tiny(tiny_data, tmp_path, epochs=1)
    names = ("gradkit.yaml", "weights/last.gradkit.pt", *RUN_OUTPUTS)
    kept = {n: (run / n).read_bytes() for n in names if (run / n).is_file()}
    assert {"gradkit.yaml", "gradient_steps.csv", "gradients.csv", "weights/last.gradkit.pt"} <= set(kept)
    trainer_cls, calls = _counting_trainer(call_super=False)
    with pytest.raises(PluginError, match=r"MyTrainer.optimizer_step"):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "norm"}, trainer=trainer_cls, epochs=1)
    assert calls == [] and {n: (run / n).read_bytes() for n in kept if (run / n).is_file()} == kept


def test_custom_optimizer_step_that_skips_super_on_some_steps_is_stopped_at_the_first(tiny_data, tmp_path):
    from ultralytics.models.yolo.detect import DetectionTrainer

    from gradkit.integrations.ultralytics import PluginError

    calls = []

    class SometimesTrainer(DetectionTrainer):
        def optimizer_step(self):
            calls.append(self.epoch)
            if self.epoch > 5:  # never true here: the step is always its own
                super().optimizer_step()
            else:
                self.optimizer.step()
                self.optimizer.zero_grad()

    with pytest.raises(PluginError, match=r"SometimesTrainer.optimizer_step .*super\(\).optimizer_step\(\)"):
        train_tiny(tiny_data, tmp_path, trainer=SometimesTrainer, epochs=1)
    assert calls == [0]  # stopped at the first step
