"""Does channels-last (NHWC) memory make a CPU training step faster? Ultralytics keeps NCHW on the CPU.

One optimizer step of Ultralytics' own model and loss (built from the model YAML, random images with
random boxes, SGD) timed in both layouts, interleaved (NCHW, NHWC, NCHW, ...) so drift hits both; the
fastest of the repeats of each, and their ratio. The models start from the same weights, so their first
loss is compared, and each layout's float32 outputs and gradients against the same model in float64: the
layouts compute the same function, and the columns say how much further from it each one's rounding lands.

    python benchmarks/memory_format.py [--sizes 128 256 352] [--models yolo26n.yaml] [--threads 1]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch


def _agreement(model_yaml: str, size: int, batch: int, nc: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """The relative difference between the layouts' first YOLO loss, and each layout's float32 error against
    float64 (outputs, and the gradients of their sum of squares: the YOLO loss's own gradients also move
    where a rounding flips one of the assigner's near-ties, in either layout)."""
    from gradkit.integrations.ultralytics.throughput import errors_against_float64, first_step_in_both_layouts

    (loss_a, _), (loss_b, _) = first_step_in_both_layouts(model_yaml, nc, batch, size)
    loss = float((loss_a - loss_b).abs().max() / loss_a.abs().max().clamp_min(1e-12))
    return loss, errors_against_float64(model_yaml, nc, batch, size)


def _kernel_errors() -> dict[str, tuple[float, float]]:
    """Where the layouts' rounding differs: one batch-norm layer (training mode, a channel of mean 3 and standard
    deviation 0.1, as after an activation) and one 3x3 convolution, each float32 NCHW and NHWC against float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 88, 88, generator=g) * 0.1 + 3.0
    w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
    bn_ref = torch.nn.functional.batch_norm(x.double(), None, None, training=True)
    conv_ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    out = {}
    for name, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
        xx, ww = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
        bn = torch.nn.functional.batch_norm(xx, None, None, training=True).double()
        conv = torch.nn.functional.conv2d(xx, ww, padding=1).double()
        out[name] = (float((bn - bn_ref).norm() / bn_ref.norm()), float((conv - conv_ref).norm() / conv_ref.norm()))
    return out


def main() -> None:
    from gradkit.integrations.ultralytics.throughput import layout_step_timers, least_disturbed

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 352])
    p.add_argument("--models", nargs="+", default=["yolo26n.yaml"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nc", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}; seconds per step, fastest of "
          f"{args.repeats} interleaved")
    print("| model | imgsz | NCHW s/step | NHWC s/step | NCHW / NHWC | YOLO loss, NHWC vs NCHW | float32 error vs "
          "float64, NCHW: outputs, gradients | NHWC: outputs, gradients |")
    print("|---|---|---|---|---|---|---|---|")
    for model_yaml in args.models:
        for size in args.sizes:
            contiguous, channels_last = layout_step_timers(model_yaml, args.nc, args.batch, size)
            a, b = least_disturbed([contiguous, channels_last], args.repeats)
            loss, err = _agreement(model_yaml, size, args.batch, args.nc)
            (o_a, g_a), (o_b, g_b) = err["contiguous"], err["channels_last"]
            print(f"| {model_yaml} | {size} | {a:.3f} | {b:.3f} | {a / b:.2f}× | {loss:.1e} | {o_a:.1e}, {g_a:.1e} | "
                  f"{o_b:.1e}, {g_b:.1e} |")
    print("\nOne layer's float32 error against float64 (batch norm in training mode, 3x3 convolution):")
    for name, (bn, conv) in _kernel_errors().items():
        print(f"  {name}: batch norm {bn:.1e}, convolution {conv:.1e}")


if __name__ == "__main__":
    main()
