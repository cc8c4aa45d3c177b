"""Ordinary mistakes get one clear line (what, where, what to do), a non-zero exit and no traceback,
through the real console script."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import read_csv

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))
TRAIN = ["model=yolo26n.yaml", "epochs=1", "imgsz=64", "batch=4", "nbs=4", "workers=0", "device=cpu",
         "plots=False", "val=False"]


def _run(args, cwd):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run([GRADKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def _error_line(rc: int, stderr: str, *needles: str) -> str:
    """The one gradkit line of stderr, which must hold every needle; no traceback anywhere."""
    assert rc != 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("gradkit")]
    assert len(lines) == 1, stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _copy(tiny_data: Path, tmp_path: Path, **changes) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(tiny_data.parent, root)
    data = {**yaml.safe_load((root / "data.yaml").read_text()), "path": str(root), **changes}
    data = {k: v for k, v in data.items() if v is not None}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


@pytest.mark.parametrize("check", ["true", "false"])
def test_train_on_yaml_without_names(tiny_data, tmp_path, check):
    data = _copy(tiny_data, tmp_path, names=None)
    rc, _, err = _run(["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r",
                       f"gradkit.data.check={check}"], tmp_path)
    _error_line(rc, err, str(data), "'names'")


@pytest.mark.parametrize("check", ["true", "false"])
def test_train_on_yaml_pointing_at_missing_directory(tiny_data, tmp_path, check):
    data = _copy(tiny_data, tmp_path, path=str(tmp_path / "nowhere"))
    rc, _, err = _run(["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r",
                       f"gradkit.data.check={check}"], tmp_path)
    _error_line(rc, err, str(data), str(tmp_path / "nowhere" / "images"), "does not exist")
    assert not (tmp_path / "r").exists()  # no empty run folder left behind (the next run would be named r2)


def test_train_checks_and_measures_a_list_of_train_folders(tiny_data, tmp_path):
    """Ultralytics reads a list of folders (or list files) as one split; so do gradkit's check before training
    and ``augment.preset: auto``: an error in the second folder stops the run before training, naming the file;
    once it is fixed, the run trains and auto measures the whole list."""
    data = _copy(tiny_data, tmp_path, train=["images/train", "images/test"])
    label = sorted((data.parent / "labels" / "test").glob("*.txt"))[0]
    good = label.read_text()
    label.write_text(good + "9 0.5 0.5 0.1 0.1\n")
    rc, _, err = _run(["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r", "gradkit=defect"], tmp_path)
    assert rc != 0 and "Traceback" not in err, err[-3000:]
    assert str(label) in err and "class 9 but nc=4" in err, err[-3000:]
    assert "--fix" not in err and "Fix the files and lines below" in err  # check --fix copies folders, not lists
    assert not (tmp_path / "r" / "weights" / "last.pt").exists()
    label.write_text(good)
    rc, out, err = _run(["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r2", "gradkit=defect",
                         "gradkit.report.enabled=false"], tmp_path)
    assert rc == 0, err[-3000:]
    chosen = [ln for ln in (out + err).splitlines() if "augment.preset auto ->" in ln]
    assert chosen and "could not be measured" not in chosen[0], chosen


def test_dataset_without_labels_is_an_error_for_check_and_train(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    shutil.rmtree(data.parent / "labels")
    rc, out, _ = _run(["check", f"data={data}"], tmp_path)
    assert rc == 1
    no_labels = [ln for ln in out.splitlines() if ln.startswith("ERROR") and "no labels" in ln]
    assert {Path(ln.split()[3].rstrip(":")).name for ln in no_labels} == {"train", "val", "test"}, out
    assert str(data.parent / "labels" / "train") in out and "does not exist" in out
    assert "missing labels" not in out  # one error per split, not a warning per image
    rc, _, err = _run(["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r"], tmp_path)
    assert rc == 2 and "no labels" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "weights" / "last.pt").exists()


def test_val_with_missing_model_or_data(tiny_data, tmp_path):
    missing_model = tmp_path / "runs" / "weights" / "best.pt"
    rc, _, err = _run(["val", f"model={missing_model}", f"data={tiny_data}", f"project={tmp_path}"], tmp_path)
    _error_line(rc, err, str(missing_model), "not found")
    missing_data = tmp_path / "nodata.yaml"
    rc, _, err = _run(["val", "model=yolo26n.yaml", f"data={missing_data}", f"project={tmp_path}"], tmp_path)
    _error_line(rc, err, str(missing_data), "does not exist")


def test_val_refuses_a_confidence_floor_the_report_would_misdescribe_and_names_a_mistyped_split(tiny_data, tmp_path,
                                                                                                 gradkit_here):
    """``conf=0.25`` drops every detection below 0.25 before the report scores them, yet the report said "all
    confidences" and "conf >= 0.001"; ``split=tests`` was answered "'tests:' images not found; check the data=
    path". Both before anything is validated or written."""
    base = ["val", "model=yolo26n.yaml", f"data={tiny_data}", f"project={tmp_path}", "name=v"]
    from gradkit.cli import _val_conf_refused

    assert _val_conf_refused("None") is None and _val_conf_refused("0.001") is None  # Ultralytics' own default
    for conf in ("0.25", "abc"):
        r = gradkit_here(*base, f"conf={conf}", cwd=tmp_path)
        _error_line(r.returncode, r.stderr, f"conf={conf}", "gradkit.report.conf")
        assert r.returncode == 2 and not (tmp_path / "v").exists()
    r = gradkit_here(*base, "conf=0.001", "split=tests", cwd=tmp_path)  # Ultralytics' own floor is no mistake
    _error_line(r.returncode, r.stderr, "no split 'tests'", "train, val, test")
    assert r.returncode == 2 and not (tmp_path / "v").exists()


