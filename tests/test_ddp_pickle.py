"""Ultralytics' DDP path cloudpickles the callbacks; the plugin must travel with its config only."""

import cloudpickle
import torch
from ultralytics import YOLO

import gradkit
from gradkit.integrations.ultralytics import GradkitCallback


def test_callbacks_survive_cloudpickle_with_config_and_fresh_state():
    model = YOLO("yolo26n.yaml")
    cfg = gradkit.attach(model, "defect", {"clip.mode": "autoclip", "clip.percentile": 20.0})
    model.gradkit.step = 41  # run state must not leak into the workers
    copies = cloudpickle.loads(cloudpickle.dumps(model.callbacks))  # what utils/dist.py:generate_ddp_file does
    plugins = {fn.__self__ for fns in copies.values() for fn in fns
               if isinstance(getattr(fn, "__self__", None), GradkitCallback)}
    assert len(plugins) == 1  # all events still share one object in the worker
    (plugin,) = plugins
    assert plugin is not model.gradkit and plugin.cfg == cfg and plugin.step == 0
    assert set(copies["on_pretrain_routine_end"][-1].__self__.events()) == set(model.gradkit.events())
    torch.save({"callbacks": copies}, "/dev/null", pickle_module=cloudpickle)  # as the DDP state file is written
