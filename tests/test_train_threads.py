"""The torch threads a training run takes: Ultralytics' CPU training sets its own (select_device sets
``NUM_THREADS``, min(8, cpus - 1)), so a script that sets torch's threads before ``train()`` is overridden;
``keep_training_threads`` keeps the threads asked for through every step."""

from __future__ import annotations

import pytest
import torch


def _threads_seen(tiny_data, tmp_path, before_train):
    """torch's threads at each training batch's end of a real tiny run, after ``before_train(model)``."""
    from ultralytics import YOLO

    seen = []
    model = YOLO("yolo26n.yaml")
    before_train(model)
    model.add_callback("on_train_batch_end", lambda trainer: seen.append(torch.get_num_threads()))
    model.train(data=str(tiny_data), project=str(tmp_path), name="run", exist_ok=True, epochs=1, imgsz=64,
                batch=8, workers=0, device="cpu", plots=False, val=False, verbose=False)
    return seen


def test_threads_set_before_train_are_overridden_by_ultralytics(tiny_data, tmp_path):
    from ultralytics.utils import NUM_THREADS

    callers = torch.get_num_threads()
    try:
        seen = _threads_seen(tiny_data, tmp_path, lambda model: torch.set_num_threads(NUM_THREADS + 1))
    finally:
        torch.set_num_threads(callers)
    assert seen and set(seen) == {NUM_THREADS}  # Ultralytics' own override, why the helper exists: fails if it stops


def test_keep_training_threads_keeps_the_threads_through_every_step(tiny_data, tmp_path):
    from ultralytics.utils import NUM_THREADS

    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    wanted = NUM_THREADS + 1  # never Ultralytics' own count, whatever the machine
    callers = torch.get_num_threads()
    try:
        seen = _threads_seen(tiny_data, tmp_path, lambda model: keep_training_threads(model, wanted))
    finally:
        torch.set_num_threads(callers)
    assert seen and set(seen) == {wanted}


def test_keep_training_threads_refuses_a_count_below_one():
    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        keep_training_threads(object(), 0)