@pytest.mark.parametrize(("typo", "needles"), [("epoch=1", ("'epoch' is not a valid YOLO argument", "epochs")),
                                               ("Linie", ("'Linie' is not a valid YOLO argument",))])
def test_an_argument_yolo_does_not_know_is_one_line(tiny_data, tmp_path, typo, needles):
    # e.g. a typo, or an unquoted path with a space pasted from somewhere
    rc, _, err = _run(["train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r", typo], tmp_path)
    _error_line(rc, err, *needles)
    assert rc == 2 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(("mode", "bad", "needles"), [
    ("train", "save_period=x", ("'save_period=x' is of invalid type str",)),
    ("train", "momentum=abc", ("'momentum=abc'",)),
    ("val", "iou=2", ("'iou=2'", "between 0.0 and 1.0")),
    ("train", "imgsz=abc", ("imgsz",)),            # check_imgsz's ValueError
    ("train", "imgsz=[64,abc]", ("imgsz",)),
    ("train", "optimizer=Adamm", ("Adamm",)),      # build_optimizer's NotImplementedError
    ("train", "device=0", ("device",)),            # select_device's ValueError on a machine without CUDA
])
def test_an_argument_yolo_refuses_by_value_is_one_line(tiny_data, tmp_path, gradkit_here, mode, bad, needles):
    """Ultralytics' own argument checks (``check_cfg``, ``check_imgsz``, ``build_optimizer``, ``select_device``)
    raise TypeError, ValueError or NotImplementedError: a user's mistake, answered in one line and exit 2 like
    gradkit's own, not a traceback."""
    model = "yolo26n.yaml"
    extra = TRAIN[1:] if mode == "train" else []
    r = gradkit_here(mode, f"model={model}", *extra, f"data={tiny_data}", f"project={tmp_path}", "name=r", bad,
                     cwd=tmp_path)
    _error_line(r.returncode, r.stderr, *needles)
    # check_cfg and select_device refuse before the run's folder is made, check_imgsz and build_optimizer after
    # Ultralytics made it (as stock does): nothing trained either way
    assert r.returncode == 2 and not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("model", ["nosuch.yaml", "cfg/nosuch.yml"])
