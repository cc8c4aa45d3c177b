"""Each own command's defaults have one definition, and its help shows them (the oracle: the definitions
themselves, read independently of the CLI: SynthSpec's dataclass fields, DEMO_DEFAULTS, PLAN_ARGS)."""

import dataclasses

import pytest
import yaml

from gradkit.cli import main
from gradkit.demo import DEMO_DEFAULTS
from gradkit.plan import PLAN_ARGS
from gradkit.synth import SynthSpec

#: SynthSpec's fields that are the generator's own, not arguments of `gradkit synth`.
NOT_CLI = {"splits", "class_names"}


def _shown(capsys, command: str) -> dict:
    """``key=value`` pairs of ``gradkit COMMAND --help``, values read as the CLI reads them (YAML)."""
    assert main([command, "--help"]) == 0
    pairs = {}
    for word in capsys.readouterr().out.split():
        key, eq, value = word.removeprefix("[").partition("=")  # [key=value ... key=value]: optional ones
        if value.count("]") > value.count("["):
            value = value[:-1]
        if eq and value and not value.split(".")[0].isupper():  # DATA.yaml, DIR, MIN: placeholders
            pairs[key] = yaml.safe_load(value)
    return pairs


def test_synth_help_shows_every_spec_default(capsys):
    shown = _shown(capsys, "synth")
    for f in dataclasses.fields(SynthSpec):
        if f.name in NOT_CLI:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert f.name in shown, f"gradkit synth --help does not show {f.name}="
        expect = list(default) if isinstance(default, tuple) else default
        assert shown[f.name] == expect, f.name


def test_synth_without_arguments_makes_the_spec_default(tmp_path, monkeypatch):
    """What the CLI passes on is SynthSpec's own default: a different default there is what the CLI makes."""
    import gradkit.synth as synth

    made = {}

    def fake_generate(out, spec, **_kw):
        made["spec"] = spec
        return out

    monkeypatch.setattr(synth, "generate_dataset", fake_generate)
    changed = dataclasses.replace(SynthSpec(), images=123, faint_frac=0.25)
    monkeypatch.setattr(synth.SynthSpec.__init__, "__defaults__",
                        tuple(getattr(changed, f.name) for f in dataclasses.fields(SynthSpec) if f.init))
    assert main(["synth", f"out={tmp_path / 's'}"]) == 0
    assert made["spec"] == changed


@pytest.mark.parametrize(("command", "defaults"), [("demo", DEMO_DEFAULTS), ("plan", PLAN_ARGS)])
def test_help_shows_the_commands_defaults(capsys, command, defaults):
    shown = _shown(capsys, command)
    for key, value in defaults.items():
        if value is None:
            continue
        assert shown.get(key) == value, f"gradkit {command} --help: {key}={shown.get(key)!r}, default {value!r}"


#: Known answers: the lines each command's help prints, by what they start with (one usage line, or a usage line
#: and its description below it). ``gradkit synth --help`` once printed the demo's continuation line too.
HELP_LINES = {"synth": ["gradkit synth out=DIR"],
              "demo": ["gradkit demo [", "<any yolo train argument"],
              "report": ["gradkit report RUN_DIR", "gradkit report RUN_A RUN_B"],
              "augment": ["gradkit augment data=DATA.yaml", "preview of the training augmentation"],
              "convert": ["gradkit convert voc", "gradkit convert coco"],
              "check": ["gradkit check data=DATA.yaml", "every image and label"],
              "plan": ["gradkit plan data=DATA.yaml", "dataset fingerprint"],
              "tile": ["gradkit tile data=DATA.yaml", "a copy cut into overlapping tiles"]}


@pytest.mark.parametrize("command", list(HELP_LINES))
def test_a_commands_help_prints_its_own_lines(capsys, command):
    assert main([command, "--help"]) == 0
    own = [line.strip() for line in capsys.readouterr().out.rstrip("\n").splitlines()]
    assert len(own) == len(HELP_LINES[command]), own
    assert all(line.startswith(start) for line, start in zip(own, HELP_LINES[command], strict=True)), own


def test_tile_and_augment_help_show_their_defaults(capsys):
    from gradkit.cli import AUGMENT_ARGS, tile_options
    from gradkit.data.tile import MIN_VISIBILITY

    for command, defaults in (("tile", tile_options()), ("augment", AUGMENT_ARGS)):
        shown = _shown(capsys, command)
        assert {k: shown[k] for k, v in defaults.items() if v is not None} == {
            k: v for k, v in defaults.items() if v is not None}
    assert _shown(capsys, "tile")["min_visibility"] == MIN_VISIBILITY  # the tiler's own default, not a copy


def test_ctrl_c_after_the_last_epoch_does_not_offer_a_resume(tmp_path):
    """Once the last epoch has ended Ultralytics strips last.pt's optimizer for its final validation: resume=True
    then starts an unrelated new training. Ctrl-C there gets what was done and what is left, not a resume command
    (hand-made run records: the last epoch ended, or not)."""
    from gradkit.cli import _interrupted

    last = tmp_path / "run" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    during = _interrupted({"last": str(last), "saved": True, "finished": False})
    assert "resume=True" in during
    best = last.parent / "best.pt"
    best.write_bytes(b"")
    after = _interrupted({"last": str(last), "best": str(best), "saved": True, "finished": True,
                          "data": "/d/data.yaml", "classes": [0, 2]})
    assert "resume=True" not in after and "training had finished" in after
    assert f"gradkit val model={best} data=/d/data.yaml split=val" in after and "classes=[0,2]" in after


def test_a_resume_keeps_the_run_s_own_augmentation_hyps_whatever_is_typed(capsys):
    """Ultralytics ignores a hyp typed with ``resume=`` (it trains on the checkpoint's arguments) and gradkit goes on
    with the run's own configuration: saying that the typed value wins would be false. Without resume it does win."""
    from gradkit.cli import _given_hyps_win
    from gradkit.config import load_config

    cfg = load_config(None, {"augment.ultralytics": {"degrees": 4.0}})
    for resume in (["resume=True"], ["resume"], ["resume", "=", "last.pt"], ["--resume"]):
        assert _given_hyps_win(cfg, ["train", *resume, "degrees=0.0"]) is cfg, resume
    assert "win" not in capsys.readouterr().err
    assert _given_hyps_win(cfg, ["train", "degrees=0.0"]).augment.ultralytics == {"degrees": 0.0}
    assert "degrees=0 given to yolo win" in capsys.readouterr().err


def test_a_hyp_given_to_yolo_that_gradkit_s_config_refuses_is_one_line_before_training():
    """``degrees=-5`` passes Ultralytics' check but not gradkit's range for augment.ultralytics: written into the
    run's gradkit.yaml it made a file the resume could not read back (the run then resumed with another
    configuration). Refused before training, naming the key and the value."""
    from gradkit.config import ConfigError, load_config

    cfg = load_config(None, {"augment.ultralytics": {"degrees": 4.0}})
    with pytest.raises(ConfigError, match=r"degrees=-5"):
        cfg.with_given_hyps({"degrees": -5})
