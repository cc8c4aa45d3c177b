"""The upgrade guard: altered third-party shapes fail loudly and name what changed."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY_TRAIN
from gradkit.integrations.ultralytics.seams import SeamError


def test_installed_libraries_pass_every_check():
    from gradkit.integrations.ultralytics.seams import check_seams

    check_seams()


def test_fingerprint_ignores_comments_and_docstrings_but_not_code():
    from gradkit.integrations.ultralytics.seams import code_fingerprint

    def a(x):
        """Doc."""
        return x + 1  # one

    def b(x):
        # another comment, no docstring
        return x + 1

    def c(x):
        return x + 2

    assert code_fingerprint(a) == code_fingerprint(b) != code_fingerprint(c)


def test_changed_base_optimizer_step_fails_attach(monkeypatch):
    import torch
    from ultralytics import YOLO
    from ultralytics.engine.trainer import BaseTrainer

    import gradkit

    def optimizer_step(self):  # an "upgrade": a different clip
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=5.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    monkeypatch.setattr(BaseTrainer, "optimizer_step", optimizer_step)
    with pytest.raises(SeamError, match=r"ultralytics\.engine\.trainer\.BaseTrainer\.optimizer_step is not the step"):
        gradkit.attach(YOLO("yolo26n.yaml"))


def test_subclass_keeping_the_stock_step_is_accepted():
    from ultralytics.models.yolo.detect import DetectionTrainer

    from gradkit.integrations.ultralytics.seams import check_optimizer_step

    class Quiet(DetectionTrainer):
        def log(self):
            return None

    check_optimizer_step(Quiet)


def _train(data, tmp_path, trainer, overrides=None, error=SeamError):
    from ultralytics import YOLO

    import gradkit

    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, "default", {"report.enabled": False, **(overrides or {})})
    steps = []
    model.add_callback("on_train_batch_end", lambda t: steps.append(t.epoch))
    with pytest.raises(error) as info:
        model.train(data=str(data), project=str(tmp_path), name="run", exist_ok=True, trainer=trainer, **TINY_TRAIN)
    assert steps == []  # it failed before the first batch
    return str(info.value)


@pytest.mark.e2e
def test_trainer_subclass_with_its_own_optimizer_step_is_refused_by_name(tiny_data, tmp_path):
    from ultralytics.models.yolo.detect import DetectionTrainer

    from gradkit.integrations.ultralytics import PluginError

    class AccumulatingTrainer(DetectionTrainer):
        def optimizer_step(self):
            self.optimizer.step()
            self.optimizer.zero_grad()

    message = _train(tiny_data, tmp_path, AccumulatingTrainer, error=PluginError)
    assert "AccumulatingTrainer.optimizer_step replaces Ultralytics' optimizer step" in message
    assert "super().optimizer_step()" in message


@pytest.mark.e2e
def test_dataset_without_the_albumentations_stage_stops_training_with_a_preset(tiny_data, tmp_path):
    from ultralytics.data.augment import Albumentations
    from ultralytics.models.yolo.detect import DetectionTrainer

    class NoAlbumentationsTrainer(DetectionTrainer):
        def build_dataset(self, img_path, mode="train", batch=None):
            dataset = super().build_dataset(img_path, mode, batch)
            stock = dataset.build_transforms

            def build_transforms(hyp=None):
                compose = stock(hyp)
                compose.transforms = [t for t in compose.transforms if not isinstance(t, Albumentations)]
                return compose

            dataset.build_transforms = build_transforms
            dataset.transforms = build_transforms(dataset.hyp) if hasattr(dataset, "hyp") else dataset.transforms
            return dataset

    message = _train(tiny_data, tmp_path, NoAlbumentationsTrainer, {"augment.preset": "defect"})
    assert "no ultralytics.data.augment.Albumentations stage in the training transforms" in message
    assert "RandomFlip" in message  # the stages it did find are listed
    assert "training stops rather than running the stock pipeline" in message


def test_validator_without_a_recorded_method_is_named():
    from ultralytics.models.yolo.detect import DetectionValidator

    from gradkit.integrations.ultralytics.seams import check_validator

    class RenamedValidator(DetectionValidator):
        _prepare_pred = None

    with pytest.raises(SeamError, match="RenamedValidator has no method _prepare_pred"):
        check_validator(object.__new__(RenamedValidator))

    class NarrowerValidator(DetectionValidator):
        def _prepare_batch(self, batch):  # lost the image index
            return batch

    with pytest.raises(SeamError, match=r"_prepare_batch\(batch\) no longer takes \(si, batch\)"):
        check_validator(object.__new__(NarrowerValidator))
    check_validator(object.__new__(DetectionValidator))


def test_validator_results_missing_an_attribute_are_named():
    from gradkit.integrations.ultralytics.seams import VALIDATOR_RESULTS, check_validator_results

    def namespace(paths, drop):
        root = SimpleNamespace()
        for dotted in paths:
            if dotted == drop:
                continue
            node = root
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not hasattr(node, part):
                    setattr(node, part, SimpleNamespace())
                node = getattr(node, part)
            setattr(node, leaf, 0)
        return root

    check_validator_results(namespace(VALIDATOR_RESULTS, None))
    with pytest.raises(SeamError, match=r"metrics\.box has no attribute 'map50'"):
        check_validator_results(namespace(VALIDATOR_RESULTS, "metrics.box.map50"))


def test_coco_iou_override_shape():
    from faster_coco_eval import COCOeval_faster

    from gradkit.integrations.ultralytics.seams import check_coco_iou_override

    check_coco_iou_override(COCOeval_faster)

    class WiderIoU(COCOeval_faster):
        def computeIoU(self, imgId, catId, maxDets):
            return []

    with pytest.raises(SeamError, match=r"WiderIoU.computeIoU\(self, imgId, catId, maxDets\) is no longer"):
        check_coco_iou_override(WiderIoU)

    class InlinedIoU(COCOeval_faster):
        def evaluate(self):
            return None

    with pytest.raises(SeamError, match=r"InlinedIoU\.evaluate no longer calls computeIoU"):
        check_coco_iou_override(InlinedIoU)


# ------------------------------------------------------------------ the checks beside the patches moved into seams.py
def test_epoch_metrics_need_the_loop_to_log_trainer_lr_after_the_event():
    from ultralytics.engine.trainer import BaseTrainer

    from gradkit.integrations.ultralytics.seams import publish_epoch_metrics

    trainer = SimpleNamespace(lr={"lr/pg0": 0.01})
    publish_epoch_metrics(trainer, {"grad/x": 1.0})  # a trainer-shaped object runs BaseTrainer's loop
    assert trainer.lr == {"lr/pg0": 0.01, "grad/x": 1.0}

    class LogsFirst(BaseTrainer):  # an "upgrade" that logs before the callbacks run: the keys would be lost
        def _do_train(self):
            self.lr = {}
            self.save_metrics(metrics={**self.lr})
            self.run_callbacks("on_train_epoch_end")

    with pytest.raises(SeamError, match=r"sets trainer\.lr, fires on_train_epoch_end, then logs \*\*trainer\.lr"):
        publish_epoch_metrics(object.__new__(LogsFirst), {"grad/x": 1.0})


def test_nan_recovery_follower_needs_the_method_and_its_call():
    from ultralytics.engine.trainer import BaseTrainer

    from gradkit.integrations.ultralytics.seams import follow_nan_recovery

    class NoRecovery(BaseTrainer):
        _handle_nan_recovery = None

    with pytest.raises(SeamError, match="NoRecovery has no _handle_nan_recovery"):
        follow_nan_recovery(object.__new__(NoRecovery), lambda: None)

    class InlinedRecovery(BaseTrainer):
        def _do_train(self):
            return None

    with pytest.raises(SeamError, match=r"no longer calls self\._handle_nan_recovery"):
        follow_nan_recovery(object.__new__(InlinedRecovery), lambda: None)

    reloads = []

    class Recovering(BaseTrainer):
        def _handle_nan_recovery(self, epoch):
            return epoch == 2

    trainer = object.__new__(Recovering)
    follow_nan_recovery(trainer, lambda: reloads.append(True))
    assert [trainer._handle_nan_recovery(e) for e in (1, 2)] == [False, True] and reloads == [True]


def test_default_callbacks_refuse_an_unknown_event():
    from gradkit.integrations.ultralytics.seams import register_default_callbacks

    with pytest.raises(SeamError, match="default_callbacks has no event on_gradkit_step"):
        register_default_callbacks({"on_gradkit_step": print})


def test_yolo_hand_over_needs_ultralytics_to_read_sys_argv(monkeypatch):
    import sys

    from gradkit.integrations.ultralytics.seams import hand_over_to_yolo

    monkeypatch.setattr(sys, "argv", ["gradkit", "train"])  # a new list: Ultralytics' ARGV is the old one
    with pytest.raises(SeamError, match=r"ultralytics\.cfg\.ARGV is no longer sys\.argv"):
        hand_over_to_yolo(["help"])
    assert sys.argv == ["gradkit", "train"]  # refused before rewriting anything


def test_an_albumentations_stage_that_cannot_be_seeded_is_named():
    """Planted: the stock stage holding a pipeline without ``set_random_seed`` (a changed Albumentations); a
    seeded sample would silently draw from an unseeded stream, so the seam refuses."""
    from types import SimpleNamespace

    from ultralytics.data.augment import Albumentations

    from gradkit.integrations.ultralytics.seams import seed_stock_albumentations

    class OldCompose:
        def __call__(self, **data):
            return data

    stage = object.__new__(Albumentations)
    stage.transform = OldCompose()
    dataset = SimpleNamespace(transforms=SimpleNamespace(transforms=[stage]))
    with pytest.raises(SeamError, match="holds a OldCompose without set_random_seed"):
        seed_stock_albumentations(dataset, 0)
    stage.transform = None  # albumentations not installed: the stock stage does nothing, nothing to seed
    seed_stock_albumentations(dataset, 0)


def test_the_save_period_checkpoint_is_found_as_save_model_names_it(tmp_path):
    """gradkit saves its state beside the ``epoch{N}.pt`` Ultralytics keeps every ``save_period`` epochs, mirroring
    ``save_model``'s condition: BaseTrainer's code is checked at attach, so an upgrade that names them otherwise is
    named; a subclass's own save_model (calling super or not) never stops training, and only a file that is there
    gets a state beside it."""
    from ultralytics.engine.trainer import BaseTrainer

    from gradkit.integrations.ultralytics.seams import _period_checkpoint_shape, period_checkpoint

    def trainer(period, epoch):
        return SimpleNamespace(save_period=period, epoch=epoch, wdir=tmp_path)

    (tmp_path / "epoch4.pt").write_bytes(b"")
    assert period_checkpoint(trainer(2, 4)) == tmp_path / "epoch4.pt"
    assert period_checkpoint(trainer(1, 5)) is None  # due, but not written: no state beside nothing
    assert period_checkpoint(trainer(2, 3)) is None and period_checkpoint(trainer(0, 0)) is None
    assert period_checkpoint(trainer(-1, 0)) is None
    assert _period_checkpoint_shape(BaseTrainer) is None

    class EveryEpochNamedOtherwise(BaseTrainer):  # an "upgrade" that names the periodic checkpoints otherwise
        def save_model(self):
            if self.save_period > 0:
                (self.wdir / f"e{self.epoch:03d}.pt").write_bytes(b"")

    assert "save_model no longer saves wdir/epoch{N}.pt every save_period" in _period_checkpoint_shape(
        EveryEpochNamedOtherwise)
    users = object.__new__(EveryEpochNamedOtherwise)  # a user's subclass: training goes on, nothing saved beside
    users.save_period, users.epoch, users.wdir = -1, 0, tmp_path
    assert period_checkpoint(users) is None


def test_every_argument_check_gradkit_answers_in_one_line_is_where_ultralytics_defines_it():
    """``yolo_argument_error`` knows Ultralytics' refusals by the file and function that raise them: one renamed
    or moved in an upgrade would go back to a traceback; this names it."""
    import inspect
    from pathlib import Path

    import ultralytics.cfg
    import ultralytics.engine.trainer
    import ultralytics.utils.checks
    import ultralytics.utils.torch_utils

    from gradkit.integrations.ultralytics.seams import ARGUMENT_CHECKS

    defined = {}
    for module in (ultralytics.cfg, ultralytics.utils.checks, ultralytics.engine.trainer,
                   ultralytics.utils.torch_utils):
        for name, obj in [*inspect.getmembers(module, inspect.isfunction),
                          *inspect.getmembers(getattr(module, "BaseTrainer", object), inspect.isfunction)]:
            if obj.__module__ == module.__name__:
                defined[(Path(inspect.getsourcefile(obj)).name, name)] = obj
    assert set(ARGUMENT_CHECKS) <= set(defined), set(ARGUMENT_CHECKS) - set(defined)


def test_finished_checkpoint_says_none_for_anything_that_is_not_a_finished_run_s_checkpoint(tmp_path):
    """It runs before every ``gradkit train resume=``: a last.pt cut short by a kill while saving, or a file of
    another kind, is for Ultralytics' own loading to name, not a traceback here nor "a run that finished"."""
    from gradkit.integrations.ultralytics.seams import finished_checkpoint

    cases = {"empty.pt": b"", "text.pt": b"not a checkpoint\n"}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    objects = {"list.pt": [1, 2], "tensor.pt": torch.zeros(2), "epoch_none.pt": {"epoch": None, "optimizer": None},
               "epoch_text.pt": {"epoch": "3", "optimizer": None}, "model_only.pt": {"model": None},
               "running.pt": {"epoch": 3, "optimizer": {"state": {}}, "train_args": {"data": "d.yaml"}}}
    for name, obj in objects.items():
        torch.save(obj, tmp_path / name)
    good = tmp_path / "good.pt"
    torch.save({"epoch": 2, "optimizer": {"state": {}}, "train_args": {}}, good)
    good.with_name("cut.pt").write_bytes(good.read_bytes()[:40])  # killed while saving
    for path in sorted(tmp_path.glob("*.pt")):
        assert finished_checkpoint(str(path)) is None, path.name
    torch.save({"epoch": -1, "optimizer": None, "train_args": {"data": "d.yaml"}}, tmp_path / "done.pt")
    assert finished_checkpoint(str(tmp_path / "done.pt")) == {"data": "d.yaml"}


