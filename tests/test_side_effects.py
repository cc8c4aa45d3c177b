"""No global side effects: plots leave matplotlib's backend and pyplot alone, the preview leaves the
process-wide random generators where they were."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

PLOTS = r"""
import csv, sys
from pathlib import Path
import matplotlib
matplotlib.use("pdf")  # the caller's choice of backend
from gradkit.monitor.records import LAYER_COLUMNS, STEP_COLUMNS, plot_heatmap
from gradkit.report.gradients import gradient_view
from gradkit.report.render import _training_panels

run = Path(sys.argv[1])
with open(run / "gradients.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(LAYER_COLUMNS)
    for step in range(1, 6):
        for layer in range(3):
            w.writerow([1, step, layer, "Conv", 10.0 ** layer * step, 1.0, 5.0, 1e-3, 0])
with open(run / "gradient_steps.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(STEP_COLUMNS)
    for step in range(1, 6):
        w.writerow([1, step, 120.0 * step, 10.0, 10.0 / (120.0 * step), 1, 0])
png = plot_heatmap(run)
view = gradient_view(run, [])
tag = _training_panels({"epochs": [1, 2, 3], "curves": {"train/box_loss": [3.0, 2.5, 2.0],
                                                     "metrics/mAP50(B)": [0.1, 0.2, None],
                                                     "grad/clip_rate": [1.0, 0.5, 0.25]}})
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, png.stat().st_size, len(view), tag[:40])
"""


def test_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "MPLBACKEND": ""}
    proc = subprocess.run([sys.executable, "-c", PLOTS, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend, pyplot_loaded, size, view_size, tag = proc.stdout.split(maxsplit=4)
    assert backend == "pdf" and pyplot_loaded == "False"
    assert int(size) > 10_000 and int(view_size) > 10_000 and "<img" in tag  # every figure was drawn


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_preview_is_reproducible_and_leaves_the_global_generators_alone(tiny_data, tmp_path):
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import preview_augmentation

    cfg = load_config("defect")
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    expected = _draws()
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.random.set_rng_state(states[2])

    a = preview_augmentation(str(tiny_data), cfg, n=4, out=tmp_path / "a.png", imgsz=64, seed=3)
    b = preview_augmentation(str(tiny_data), cfg, n=4, out=tmp_path / "b.png", imgsz=64, seed=3)
    assert _draws() == expected  # the caller's streams continue as if no preview had run
    assert torch.initial_seed() == 11
    c = preview_augmentation(str(tiny_data), cfg, n=4, out=tmp_path / "c.png", imgsz=64, seed=4)
    import cv2

    img_a, img_b, img_c = (cv2.imread(str(p)) for p in (a, b, c))
    assert np.array_equal(img_a, img_b)  # same seed, same grid (png: lossless)
    assert not np.array_equal(img_a, img_c)


def test_a_seeded_sample_through_ultralytics_stock_albumentations_stage_is_reproducible(tiny_data):
    """Ultralytics' own Albumentations stage (kept when gradkit replaces nothing) draws from its Compose's
    private generator, which global seeds do not reach. Planted: its Blur fires on every sample, so an unseeded
    kernel size (3, 5 or 7) shows in the pixels; the same seed must give the same sample ten times running."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.augment import Albumentations
    from ultralytics.data.utils import check_det_dataset

    from gradkit.integrations.ultralytics.augment import seeded_sample

    data = check_det_dataset(str(tiny_data))
    args = get_cfg(overrides={"imgsz": 64, "data": str(tiny_data), "mode": "train"})
    dataset = build_yolo_dataset(args, data["train"], 4, data, mode="train")
    stage = next(t for t in dataset.transforms.transforms if isinstance(t, Albumentations))
    blur = next(t for t in stage.transform.transforms if type(t).__name__ == "Blur")
    blur.p = 1.0
    images = [seeded_sample(dataset, 0, seed=5)["img"].numpy() for _ in range(10)]
    assert all(np.array_equal(images[0], im) for im in images[1:])
    assert not np.array_equal(images[0], seeded_sample(dataset, 0, seed=6)["img"].numpy())


NO_NETWORK_ON_IMPORT = r"""
import sys
asked = []
sys.addaudithook(lambda event, args: asked.append(f"{event} {args[0]!r}")
                 if event in ("urllib.Request", "socket.connect", "socket.getaddrinfo") else None)
from gradkit.augment import build_compose  # every gradkit module that imports Albumentations is in this package
from gradkit.config import load_config
build_compose(load_config("defect", {"augment.preset": "defect"}), seed=0)  # imports Albumentations, as training does
assert "albumentations" in sys.modules
print("\n".join(asked))
"""


def test_importing_gradkits_augmentation_asks_the_network_nothing():
    """Albumentations asks PyPI for its newest version when it is first imported unless
    NO_ALBUMENTATIONS_UPDATE says not to (Ultralytics sets it before its own import; gradkit imports it
    first): a training run must not reach out, on a factory network or anywhere. The audit hook sees every
    URL opened and every socket connection or name lookup the import makes."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK_ON_IMPORT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"the import asked the network: {done.stdout.strip()}"