def test_train_with_a_model_config_that_does_not_exist(tiny_data, tmp_path, model):
    # Ultralytics looks a bare name up among its own configurations first; neither finds these
    train = [a for a in TRAIN if not a.startswith("model=")]
    rc, _, err = _run(["train", *train, f"model={model}", f"data={tiny_data}", f"project={tmp_path}", "name=r"],
                      tmp_path)
    _error_line(rc, err, model, "not found")
    assert rc == 2 and not (tmp_path / "r").exists()                  # stopped before a run folder was made


def test_own_commands_exit_2_on_a_users_mistake(tiny_data, tmp_path):
    for args in (["plan", f"data={tmp_path / 'missing.yaml'}"], ["plan", f"data={tiny_data}", "buget=5"],
                 ["synth", f"out={tmp_path / 's'}", "images=abc"], ["synth", f"out={tmp_path / 's'}", "seed=1.5"],
                 ["synth", f"out={tmp_path / 's'}", "class_weights=1,1,1,1"],
                 ["synth", f"out={tmp_path / 's'}", "faint_frac=2"], ["synth", f"out={tmp_path / 's'}", "faint_frac=x"],
                 ["check", f"data={tmp_path / 'missing.yaml'}"], ["convert", "vocc", f"src={tmp_path}"]):
        rc, _, err = _run(args, tmp_path)
        assert rc == 2 and "Traceback" not in err and err.startswith("gradkit"), (args, rc, err[-1000:])
    assert not (tmp_path / "s").exists()


def test_convert_coco_with_missing_json(tmp_path):
    rc, _, err = _run(["convert", "coco", f"src={tmp_path / 'ann.json'}", f"images={tmp_path}",
                       f"out={tmp_path / 'out'}"], tmp_path)
    _error_line(rc, err, str(tmp_path / "ann.json"), "not found")