def test_yolo_given_args_parses_every_form_the_entrypoint_accepts(tmp_path):
    """``degrees=0.0`` typed as ``--degrees=0.0``, ``degrees = 0.0`` or in a ``cfg=`` file (a path, or a name
    Ultralytics finds in its own cfg folder) is given all the same; the arguments before and after ``cfg=`` win
    over the file's, as the entrypoint merges them. Oracle: Ultralytics' entrypoint's own overrides, read by running
    it on the same arguments with the trainer replaced."""
    import ultralytics.cfg as yolo_cfg

    from gradkit.integrations.ultralytics.seams import yolo_given_args

    (tmp_path / "mine.yaml").write_text("degrees: 7\nfliplr: 0.5\n", encoding="utf-8")
    forms = [["train", "--degrees=0.0", "hsv_s", "=", "0.7", "scale", "=0.3,"],
             ["train", "degrees=1", f"cfg={tmp_path / 'mine.yaml'}"],
             ["train", "cfg", "=", str(tmp_path / "mine.yaml"), "degrees=2"],
             ["train", "cfg=default.yaml"], ["train", "resume", "degrees=0.0"], ["train", "--resume,"]]
    import unittest.mock as mock

    for argv in forms:
        seen = {}

        def entry_overrides(full, overrides, seen=seen):  # its key check of the parsed arguments: read, then stop
            seen.update(overrides)
            raise SystemExit

        with mock.patch.object(yolo_cfg, "ARGV", ["yolo", *argv]), contextlib.suppress(SystemExit), \
                mock.patch.object(yolo_cfg, "check_dict_alignment", side_effect=entry_overrides):
            yolo_cfg.entrypoint()
        expected = {k: v for k, v in seen.items() if k != "mode"}
        assert {k: v for k, v in yolo_given_args(argv).items() if k != "mode"} == expected, argv  # mode: a word


