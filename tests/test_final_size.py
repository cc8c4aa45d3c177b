"""``size.final_scale``: the training images read at a larger size for the run's last epochs, in a real run, with
Ultralytics' mosaic closed or open as Ultralytics left it; the switch epoch and size by hand-made cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import train_tiny
from gradkit.config import ConfigError, load_config
from gradkit.integrations.ultralytics.size import final_imgsz, final_size_epoch


@pytest.mark.parametrize(("epochs", "share", "first"), [(100, 0.25, 75), (4, 0.5, 2), (10, 0.3, 7), (3, 0.1, 2),
                                                        (1, 0.25, 0), (1, 0.9, 0),
                                                        # 10 x 0.8 is 8.000000000000002 in floating point
                                                        (10, 0.8, 2), (20, 0.9, 2), (25, 0.56, 11)])
def test_the_switch_epoch_starts_the_run_s_last_share(epochs, share, first):
    # by hand: the last `share` of `epochs` epochs, at least the last one
    assert final_size_epoch(epochs, share) == first


@pytest.mark.parametrize(("imgsz", "scale", "size"), [(448, 1.5, 672), (352, 1.25, 448), (64, 1.2, 64),
                                                      (64, 1.3, 96), (32, 1.0, 32), (96, 1.5, 160)])
def test_the_final_size_is_the_scaled_size_at_the_largest_stride(imgsz, scale, size):
    assert final_imgsz(imgsz, scale, 32) == size


@pytest.mark.parametrize(("key", "value", "message"), [("size.final_scale", 0.5, "greater than or equal to 1"),
                                                       ("size.final_share", 1.0, "less than 1"),
                                                       ("size.final_share", 0, "greater than 0")])
def test_a_bad_value_is_refused_naming_its_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"{key}={value}: .*{message}"):
        load_config("default", {key: value}, typed={key: str(value)})


@pytest.mark.parametrize(("args", "device", "named"), [
    (dict(rect=True), "cpu", "rect=True"), (dict(multi_scale=0.5), "cpu", "multi_scale=0.5"),
    (dict(batch=-1), "cuda", "batch=-1"), (dict(batch=0.7), "cuda", "batch=0.7"),
    (dict(batch=-1), "cpu", None), (dict(batch=16), "cuda", None)])
def test_what_ultralytics_sizes_once_from_imgsz_is_named(args, device, named):
    # an automatic batch on a CPU is Ultralytics' fixed 16: only CUDA's is chosen for imgsz's memory
    from gradkit.integrations.ultralytics.size import final_size_clash

    clash = final_size_clash(SimpleNamespace(**{"rect": False, "multi_scale": 0.0, "batch": 16, **args}), device)
    assert (clash is None) if named is None else clash.startswith(named)


def test_a_changed_dataset_is_refused_naming_what_it_lacks():
    from gradkit.integrations.ultralytics.seams import SeamError, resize_training_images, watch_mosaic_closing

    trainer = SimpleNamespace(_close_dataloader_mosaic=lambda: None, args=SimpleNamespace(imgsz=64),
                              train_loader=SimpleNamespace(reset=lambda: None, dataset=SimpleNamespace(imgsz=64)))
    watch_mosaic_closing(trainer)
    with pytest.raises(SeamError, match=r"no SimpleNamespace\.ni, SimpleNamespace\.ims"):
        resize_training_images(trainer, 128)
    with pytest.raises(SeamError, match="has no _close_dataloader_mosaic"):
        watch_mosaic_closing(SimpleNamespace())


def _stages(compose) -> list:
    """Every stage of a training pipeline, nested Composes walked."""
    found = []
    for stage in getattr(compose, "transforms", None) or []:
        found.append(stage)
        found += _stages(stage)
    return found


def _pipeline_state(trainer) -> dict:
    """What Ultralytics' pipeline reads images at now: each mosaic's probability and size, each warp's size, and
    the long side of an image the dataset loads."""
    from ultralytics.data.augment import Mosaic, RandomPerspective

    dataset = trainer.train_loader.dataset
    stages = _stages(dataset.transforms)
    return {"mosaic": {(s.p, s.imgsz) for s in stages if isinstance(s, Mosaic)},
            "warp": {s.size for s in stages if isinstance(s, RandomPerspective)},
            "loaded": max(dataset.load_image(0)[0].shape[:2])}


def _run(tiny_data, tmp_path, close_mosaic: int):
    """A 4-epoch run switching to twice the size for its last half (epoch index 2): the batches' sizes per epoch and
    the pipeline at each epoch's first batch."""
    batches, pipelines = {}, {}

    def watch_batches(trainer):
        preprocess = trainer.preprocess_batch

        def recorded(batch):
            out = preprocess(batch)
            batches.setdefault(trainer.epoch, set()).add(tuple(out["img"].shape[-2:]))
            return out

        trainer.preprocess_batch = recorded

    def at_first_batch(trainer):  # after gradkit's switch and Ultralytics' mosaic closing
        if trainer.epoch not in pipelines:
            pipelines[trainer.epoch] = _pipeline_state(trainer)

    _, run = train_tiny(tiny_data, tmp_path, overrides={"size.final_scale": 2.0, "size.final_share": 0.5}, epochs=4,
               close_mosaic=close_mosaic, callbacks=[("on_train_start", watch_batches),
                                                    ("on_train_batch_start", at_first_batch)])
    summary = json.loads((run / "gradkit_summary.json").read_text(encoding="utf-8"))
    assert summary["final_size"] == {"imgsz": 64, "final_imgsz": 128, "from_epoch": 3}
    return batches, pipelines