def test_unwritable_run_directory(tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, _, err = _run(["train", *TRAIN, f"data={tiny_data}", f"project={blocker / 'runs'}", "name=r"], tmp_path)
    _error_line(rc, err, str(blocker / "runs"), "not writable", "project=")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_directory(tiny_data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    rc, _, err = _run(["train", *TRAIN, f"data={tiny_data}", f"project={locked}", "name=r"], tmp_path)
    _error_line(rc, err, str(locked), "not writable")


def test_unknown_subcommand_lists_commands_and_suggests(tmp_path):
    rc, out, err = _run(["trian", "model=yolo26n.yaml"], tmp_path)
    assert rc == 2 and "Traceback" not in err and "SyntaxError" not in err
    first = err.splitlines()[0]
    assert "unknown command 'trian'" in first and "did you mean 'train'" in first
    assert "gradkit convert voc" in err and "gradkit check data=" in err  # gradkit's own list, not yolo's help
    assert "yolo TASK MODE" not in out + err


def test_train_and_convert_help(tmp_path):
    rc, out, _ = _run(["train", "--help"], tmp_path)
    assert rc == 0
    assert "gradkit.clip.mode=stock" in out and "gradkit.data.allow_download=False" in out
    presets = sorted(p.stem for p in (Path(__file__).parents[1] / "plugin/gradkit/presets").glob("*.yaml"))
    assert f"presets (gradkit=NAME): {', '.join(presets)}" in out
    assert out.index("gradkit.monitor.enabled") < out.index("yolo help")  # own keys first, then the pointer
    rc, out, _ = _run(["convert", "--help"], tmp_path)
    assert rc == 0 and "gradkit convert voc" in out and "gradkit convert coco" in out


def test_ctrl_c_names_last_pt_and_the_resume_command_that_works(tiny_data, tmp_path):
    args = ["train", *TRAIN, "epochs=6", f"data={tiny_data}", f"project={tmp_path}", "name=r",
            "gradkit.report.enabled=false"]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    # A shell without job control starts background jobs with SIGINT ignored (POSIX), and the child
    # would inherit that and train on: as in a terminal, Ctrl-C must reach the trainer
    proc = subprocess.Popen([GRADKIT, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / "r" / "weights" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    line = _error_line(proc.returncode, err, str(last), "resume=True")
    command = line.split("continue it with: ")[1]
    assert command == f"gradkit train resume=True model={last}"
    epochs_done = len(read_csv(tmp_path / "r" / "results.csv"))
    assert 1 <= epochs_done < 6
    resumed = subprocess.run([GRADKIT, *shlex.split(command)[1:]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [int(float(r["epoch"])) for r in read_csv(tmp_path / "r" / "results.csv")]
    assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, 7))  # continued, not restarted
    # Ultralytics appends to results.csv before it saves last.pt: an interrupt landing between the two
    # (a tiny epoch can end within the 0.5 s above) makes the resume repeat that one epoch, as stock does
    assert len(epochs) - len(set(epochs)) <= 1, epochs


def test_the_in_process_runner_reports_what_the_console_script_does(tmp_path, gradkit_here):
    """The other test files run most ``gradkit`` commands in-process (``gradkit_here``, conftest): on a user's
    mistake and on success it must give the console script's exit status, output and files."""
    (tmp_path / "voc").mkdir()
    for args in (["check", f"data={tmp_path / 'missing.yaml'}"],
                 ["convert", "voc", f"src={tmp_path / 'voc'}", f"out={tmp_path / 'o'}", "split=a,b"]):
        rc, out, err = _run(args, tmp_path)
        here = gradkit_here(*args, cwd=tmp_path)
        assert (here.returncode, here.stdout, here.stderr) == (rc, out, err), args
    def files(root):  # data.yaml names its own folder
        return {f.relative_to(root): f.read_bytes().replace(str(root).encode(), b"OUT")
                for f in root.rglob("*") if f.is_file()}

    rc, out, _ = _run(["synth", f"out={tmp_path / 'console'}", "images=3", "imgsz=64"], tmp_path)
    here = gradkit_here("synth", f"out={tmp_path / 'here'}", "images=3", "imgsz=64", cwd=tmp_path)
    assert rc == 0 and (here.returncode, here.stdout.replace("here", "console")) == (rc, out)
    assert files(tmp_path / "here") == files(tmp_path / "console") != {}


_INSTALL_PROBE = """
import sys
from gradkit.cli import main
main(sys.argv[1:])
from ultralytics.utils import checks
print("AUTOINSTALL", checks.AUTOINSTALL)
print("SATISFIED", checks.check_requirements("gradkit-no-such-package==0.0.1"))
"""


@pytest.mark.parametrize("command, user_value, installs", [
    (["train", "model=no-such-model.yaml"], None, False),
    (["config-doc"], None, False),
    (["val", "model=no-such-model.pt"], None, False),
    (["detect", "train", "model=no-such-model.yaml"], None, False),
    (["gradkit.clip.mode=agc", "train", "model=no-such-model.yaml"], None, False),  # plugin keys anywhere
    (["train", "model=no-such-model.yaml"], "true", True),  # the user's own choice wins
    (["predict", "model=no-such-model.pt"], None, True),  # other yolo modes pass through unchanged
])
def test_gradkit_train_never_lets_ultralytics_pip_install(tmp_path, command, user_value, installs):
    """Ultralytics pip-installs a missing package mid-run when online (its patched PIL.Image.open reaches
    for pi-heif on any file PIL cannot identify): a training run must not change the user's environment.
    The oracle is Ultralytics' own check_requirements, in the process the command ran in."""
    env = {k: v for k, v in os.environ.items() if k != "YOLO_AUTOINSTALL"}
    env["YOLO_OFFLINE"] = "1"
    if user_value is not None:
        env["YOLO_AUTOINSTALL"] = user_value
    proc = subprocess.run([sys.executable, "-c", _INSTALL_PROBE, *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert f"AUTOINSTALL {installs}" in out, out[-3000:]
    assert "SATISFIED False" in out, out[-3000:]
    reason = "AutoUpdate skipped (offline)" if installs else "AutoUpdate disabled by YOLO_AUTOINSTALL=False"
    assert reason in out, out[-3000:]


def test_an_in_process_run_leaves_ultralytics_default_callbacks_as_it_found_them(tiny_data, tmp_path, gradkit_here):
    """``gradkit train`` reaches the model the yolo entrypoint builds through Ultralytics' global default callbacks.
    Called from Python (a notebook, a script calling ``gradkit.cli.main`` twice) it left its plugin there, and every
    later training in the process, plain Ultralytics included, carried it (a plain run's results.csv grew
    ``taught/`` columns). Oracle: the global lists before the call."""
    from ultralytics.utils.callbacks import base

    before = {event: list(fns) for event, fns in base.default_callbacks.items()}
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r",
                     "gradkit.report.enabled=false", "gradkit.monitor.plot=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {event: list(fns) for event, fns in base.default_callbacks.items()} == before
    r = gradkit_here("val", "model=yolo26n.yaml", f"data={tiny_data}", "conf=0.3", cwd=tmp_path)  # refused early
    assert r.returncode == 2 and {event: list(fns) for event, fns in base.default_callbacks.items()} == before


def test_resuming_a_run_that_finished_is_one_line_not_a_new_training_with_defaults(tiny_data, tmp_path,
                                                                                    gradkit_here):
    """Ultralytics' final validation strips last.pt of the optimizer a resume needs; ``resume=True`` on it then
    warned and started a new training with every default (coco8.yaml, 100 epochs, the global runs folder), which
    failed naming a dataset the user never typed. Refused in one line, with the commands that score it or train on
    from it, before any folder is made."""
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r",
                     "gradkit.report.enabled=false", "gradkit.monitor.plot=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    last = tmp_path / "r" / "weights" / "last.pt"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = gradkit_here("train", "resume=True", f"model={last}", cwd=tmp_path)
    line = _error_line(r.returncode, r.stderr, str(last), "finished", "gradkit val model=", f"data={tiny_data}")
    assert r.returncode == 2 and "resume=True" not in line.split("finished", 1)[1].split("without")[0], line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    for form in (["resume", f"model={last}"], ["resume", "=", "True", f"model={last}"], [f"resume={last}"]):
        r = gradkit_here("train", *form, cwd=tmp_path)  # every form yolo reads as a resume
        _error_line(r.returncode, r.stderr, str(last), "finished")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    import gradkit
    from gradkit.config import ConfigError

    with pytest.raises(ConfigError, match="finished"):  # the Python API: the same, not Ultralytics' assertion
        gradkit.resume(last)


@pytest.mark.parametrize("p", ["0.5", "0"])
def test_copy_paste_class_weights_of_another_length_than_the_classes_is_one_line_before_training(
        tiny_data, tmp_path, gradkit_here, p):
    """One weight per class is checked against the data's classes before training: it was a traceback once the
    dataloader was built (p > 0), and accepted silently with p=0."""
    nc = len(yaml.safe_load(tiny_data.read_text())["names"])
    weights = "[" + ",".join(["1"] * (nc + 1)) + "]"
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r",
                     f"gradkit.augment.copy_paste.p={p}", f"gradkit.augment.copy_paste.class_weights={weights}",
                     cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "class_weights", f"{nc + 1} values", f"{nc} classes", str(tiny_data))
    assert r.returncode == 2 and not list(tmp_path.rglob("*.pt"))
    assert not (tmp_path / "r").exists()  # Ultralytics made it (args.yaml, weights/) before the refusal


def test_val_help_is_gradkits_own_with_the_report_keys(tmp_path):
    """``gradkit val --help`` printed Ultralytics' general help, which names no report setting."""
    rc, out, err = _run(["val", "--help"], tmp_path)
    assert rc == 0, err[-2000:]
    assert "gradkit val model=" in out and "gradkit.report.resamples=" in out and "gradkit.report.conf=" in out
    assert "yolo TASK MODE" not in out + err


@pytest.mark.parametrize(("mode", "setting", "needles"), [
    ("val", "gradkit.report.resamples=5", ("gradkit.report.resamples=5", "at least 100")),
    ("train", "gradkit.report.conf=2", ("gradkit.report.conf=2", "less than or equal to 1")),
    ("val", "gradkit.report.conff=0.3", ("gradkit.report.conff", "did you mean 'gradkit.report.conf'")),
    ("val", "gradkit.report.resamples=1_0", ("gradkit.report.resamples=1_0", "at least 100")),  # YAML's 10
    ("train", "gradkit.report.conf=yes", ("gradkit.report.conf=yes", "takes numbers")),  # YAML's true
])
def test_a_bad_plugin_setting_without_a_config_is_one_line_naming_the_key_as_typed(tiny_data, tmp_path,
                                                                                   gradkit_here, mode, setting,
                                                                                   needles):
    """It was two lines naming the default preset's file, which the user never gave; a mistyped key on val was
    told that gradkit= keys apply to train only."""
    args = [*TRAIN, f"data={tiny_data}"] if mode == "train" else ["model=yolo26n.yaml", f"data={tiny_data}"]
    r = gradkit_here(mode, *args, f"project={tmp_path}", "name=v", setting, cwd=tmp_path)
    line = _error_line(r.returncode, r.stderr, *needles)
    assert "default.yaml" not in r.stderr and "preset" not in line and r.returncode == 2, line


@pytest.mark.parametrize(("args", "suggested"), [(["synth", "imags=3"], "images="),
                                                 (["plan", "data=x.yaml", "buget=5"], "budget="),
                                                 (["augment", "data=x.yaml", "degres=3"], "degrees="),
                                                 (["augment", "data=x.yaml", "sed=3"], "seed=")])
def test_a_mistyped_argument_of_an_own_command_gets_a_suggestion(tmp_path, gradkit_here, args, suggested):
    r = gradkit_here(*args, cwd=tmp_path)
    _error_line(r.returncode, r.stderr, args[-1].partition("=")[0], f"did you mean '{suggested}'")


@pytest.mark.parametrize("args", [["val", "model=yolo26n.yaml", "data=x.yaml", "gradkit.report.resamples=0200"],
                                  ["synth", "out=o", "images=010"], ["synth", "out=o", "images=1:30"]])
def test_a_number_yaml_would_read_in_another_base_is_refused(tmp_path, gradkit_here, args):
    """YAML 1.1 reads 0200 as octal 128 and 1:30 as base-60 90: the run went on with a number nobody typed."""
    r = gradkit_here(*args, cwd=tmp_path)
    _error_line(r.returncode, r.stderr, args[-1], "write it without")
    assert not (tmp_path / "o").exists()


def test_python_dash_m_gradkit_is_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gradkit", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0 and "gradkit train <yolo train args>" in proc.stdout, proc.stderr[-2000:]


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_a_refused_run_leaves_a_used_folder_as_it_was(tiny_data, tmp_path, gradkit_here):
    """The refused run's own empty folder goes; a folder the user reuses (exist_ok=True, save_dir=) is left exactly
    as it was: Ultralytics' trainer wrote its args.yaml over the earlier run's before gradkit refused, so that run's
    report then showed the refused command's arguments (found by a user trial)."""
    used = tmp_path / "r"
    (used / "weights").mkdir(parents=True)
    (used / "notes.txt").write_text("mine")
    (used / "args.yaml").write_text("epochs: 3\nlr0: 0.01\n")  # an earlier run's
    before = _tree(used)
    bad = "gradkit.augment.copy_paste.class_weights=[1,1,1,1,1,1,1,1,1]"
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r", "exist_ok=True",
                     "gradkit.augment.copy_paste.p=0.5", bad, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert _tree(used) == before
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"project={tmp_path}", "name=r",
                     "gradkit.augment.copy_paste.p=0.5", bad, cwd=tmp_path)  # exist_ok=False: r2, the run's own
    assert r.returncode == 2 and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r")) == ["r"]
    mine = tmp_path / "mine"  # a folder the user made, named as Ultralytics' save_dir= (a first version removed it)
    mine.mkdir()
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"save_dir={mine}", "gradkit.augment.copy_paste.p=0.5",
                     bad, cwd=tmp_path)
    assert r.returncode == 2 and mine.is_dir() and _tree(mine) == {}, r.stderr[-2000:]
    r = gradkit_here("train", *TRAIN, f"data={tiny_data}", f"save_dir={tmp_path / 'new' / 'deep'}",
                     "gradkit.augment.copy_paste.p=0.5", bad, cwd=tmp_path)  # folders the run made for itself
    assert r.returncode == 2 and not (tmp_path / "new").exists()


def test_a_run_refused_at_the_end_of_its_set_up_leaves_a_used_folder_as_it_was(tiny_data, tmp_path, gradkit_here):
    """A refusal that needs the built model (RT-DETR's loss has no task-aligned assigner for assign.nwd to change)
    came after gradkit had replaced the folder's records and after the trainer had drawn labels.jpg over the
    earlier run's: that run's report then read the refused command's arguments, labels and configuration."""
    used = tmp_path / "r"
    (used / "weights").mkdir(parents=True)
    for name, text in (("args.yaml", "epochs: 3\n"), ("labels.jpg", "an earlier run's"), ("gradkit.yaml", "clip: {}\n"),
                       ("gradient_steps.csv", "step\n1\n"), ("report.json", "{}")):
        (used / name).write_text(text)
    before = _tree(used)
    r = gradkit_here("train", "model=rtdetr-l.yaml", "epochs=1", "imgsz=64", "batch=2", "workers=0", "device=cpu",
                     f"data={tiny_data}", f"project={tmp_path}", "name=r", "exist_ok=True", "gradkit.assign.nwd=true",
                     cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "assign.nwd", "RTDETRDetectionLoss")
    assert _tree(used) == before
    r = gradkit_here("train", "model=rtdetr-l.yaml", "epochs=1", "imgsz=64", "batch=2", "workers=0", "device=cpu",
                     f"data={tiny_data}", f"project={tmp_path}", "name=r", "gradkit.assign.nwd=true", cwd=tmp_path)
    assert r.returncode == 2 and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r")) == ["r"]


def test_the_usage_says_what_each_command_takes(tmp_path, gradkit_here):
    """From a user trial: the usage listed val among the modes passed to yolo unchanged (it refuses conf= and writes a
    report), named two of the three presets, and check's line left out overwrite=; a mistyped check argument's list
    left out --fix, a mistyped augment argument was worded unlike every other command's and its list left out
    gradkit=; a plugin key given twice took the last silently."""
    from gradkit.cli import help_text
    from gradkit.config import PRESET_DIR

    usage = help_text()
    assert "gradkit val|" not in usage and "gradkit predict|export|..." in usage
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert f"Presets (gradkit=NAME): {', '.join(presets)}" in usage
    assert "gradkit check data=DATA.yaml [--fix [out=DIR overwrite=false]]" in usage
    r = gradkit_here("check", "dta=x.yaml", cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "unknown argument 'dta=x.yaml'", "--fix")
    r = gradkit_here("augment", "data=x.yaml", "degres=3", cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "gradkit augment: unknown argument 'degres=3'", "gradkit=")
    r = gradkit_here("val", "model=yolo26n.yaml", "data=x.yaml", "gradkit.report.conf=0.5", "gradkit.report.conf=0.6",
                     cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "gradkit.report.conf", "twice", "0.5", "0.6")
    r = gradkit_here("val", "model=yolo26n.yaml", "data=x.yaml", "gradkit.report.resamples=1_00",
                     "gradkit.report.resamples=200", cwd=tmp_path)  # as typed, not as YAML reads them (100, 200)
    _error_line(r.returncode, r.stderr, "gradkit.report.resamples", "twice", "=1_00 and =200")
    r = gradkit_here("train", "model=yolo26n.yaml", "data=x.yaml", "gradkit=defect", "gradkit.clip.mode=agc",
                     "gradkit.clip.clip_factor=off", cwd=tmp_path)  # with a config file: shown as typed too
    assert r.returncode == 2 and "  clip.clip_factor=off: takes numbers" in r.stderr and "False" not in r.stderr
    r = gradkit_here("train", "model=yolo26n.yaml", "data=x.yaml", "gradkit=defect", "gradkit=default", cwd=tmp_path)
    _error_line(r.returncode, r.stderr, "gradkit=", "twice", "defect", "default")