def test_the_validator_s_per_image_statistics_fail_loudly_when_their_shape_changes(monkeypatch):
    """The report resamples the validator's metrics.stats (one list entry per image) and scores each draw with
    ap_per_class: a changed container, a misaligned record or another return shape names what changed."""
    import numpy as np
    import ultralytics.utils.metrics as metrics

    from gradkit.integrations.ultralytics.seams import (
        average_precision,
        check_recorded_statistics,
        latest_image_stats,
    )

    one = {"tp": np.ones((1, 10), bool), "conf": np.array([0.9]), "pred_cls": np.zeros(1), "target_cls": np.zeros(1)}
    validator = SimpleNamespace(metrics=SimpleNamespace(stats={k: [v] for k, v in one.items()}))
    assert latest_image_stats(validator, 1)[0]["conf"].tolist() == [0.9]
    for stats in (None, {"tp": [one["tp"]]}, {k: v[0] for k, v in validator.metrics.stats.items()}):
        with pytest.raises(SeamError, match=r"metrics\.stats"):
            latest_image_stats(SimpleNamespace(metrics=SimpleNamespace(stats=stats)), 1)
    with pytest.raises(SeamError, match=r"metrics\.stats"):
        latest_image_stats(validator, 2)  # fewer entries than the batch's images
    check_recorded_statistics([one], 0.995, 0.995)  # found at every threshold: 0.995 (its 101-point curve)
    with pytest.raises(SeamError, match="one entry per image"):
        check_recorded_statistics([one], 0.5, 0.5)
    monkeypatch.setattr(metrics, "ap_per_class", lambda *a, **k: (None,) * 7)
    with pytest.raises(SeamError, match="ap_per_class"):
        average_precision(one["tp"], one["conf"], one["pred_cls"], one["target_cls"])