def test_the_last_half_reads_twice_the_size_and_mosaic_stays_closed(tiny_data, tmp_path):
    # Ultralytics closes mosaic at epoch index 1 (4 - close_mosaic 3), gradkit switches at 2: the rebuilt pipeline
    # must be the closed one at 128 px (a rebuild from the run's arguments would open mosaic again)
    batches, pipelines = _run(tiny_data, tmp_path, close_mosaic=3)
    assert batches == {0: {(64, 64)}, 1: {(64, 64)}, 2: {(128, 128)}, 3: {(128, 128)}}
    assert pipelines[0] == {"mosaic": {(1.0, 64)}, "warp": {(64, 64)}, "loaded": 64}
    assert pipelines[2] == {"mosaic": {(0.0, 128)}, "warp": {(128, 128)}, "loaded": 128}


def test_mosaic_closed_at_the_switch_s_own_epoch_is_closed_at_the_new_size(tiny_data, tmp_path):
    # Ultralytics closes mosaic at epoch index 2 (4 - close_mosaic 2), after gradkit's switch in the same epoch
    batches, pipelines = _run(tiny_data, tmp_path, close_mosaic=2)
    assert batches[2] == {(128, 128)}
    assert pipelines[1]["mosaic"] == {(1.0, 64)}
    assert pipelines[2] == {"mosaic": {(0.0, 128)}, "warp": {(128, 128)}, "loaded": 128}


def test_mosaic_open_at_the_switch_is_open_at_the_new_size_until_ultralytics_closes_it(tiny_data, tmp_path):
    # the switch (epoch index 2) comes before Ultralytics closes mosaic (index 3): mosaic at 128 px, then closed
    batches, pipelines = _run(tiny_data, tmp_path, close_mosaic=1)
    assert batches == {0: {(64, 64)}, 1: {(64, 64)}, 2: {(128, 128)}, 3: {(128, 128)}}
    assert pipelines[2] == {"mosaic": {(1.0, 128)}, "warp": {(128, 128)}, "loaded": 128}
    assert pipelines[3] == {"mosaic": {(0.0, 128)}, "warp": {(128, 128)}, "loaded": 128}


@pytest.mark.parametrize(("setting", "named"), [(dict(rect=True), "rect=True"),
                                               (dict(multi_scale=0.5), "multi_scale=0.5")])
def test_a_setting_sized_once_from_imgsz_is_refused_before_the_run_folder_is_used(tiny_data, tmp_path, setting,
                                                                                   named):
    # rect=True batches are shaped once from imgsz (a larger image is letterboxed back), multi_scale resizes each
    # batch around imgsz: either would silently undo the switch
    from gradkit.integrations.ultralytics import PluginError

    with pytest.raises(PluginError, match=rf"size.final_scale 2 .*; {named}"):
        train_tiny(tiny_data, tmp_path, overrides={"size.final_scale": 2.0}, **setting)
    assert not (tmp_path / "run" / "gradkit.yaml").exists()


class _Interrupt(Exception):
    pass


def test_a_resumed_run_reads_the_final_size_from_its_first_epoch_and_keeps_the_switch_epoch(tiny_data, tmp_path):
    # switched at epoch index 2, stopped at 3's start, resumed: Ultralytics rebuilds the dataset at imgsz, and the
    # state file says where the switch was (without it, the record would name the resumed epoch)
    from ultralytics import YOLO

    import gradkit

    def stop(trainer):
        if trainer.epoch == 3:
            raise _Interrupt

    settings = {"size.final_scale": 2.0, "size.final_share": 0.5, "report.enabled": False, "monitor.plot": False}
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides=settings, epochs=4, callbacks=[("on_train_epoch_start", stop)])
    run = tmp_path / "run"
    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None)
    sizes = set()
    model.add_callback("on_train_batch_start", lambda t: sizes.add(t.train_loader.dataset.imgsz))
    model.train(resume=True)
    assert sizes == {128}
    summary = json.loads((run / "gradkit_summary.json").read_text(encoding="utf-8"))
    assert summary["final_size"] == {"imgsz": 64, "final_imgsz": 128, "from_epoch": 3}