def test_a_refused_run_puts_back_only_what_its_own_trainer_wrote(tmp_path):
    """restore_run_folder rewrites the earlier args.yaml only while the file holds what this run's trainer wrote: a
    second process that started the same folder since keeps its own (found by review); and it acts only on the
    folder Ultralytics' get_save_dir chose for the arguments."""
    from gradkit.integrations.ultralytics.seams import restore_run_folder, run_folder_before

    run_dir = tmp_path / "r"
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "args.yaml").write_text("epochs: 3\n")  # an earlier run's
    before = run_folder_before(["train", f"project={tmp_path}", "name=r", "exist_ok=True"])
    assert before["folder"] == str(run_dir.resolve())
    assert before["files"] == {"args.yaml": b"epochs: 3\n", "labels.jpg": None}
    (run_dir / "args.yaml").write_text("epochs: 7\n")  # what the refused run's trainer wrote
    ours = {"folder": before["folder"], "written": {"args.yaml": b"epochs: 7\n"}}
    (run_dir / "args.yaml").write_text("epochs: 9\n")  # another process, since
    assert not restore_run_folder(before, ours) and (run_dir / "args.yaml").read_text() == "epochs: 9\n"
    (run_dir / "args.yaml").write_text("epochs: 7\n")
    assert not restore_run_folder(before, {**ours, "started": True})  # set up: the folder's records are its own
    assert not restore_run_folder(before, {**ours, "folder": str(tmp_path / "elsewhere")})
    assert restore_run_folder(before, ours) and (run_dir / "args.yaml").read_text() == "epochs: 3\n"
    assert (run_dir / "weights").is_dir()  # it was there before
    (run_dir / "labels.jpg").write_bytes(b"drawn by another run")  # this run was refused before drawing one
    (run_dir / "args.yaml").write_text("epochs: 7\n")
    assert restore_run_folder(before, ours) and (run_dir / "labels.jpg").read_bytes() == b"drawn by another run"


@pytest.mark.parametrize(("model", "task"), [("yolo26n-seg.yaml", "segment"), ("yolo26n-pose.yaml", "pose"),
                                             ("yolo26n.yaml", "detect")])
def test_the_folder_put_back_is_the_one_ultralytics_chooses_for_the_model_s_task(tmp_path, monkeypatch, model, task):
    """Without project= Ultralytics' runs folder is named by the task, which it takes from the model: the folder
    was worked out for detect, so a segmenter's refused run was never put back. Oracle: Ultralytics' get_save_dir
    with the task its YOLO class reads from the model."""
    from ultralytics import YOLO
    from ultralytics.cfg import get_save_dir

    from gradkit.integrations.ultralytics.seams import run_folder_before

    monkeypatch.chdir(tmp_path)
    assert YOLO(model).task == task
    expected = get_save_dir(SimpleNamespace(project=None, name=None, save_dir=None, task=task, mode="train",
                                            exist_ok=False))
    assert run_folder_before(["train", f"model={model}"])["folder"] == str(expected)


@pytest.mark.parametrize(("model", "task"), [("mine.pt", "pose"), ("yolo26n-seg.pt", "segment"),
                                             ("yolo26n.pt", "detect"), ("broken.pt", "detect")])
def test_a_checkpoint_s_task_is_its_training_arguments_or_its_name(tmp_path, monkeypatch, capsys, model, task):
    """A checkpoint names its task in its training arguments; one not here yet (Ultralytics fetches it, or finds it in
    its weights folder) by its name, as Ultralytics' guess_model_task reads it; nothing is printed, nothing fetched."""
    from ultralytics.cfg import get_save_dir

    from gradkit.integrations.ultralytics.seams import run_folder_before

    monkeypatch.chdir(tmp_path)
    torch.save({"train_args": {"task": "pose"}, "epoch": 3}, tmp_path / "mine.pt")  # hand-made, a known task
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    expected = get_save_dir(SimpleNamespace(project=None, name=None, save_dir=None, task=task, mode="train",
                                            exist_ok=False))
    assert run_folder_before(["train", f"model={model}"])["folder"] == str(expected)
    out, err = capsys.readouterr()
    assert "guess" not in out + err and (tmp_path / model).exists() == (model in ("mine.pt", "broken.pt"))
