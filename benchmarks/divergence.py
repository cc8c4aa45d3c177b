"""Early warning of divergence: how many optimizer steps before the loss blows up does `diverging` fire?

Provoked divergent runs of yolo26n.yaml (``--model``) on tiny generated data (``--data``: a dataset
YAML instead), no clipping (``clip.mode=none``): SGD at 30x and 100x the default lr0 over seeds, and a
run whose labels are replaced by random ones halfway. The loss of every optimizer step is recorded
(mean over its batches); the run *diverges* at the first step whose loss is non-finite or above 10x
the running median of the earlier steps (DIVERGED_RISE), or at the first of COLLAPSE_STEPS in a row below
that median / COLLAPSE_FALL (a collapse: exploded weights can also end at a loss of 0). The lead time is
that step minus the step of the first `diverging` alert (positive: a warning came first).
The healthy corpus of benchmarks/fault_detection.py gives the false-warning count.

Runs are recorded once (step_losses.json next to the monitor's CSVs) and stopped a few steps after
they diverged; a second call replays the recorded statistics through the current detector.

    python benchmarks/fault_detection.py --healthy-only --out /tmp/gradkit-faults   # the healthy corpus
    python benchmarks/divergence.py --out /tmp/gradkit-diverge-160 --images 96 --imgsz 160 \
        --max-steps 100 --corrupt-epoch 2                                        # README's table

``--curvature`` also records, at every step, the loss of the step's own batch before and after the
step (a second forward pass) and the step's g.d (the gradient the optimizer was given, dotted with
the update it applied), here and on the healthy corpus (at its 64 px and, for its from-scratch runs,
at this script's size). It prints how often and how far a step raised its batch's loss, with the lead
of the first rise of RISE_WARN or more, and the step's predicted gain -g.d over the median loss so
far, with the lead of the first gain at or above GAIN_WARN. Records made without g.d are refused: remove
them to record again.

``--sharpness`` also records, at every optimizer step of the provoked runs and of the healthy SGD runs
at this script's size, the largest eigenvalue of the lr-scaled Hessian of the step's batch loss over
the Nesterov stability limit (times the clip factor), and prints the lead of the first ratio of
SHARPNESS_WARN or more.

``--layer-spikes`` replays the recorded per-layer gradient norms (every step, ``gradients.csv``) of the
provoked runs and of the healthy runs recorded beside them (``OUT/healthy-sharp``, ``OUT/healthy-here``)
and of the healthy corpus: the first step at which some layer's norm is ``LAYER_SPIKE_DECADES`` above the
median of its own ``LAYER_WINDOW`` steps before, its lead, and how many steps had such a layer.

``--weight-growth`` also trains the healthy corpus's from-scratch runs at this script's data and size
(``OUT/healthy-growth``, the default clip as in the corpus) and prints, per run, the largest growth of
a layer's weight norm over ``diverging_growth_steps`` before the divergence (the arm of ``diverging``
that warns first on the provoked runs), the first step at ``diverging_growth`` or more, and its lead
(for optimizers the arm does not watch, other than SGD and MuSGD, the column says where it would have
warned); the same for the
GROWTH_PROBES AdamW runs (``OUT/growth-probes``); then the healthy SGD runs' growth quantiles against
the threshold (README's margin table) and the largest growth of the other healthy runs.

``--alignment`` also records, at every optimizer step, the cosine between the step's gradient and the
optimizer's momentum (SGD's ``momentum_buffer``, Adam's ``exp_avg``) and between consecutive
gradients: a learning rate above the stability limit of a direction makes the iterate overshoot
along it, so the gradient turns against the momentum (the edge-of-stability picture). It prints the
first step at which cos(gradient, momentum) fell to ``ALIGNMENT_WARN`` or below and its lead.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import fault_detection as fd
import numpy as np

DEFAULT_LR0 = 0.01  # Ultralytics' default lr0
#: Warm-up epochs per 1x of lr0 of the provoked runs: the lr ramps linearly from 0 over ``warm-up
#: epochs * batches`` iterations (Ultralytics 8.4.190 has no 100-iteration floor), so both multipliers
#: get the same lr per step (0.1: x30 over Ultralytics' default 3 epochs, x100 over 10) and differ in
#: the final lr. A slower ramp (1.2: 180 / 600 steps) was tried to make the runs diverge later: none of
#: 4 runs diverged in 150 steps (README, "Early warning of divergence").
WARMUP_EPOCHS_PER_X = 0.1
#: Epochs the provoked runs are planned for: many, so that Ultralytics' linear lr decay (lf) stays
#: near 1 during the ramp; the runs are stopped a few steps after divergence or at ``--max-steps``.
EPOCHS = 200
#: cos(gradient, momentum) at or below this counts as a sign of overshooting in ``--alignment``. On the
#: 160 px runs it stays within +-0.08 over the first 20 steps of every run (noise: 4 images per batch).
ALIGNMENT_WARN = -0.1
#: A step whose update raised the loss of its own batch by this share (``--curvature``) is counted as a
#: warning in its lead column: between the healthy runs at 160 px (at most +11%) and the rises of the
#: provoked runs of seeds 0-2 (README, "The step's own batch after the step").
RISE_WARN = 0.2
#: A step whose first-order predicted loss decrease, -g.d, exceeds this multiple of the run's typical
#: loss (the median so far) is counted as a warning by :func:`print_predicted_gain`: a loss that is
#: never negative cannot fall by more than itself, so such a step has left the region where its
#: gradient describes the loss. Not fitted, but not exact either: the median stands in for the loss of
#: the step's own batch, which can be far lower (a batch without objects: about 0.08), so a healthy
#: step may pass 1 on such a batch (README, "The step's predicted gain").
GAIN_WARN = 1.0
#: ``--layer-spikes``: a layer whose gradient norm is this many decades (1: 10x) above the median of its own
#: LAYER_WINDOW steps before counts as a warning: the spike arm's test, per layer instead of on the total.
LAYER_SPIKE_DECADES = 1.0
LAYER_WINDOW = 8
#: Power iterations per step of ``--sharpness``: at the first step from a random vector, then
#: warm-started from the previous step's.
SHARPNESS_FIRST_ITERATIONS, SHARPNESS_ITERATIONS = 10, 3
#: Finite-difference step of the Hessian-vector products, relative to the parameters' norm.
FD_STEP = 1e-3
#: A stability ratio (lr-scaled curvature over the Nesterov limit, ``--sharpness``) at or above this
#: counts as a warning: the quadratic model's edge.
SHARPNESS_WARN = 1.0
#: The healthy runs that ``--curvature`` also trains on the provoked runs' data and image size.
HEALTHY_AT_PROVOKED_SIZE = ("demo recipe", "SGD seed 0", "SGD seed 1", "SGD seed 2",
                            "AdamW seed 0", "AdamW seed 1", "AdamW seed 2")
#: ``--weight-growth`` also trains these runs (optimizer, lr0, warm-up epochs) beside the healthy corpus's: how
#: close an AdamW lr0 above the corpus's, or Ultralytics' default warm-up, comes to the weight-growth threshold,
#: and a healthy MuSGD run (what ``optimizer=auto`` picks for long runs) at its lr0.
GROWTH_PROBES = (("AdamW", 0.02, 0), ("AdamW", 0.01, 3), ("AdamW", 0.05, 3), ("MuSGD", 0.01, 0))
AFTER_DIVERGENCE = 3  # optimizer steps recorded past the divergence step before the run is stopped
#: A run has diverged at a step whose loss is this many times the median of the earlier steps' losses.
DIVERGED_RISE = 10
#: ... or at the first of COLLAPSE_STEPS steps in a row whose loss is below that median / COLLAPSE_FALL.
#: Exploded weights can end at a loss of 0 instead of a rise: on an AMD EPYC CPU a planted gradient growth
#: tripled the weights' norm within 8 steps, after which Ultralytics' loss read 0.0 at every step, where
#: other CPUs' rounding sent it above 10x the median (tests/test_e2e_diverging.py). One batch alone can
#: score near 0 (few objects left after mosaic), so a single low step does not count.
COLLAPSE_FALL = 100
COLLAPSE_STEPS = 3


def _loss_recorder(store: list, max_steps: int):
    """Records (optimizer step, loss) per batch; stops the run AFTER_DIVERGENCE steps after the loss
    diverged (divergence_step) or at ``max_steps``, to spend no CPU on a run already lost."""

    def record(trainer):
        plugin = fd._plugin(trainer)
        loss = trainer.loss
        store.append((plugin.step, float(loss.detach()) if loss is not None else float("nan")))
        div = divergence_step(mean_by_step(store))
        if plugin.step >= max_steps or (div is not None and plugin.step >= div + AFTER_DIVERGENCE):
            trainer.stop = True

    return record


def _alignment_recorder(store: list):
    """Wraps the optimizer's step (called after the unscale and the clip, before the update) to append,
    per step the plugin counted, cos(gradient, momentum of the previous steps) and cos(gradient,
    previous gradient). SGD's ``momentum_buffer`` has the weight decay folded in; the gradient here
    does not (it is added inside the step), which at these learning rates is a small part."""

    def cos(dot: float, a: float, b: float) -> float | None:
        return dot / math.sqrt(a * b) if a > 0 and b > 0 else None

    def wrap(trainer):
        import torch

        opt, previous = trainer.optimizer, {}
        unwrapped = opt.step

        def step(*args, **kwargs):
            with torch.no_grad():  # in float64: near a blow-up float32 sums of squares overflow
                gm = mm = gp = pp = gg = 0.0
                for p in (p for group in opt.param_groups for p in group["params"] if p.grad is not None):
                    g, state = p.grad.double(), opt.state.get(p, {})
                    m = state.get("momentum_buffer", state.get("exp_avg"))
                    if m is not None:
                        m = m.double()
                        gm, mm = gm + float((g * m).sum()), mm + float((m * m).sum())
                    if p in previous:
                        gp, pp = gp + float((g * previous[p]).sum()), pp + float((previous[p] ** 2).sum())
                    gg += float((g * g).sum())
                    previous[p] = g
            # the plugin has counted this step already (a skipped non-finite step never gets here)
            store.append({"step": fd._plugin(trainer).step, "cos_grad_momentum": cos(gm, gg, mm),
                          "cos_grad_previous": cos(gp, gg, pp)})
            return unwrapped(*args, **kwargs)

        opt.step = step

    return wrap


def _curvature_recorder(store: list):
    """Wraps the optimizer's step to record, per step the plugin counted, the loss of the batch the
    step was computed on before the step (the trainer's) and after it (a second forward pass of the
    same batch under the trainer's autocast; buffers restored, no randomness drawn: the run is
    unchanged). Batch-to-batch noise, which makes cos(g, previous g) useless here, cancels. With
    gradient accumulation the batch is only the last of the step's micro-batches: such steps are
    recorded with their ``accumulate`` and left out by :func:`same_batch_rises`. It also records the
    step's first-order prediction of that change, ``gd`` = g.d (g: the gradient the optimizer was given,
    after the clip; d: the update it applied): :func:`print_predicted_gain`."""

    def wrap(trainer):
        import torch
        from ultralytics.utils.torch_utils import autocast

        opt, captured = trainer.optimizer, {}
        unwrapped, preprocess = opt.step, trainer.preprocess_batch
        amp = torch.bfloat16 if trainer.args.amp == "bf16" else trainer.amp

        def keep_batch(batch):
            captured["batch"] = batch = preprocess(batch)
            return batch

        def step(*args, **kwargs):
            loss0 = float(trainer.loss.detach())
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            before = [p.detach().clone() for p in params]
            grads = [p.grad.detach().double() for p in params]
            out = unwrapped(*args, **kwargs)
            gd = sum(float((g * (p.detach().double() - b.double())).sum()) for g, p, b in
                     zip(grads, params, before, strict=True))
            with torch.no_grad(), autocast(amp, device=trainer.device.type):
                buffers = [(b, b.clone()) for b in trainer.model.buffers()]
                loss1 = float(trainer.model(captured["batch"])[0].sum())
                for b, saved in buffers:
                    b.copy_(saved)
            store.append({"step": fd._plugin(trainer).step, "loss0": loss0, "loss1": loss1,
                          "accumulate": int(trainer.accumulate), "gd": gd})
            return out

        opt.step, trainer.preprocess_batch = step, keep_batch

    return wrap


def nesterov_limit(momentum: float) -> float:
    """The largest lr * curvature at which PyTorch's Nesterov SGD (Ultralytics' SGD) still converges on a
    quadratic: the iteration x' = (1 - a(1 + m)) x - m^2 b, b' = m b + a x (a = lr * curvature, b the
    momentum buffer times lr) gets an eigenvalue -1 at a = 2(1 + m) / (1 + 2m) (1.35 at m = 0.937)."""
    return 2 * (1 + momentum) / (1 + 2 * momentum)


def _dot(a, b) -> float:
    return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))


def dominant_eigenvalue(hessian_vector, scale: list[float], v: list, iterations: int) -> tuple[float, list]:
    """Power iteration on P^1/2 H P^1/2 (``scale``: P^1/2 per parameter tensor; ``hessian_vector(u)``: H u
    as a list of tensors): (the Rayleigh quotient of the last iterate, the next unit vector, for a warm
    start). Power iteration finds the eigenvalue of largest *magnitude*; a negative one comes out as such.
    The iteration stops early, keeping its vector, where H u is zero or not finite."""
    v = [x / math.sqrt(_dot(v, v)) for x in v]
    value = math.nan
    for _ in range(iterations):
        w = [c * hu for c, hu in zip(scale, hessian_vector([c * x for c, x in zip(scale, v, strict=True)]),
                                     strict=True)]
        value, norm = _dot(v, w), math.sqrt(_dot(w, w))
        if not (norm > 0 and math.isfinite(norm)):
            break
        v = [x / norm for x in w]
    return value, v


def finite_difference_hvp(gradient, params: list, g0: list, u: list) -> list:
    """H u ~ (g(theta + h u) - g(theta)) / h for the parameters ``params`` (``gradient()``: the gradient at
    their current values, float64; ``g0``: the one at theta), h making the step FD_STEP times |theta|.
    The parameters are put back whatever happens."""
    import torch

    theta = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in params))
    h = FD_STEP * theta / math.sqrt(_dot(u, u))
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, x in zip(params, u, strict=True):
                p.add_((h * x).to(p.dtype))
        g1 = gradient()
    finally:
        with torch.no_grad():
            for p, s_ in zip(params, saved, strict=True):
                p.copy_(s_)
    return [(a - b) / h for a, b in zip(g1, g0, strict=True)]


def _sharpness_recorder(store: list):
    """Wraps the optimizer's step to record, per step the plugin counted, the dominant eigenvalue of the
    lr-scaled Hessian P^1/2 H P^1/2 of the step's batch loss (P: each parameter's lr, so the three param
    groups' warm-up ramps are in it), before the step's update, by :func:`dominant_eigenvalue` with
    :func:`finite_difference_hvp`, warm-started from the previous step's vector (SHARPNESS_FIRST_ITERATIONS
    at the first step, SHARPNESS_ITERATIONS after). Its ratio to :func:`nesterov_limit` of the step's
    momentum is the quadratic model's stability margin. Extra forward/backward passes on the same batch;
    parameters and BatchNorm buffers put back: the run is unchanged. SGD runs only (Adam's
    preconditioner is not its lr)."""

    def wrap(trainer):
        import torch
        from ultralytics.utils.torch_utils import autocast

        opt, captured, state = trainer.optimizer, {}, {}
        unwrapped, preprocess = opt.step, trainer.preprocess_batch
        if not isinstance(opt, torch.optim.SGD) or not all(g.get("nesterov") for g in opt.param_groups):
            raise SystemExit(f"--sharpness measures Nesterov SGD runs only, this one uses {type(opt).__name__}")

        def keep_batch(batch):
            captured["batch"] = batch = preprocess(batch)
            return batch

        def step(*args, **kwargs):
            groups = [(g, p) for g in opt.param_groups for p in g["params"] if p.grad is not None]
            params = [p for _, p in groups]

            def gradient():
                with autocast(trainer.amp, device=trainer.device.type):
                    loss = trainer.model(captured["batch"])[0].sum()
                return [g.double() for g in torch.autograd.grad(loss, params)]

            buffers = [(b, b.clone()) for b in trainer.model.buffers()]
            try:
                g0 = gradient()
                start = state.get("v") or _random_start(params)
                iterations = SHARPNESS_ITERATIONS if "v" in state else SHARPNESS_FIRST_ITERATIONS
                value, state["v"] = dominant_eigenvalue(lambda u: finite_difference_hvp(gradient, params, g0, u),
                                                        [math.sqrt(g["lr"]) for g, _ in groups], start, iterations)
            finally:
                with torch.no_grad():
                    for b, saved in buffers:
                        b.copy_(saved)
            momentum = float(opt.param_groups[0]["momentum"])
            store.append({"step": fd._plugin(trainer).step, "lr_curvature": value, "momentum": momentum,
                          "limit": nesterov_limit(momentum), "accumulate": int(trainer.accumulate)})
            return unwrapped(*args, **kwargs)

        opt.step, trainer.preprocess_batch = step, keep_batch

    return wrap


def _random_start(params: list) -> list:
    """A seeded random start vector for the power iteration, one generator for all tensors, float64."""
    import torch

    gen = torch.Generator().manual_seed(0)
    return [torch.randn(p.shape, dtype=torch.float64, generator=gen).to(p.device) for p in params]


def stability_ratios(run: Path, before: int | None = None) -> tuple[list[tuple[int, float, float]], int]:
    """((step, stability ratio with the clip, without it) of every one-batch step recorded by
    ``--sharpness`` before ``before``, the number of steps left out because the estimate was not finite).
    The ratio is the lr-scaled curvature over the Nesterov limit; each step's value is measured before
    its update, so the step before the divergence counts. With the clip it is multiplied by the step's
    clip factor: a clip shrinks the current gradient's share of the update as a smaller lr would (an
    approximation: the momentum buffer carries earlier, differently clipped gradients)."""
    rows = _records(run / "sharpness.json", "sharpness", lambda r: (
        int(r["step"]), float(r["lr_curvature"]), float(r["limit"]), int(r.get("accumulate", 1))))
    coef = _clip_coefficients(run)
    kept = [(step, value / limit) for step, value, limit, acc in rows if (before is None or step < before) and acc == 1]
    finite = [(step, r * coef.get(step, 1.0), r) for step, r in kept if math.isfinite(r)]
    return finite, len(kept) - len(finite)


def _records(path: Path, what: str, row) -> list:
    """``row(entry)`` of every entry of a JSON record this script wrote (read back as untrusted input)."""
    try:
        return [row(r) for r in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SystemExit(f"{path}: not a {what} record of this script ({exc}); remove it to record again") from None


def _clip_coefficients(run: Path) -> dict[int, float]:
    """Optimizer step -> the factor the clip scaled its gradient by, from the monitor's gradient_steps.csv
    (every run here has the monitor on)."""
    path = run / "gradient_steps.csv"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return {int(r["step"]): float(r["clip_coef"]) for r in csv.DictReader(f)}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"{path}: no clip factors to read ({exc}); remove the run to record it again") from None


def _first_warning(steps_values, threshold: float, div: int | None) -> tuple[int | None, int | None]:
    """(first step whose value is at or above ``threshold``, its lead over ``div``)."""
    first = next((s for s, v in steps_values if v >= threshold), None)
    return first, (div - first if div is not None and first is not None else None)


def print_stability_ratios(runs: dict[str, tuple[Path, int | None]]) -> list[int]:
    """Per run, over the steps before its divergence: the first five stability ratios, their median and
    largest, the largest without the clip factor, and the first step at or above SHARPNESS_WARN with its
    lead. Returns the leads of the diverged runs (0 where none came first)."""
    print(f"\nstability ratio (--sharpness): lr-scaled curvature over the Nesterov limit, times the clip factor; "
          f"warning at {SHARPNESS_WARN:g}")
    print(f"{'run':36}{'first 5':>24}{'median':>8}{'largest':>9}{'no clip':>9}"
          f"{'first >= ' + format(SHARPNESS_WARN, 'g'):>11}{'lead':>6}")
    leads = []
    for name, (run, div) in runs.items():
        ratios, dropped = stability_ratios(run, div)
        first, lead = _first_warning([(s, r) for s, r, _ in ratios], SHARPNESS_WARN, div)
        if div is not None:
            leads.append(lead or 0)
        values = [r for _, r, _ in ratios]
        head = " ".join(f"{r:.2g}" for r in values[:5])
        med = statistics.median(values) if values else math.nan
        print(f"{name:36}{head:>24}{med:>8.3g}{max(values, default=math.nan):>9.3g}"
              f"{max((u for _, _, u in ratios), default=math.nan):>9.3g}{first if first else '-':>11}"
              f"{lead if lead is not None else '-':>6}" + (f"  ({dropped} non-finite left out)" if dropped else ""))
    return leads


def layer_spike_steps(run: Path, before: int | None = None) -> list[int]:
    """Steps (up to ``before``) at which some layer's log10 gradient norm is LAYER_SPIKE_DECADES above the
    median of its own LAYER_WINDOW steps before (all of them recorded)."""
    norms: dict[str, dict[int, float]] = {}
    with open(run / "gradients.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            norms.setdefault(row["layer"], {})[int(row["step"])] = math.log10(max(float(row["grad_norm"]), 1e-30))

    def spikes(by_step: dict[int, float], step: int) -> bool:
        window = [by_step[t] for t in range(step - LAYER_WINDOW, step) if t in by_step]
        return (step in by_step and len(window) == LAYER_WINDOW
                and by_step[step] - statistics.median(window) >= LAYER_SPIKE_DECADES)

    steps = sorted({s for by_step in norms.values() for s in by_step if before is None or s <= before})
    return [s for s in steps if any(spikes(by_step, s) for by_step in norms.values())]


def print_layer_spikes(runs: dict[str, tuple[Path, int | None]]) -> list[int]:
    """Per run: the first layer spike before its divergence, its lead, and the share of steps with one.
    Returns the leads of the diverged runs (0 where none came first)."""
    print(f"\nlayer spikes (--layer-spikes): some layer's norm >= {10 ** LAYER_SPIKE_DECADES:g}x the median of its "
          f"own {LAYER_WINDOW} steps before")
    print(f"{'run':36}{'steps':>6}{'diverged at':>12}{'first spike':>12}{'lead':>6}{'steps with one':>16}")
    leads = []
    for name, (run, div) in runs.items():
        hits = layer_spike_steps(run, div)
        first = hits[0] if hits else None
        lead = div - first if div is not None and first is not None else None
        if div is not None:
            leads.append(lead or 0)
        recorded = len(step_losses(run)) if (run / "step_losses.json").exists() else len(_steps(run))
        print(f"{name:36}{recorded:>6}{div if div else '-':>12}{first if first else '-':>12}"
              f"{lead if lead is not None else '-':>6}{len(hits):>16}")
    return leads


def weight_growths(run: Path, before: int | None = None) -> list[tuple[int, float, str]]:
    """(step, largest growth over the layers, that layer) at each weight measurement up to ``before``:
    the detector's own WeightGrowth replayed over the recorded weight norms (gradients.csv)."""
    from gradkit.config import AlertsConfig
    from gradkit.monitor.divergence import WeightGrowth

    by_step: dict[int, dict[str, float]] = {}
    with open(run / "gradients.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if before is None or int(row["step"]) <= before:
                value = float(row["weight_norm"]) if row["weight_norm"] else math.nan
                by_step.setdefault(int(row["step"]), {})[f'{row["layer"]} {row["module"]}'] = value
    growth, out = WeightGrowth(AlertsConfig().diverging_growth_steps), []
    for step, norms in sorted(by_step.items()):
        values = np.array(list(norms.values()))
        if not np.isfinite(values).any():  # no measurement at this step (the plugin's freshness, per step)
            continue
        g = growth.update(step, values)
        if np.isfinite(g).any():
            i = int(np.nanargmax(g))
            out.append((step, float(g[i]), list(norms)[i]))
    return out


def print_weight_growth(runs: dict[str, tuple[Path, int | None]]) -> list[int]:
    """Per run: the largest weight growth up to its divergence, the first at diverging_growth or more and
    its lead (the arm watches SGD and MuSGD runs: for others the column says where it would have warned);
    then the healthy SGD runs'
    (names starting "healthy") distribution of the growth at every weight measurement against the
    threshold, in decades (README's margin table), and the largest growth of the other healthy runs.
    Returns the leads of the diverged runs (0 where none came first)."""
    from gradkit.config import AlertsConfig

    cfg = AlertsConfig()
    threshold = f"first >= {cfg.diverging_growth:g}"
    print(f"\nweight growth (--weight-growth): a layer's weight norm over its norm {cfg.diverging_growth_steps} or "
          f"more steps before; warns at {cfg.diverging_growth:g}x (SGD runs)")
    print(f"{'run':40}{'steps':>6}{'diverged at':>12}{'largest (layer, step)':>30}{threshold:>14}{'lead':>6}")
    leads, healthy, healthy_other = [], [], []
    for name, (run, div) in runs.items():
        growths = weight_growths(run, div)
        watched = fd.growth_watched(run)
        if name.startswith("healthy"):
            (healthy if watched else healthy_other).extend(g for _, g, _ in growths)
        top = max(growths, key=lambda t: t[1], default=None)
        would = next((s for s, g, _ in growths if g >= cfg.diverging_growth), None)
        first = would if watched else None
        lead = div - first if div is not None and first is not None else None
        if div is not None:
            leads.append(lead or 0)
        largest = f"{top[1]:.2f} ({top[2]}, {top[0]})" if top else "-"
        shown = (first or "-") if watched else f"off, {would or '-'} ({fd.optimizer_of(run)})"  # would-be step
        print(f"{name:40}{len(_steps(run)):>6}{div if div else '-':>12}{largest:>30}{shown:>14}"
              f"{lead if lead is not None else '-':>6}")
    if healthy:
        logs, limit = np.log10(healthy), math.log10(cfg.diverging_growth)
        print(f"healthy SGD runs, {len(healthy)} weight measurements (log10 growth): "
              f"q50 {np.percentile(logs, 50):.3f}, q99 {np.percentile(logs, 99):.3f}, max {logs.max():.3f}; "
              f"threshold {limit:.3f}, margin {limit - logs.max():.3f} decades")
    if healthy_other:
        print(f"healthy runs of other optimizers (the arm is off): largest growth {max(healthy_other):.2f}x")
    return leads


def record_healthy(out: Path, data: Path, imgsz: int, names) -> dict[str, Path]:
    """The runs ``names`` of fault_detection.py's healthy corpus trained on ``data`` at ``imgsz`` into
    ``out``, with nothing but the plugin's own records (runs recorded are kept)."""
    corpus = fd.healthy_corpus()
    _check_healthy_names(corpus, names)
    runs = {}
    for name in names:
        slug = _healthy_slug(name)
        if not (out / slug / "gradients.csv").exists():
            fd.train(data, out, slug, {"imgsz": imgsz, **corpus[name]})
        runs[name] = out / slug
    return runs


def record_growth_probes(out: Path, data: Path, imgsz: int) -> dict[str, Path]:
    """The GROWTH_PROBES runs, as the healthy corpus trains them otherwise (default clip)."""
    runs = {}
    for optimizer, lr0, warmup in GROWTH_PROBES:
        name = f"{optimizer} lr0 {lr0:g} warm-up {warmup}"
        slug = _healthy_slug(name)
        if not (out / slug / "gradients.csv").exists():
            fd.train(data, out, slug, {"imgsz": imgsz, "optimizer": optimizer, "lr0": lr0, "warmup_epochs": warmup})
        runs[name] = out / slug
    return runs


def _steps(run: Path) -> set[int]:
    with open(run / "gradients.csv", encoding="utf-8") as f:
        return {int(row["step"]) for row in csv.DictReader(f)}


def same_batch_rises(run: Path, before: int | None = None) -> list[tuple[int, float]]:
    """(step, rise of its batch's loss over the loss before the step, relative) of every step recorded by
    ``--curvature`` before ``before`` that had one batch (no accumulation) and a non-zero loss."""
    rows = _records(run / "curvature.json", "curvature", lambda r: (
        int(r["step"]), float(r["loss0"]), float(r["loss1"]), int(r.get("accumulate", 1))))
    return [(step, (after - loss) / abs(loss)) for step, loss, after, acc in rows
            if (before is None or step < before) and acc == 1 and loss != 0]


def _healthy_slug(name: str) -> str:
    return "healthy-" + name.replace(" ", "_").replace("=", "")


def _check_healthy_names(corpus: dict, names) -> None:
    unknown = set(names or ()) - set(corpus)
    if unknown:
        raise SystemExit(f"not runs of the healthy corpus: {sorted(unknown)}; it has {sorted(corpus)}")


def record_healthy_curvature(out: Path, data: Path, imgsz: int, names=None) -> dict[str, Path]:
    """The runs of fault_detection.py's healthy corpus that step once per batch (``names``: all of
    them), trained again on ``data`` at ``imgsz`` with the ``--curvature`` recorder into ``out`` (runs
    already recorded are kept). They keep the default clip, as in the corpus; the provoked runs have none."""
    corpus = fd.healthy_corpus()
    _check_healthy_names(corpus, names)
    runs = {}
    for name, kw in corpus.items():
        if (names is not None and name not in names) or kw.get("nbs", fd.BASE["nbs"]) > fd.BASE["batch"]:
            continue
        slug = _healthy_slug(name)
        if not (out / slug / "curvature.json").exists():
            store: list = []
            fd.train(data, out, slug, {"imgsz": imgsz, **kw}, [("on_train_start", _curvature_recorder(store))])
            (out / slug / "curvature.json").write_text(json.dumps(store), encoding="utf-8")
        runs[name] = out / slug
    return runs


def record_healthy_sharpness(out: Path, data: Path, imgsz: int, names, max_steps: int) -> dict[str, Path]:
    """The SGD runs ``names`` of fault_detection.py's healthy corpus, trained on ``data`` at ``imgsz`` with
    the ``--sharpness`` recorder into ``out`` for ``max_steps`` optimizer steps (runs recorded are kept)."""
    corpus = fd.healthy_corpus()
    _check_healthy_names(corpus, names)
    runs = {}
    for name in names:
        slug = _healthy_slug(name)
        if not (out / slug / "sharpness.json").exists():
            store: list = []
            fd.train(data, out, slug, {"imgsz": imgsz, **corpus[name]},
                     [("on_train_start", _sharpness_recorder(store)),
                      ("on_train_batch_end", _loss_recorder([], max_steps))])
            (out / slug / "sharpness.json").write_text(json.dumps(store), encoding="utf-8")
        runs[name] = out / slug
    return runs


def print_same_batch_rises(runs: dict[str, tuple[Path, int | None]]) -> list[int]:
    """Per run, up to its divergence: how many steps raised their own batch's loss, the largest rise
    2 or more steps before the divergence (the rise of the step just before it is the blow-up itself),
    and the first such rise of at least RISE_WARN with its lead. Returns the leads of the diverged runs
    (0 where no such rise came first)."""
    print("\nsame-batch loss after the step (--curvature): steps before the divergence whose update raised the "
          "loss of the batch it was computed on")
    print(f"{'run':36}{'steps':>6}{'raised':>8}{'share':>7}{'largest rise >= 2 ahead':>25}{'at':>5}"
          f"{'first >= ' + format(RISE_WARN, '.0%'):>14}{'lead':>6}")
    leads = []
    for name, (run, div) in runs.items():
        rises = same_batch_rises(run, div)
        up = [(s, r) for s, r in rises if r > 0]
        early = [(s, r) for s, r in up if div is None or s < div - 1]
        top = max(early, key=lambda sr: sr[1], default=(None, math.nan))
        first, lead = _first_warning(early, RISE_WARN, div)
        if div is not None:
            leads.append(lead or 0)
        print(f"{name:36}{len(rises):>6}{len(up):>8}{len(up) / max(len(rises), 1):>7.0%}{top[1]:>+25.0%}"
              f"{top[0] if top[0] else '-':>5}{first if first else '-':>14}{lead if lead is not None else '-':>6}")
    return leads


def predicted_gains(run: Path, before: int | None = None) -> list[tuple[int, float, float]]:
    """(step, -g.d over the median loss of the one-batch steps so far, the same with the gradient before
    the clip) of every one-batch step recorded by ``--curvature`` before ``before`` (the clip factor
    comes from the monitor's gradient_steps.csv; 1 where the step is missing there). Steps whose
    median loss so far is not positive are left out: the gain has no scale there."""
    stored = json.loads((run / "curvature.json").read_text(encoding="utf-8"))
    rows = [r for r in stored if int(r.get("accumulate", 1)) == 1]
    if rows and "gd" not in rows[0]:
        raise SystemExit(f"{run / 'curvature.json'}: recorded without g.d; remove it to record again")
    coef = _clip_coefficients(run) if (run / "gradient_steps.csv").exists() else {}
    gains, losses = [], []
    for r in rows:
        step = int(r["step"])
        if before is not None and step >= before:
            break
        losses.append(float(r["loss0"]))
        typical = statistics.median(losses)
        if not typical > 0:  # a zero (or non-finite) typical loss has no scale to compare the gain with
            continue
        gain = -float(r["gd"]) / typical
        gains.append((step, gain, gain / (coef.get(step) or 1.0)))
    return gains


def print_predicted_gain(runs: dict[str, tuple[Path, int | None]]) -> list[int]:
    """Per run, up to its divergence: the largest predicted gain (-g.d over the typical loss) with the
    gradient the optimizer was given and with the gradient before the clip, and the first step whose
    gain reached GAIN_WARN with its lead. Returns the leads of the diverged runs (0 where none came first)."""
    print(f"\npredicted gain (--curvature): -g.d over the median loss so far; warning at {GAIN_WARN:g}")
    print(f"{'run':36}{'largest gain':>13}{'before clip':>13}{'first >= ' + format(GAIN_WARN, 'g'):>10}{'lead':>6}")
    leads = []
    for name, (run, div) in runs.items():
        # As in print_same_batch_rises: the update of the step just before the divergence is the
        # blow-up itself, so only steps 2 or more ahead count.
        gains = predicted_gains(run, None if div is None else div - 1)
        first, lead = _first_warning([(s, g) for s, g, _ in gains], GAIN_WARN, div)
        if div is not None:
            leads.append(lead or 0)
        top = max((g for _, g, _ in gains), default=math.nan)
        raw = max((g for _, _, g in gains), default=math.nan)
        print(f"{name:36}{top:>13.3g}{raw:>13.3g}{first if first else '-':>10}{lead if lead is not None else '-':>6}")
    return leads


def first_overshoot(run: Path) -> int | None:
    """The first optimizer step whose cos(gradient, momentum) is at or below ALIGNMENT_WARN."""
    path = run / "alignment.json"
    if not path.exists():
        return None
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))
        low = [int(a["step"]) for a in steps if float(a["cos_grad_momentum"] or 0.0) <= ALIGNMENT_WARN]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"{path}: not an alignment record of this script ({exc}); remove it to record again") from None
    return min(low, default=None)


def _corrupt_labels_at(epoch: int, seed: int = 0):
    """From ``epoch`` on, every training label gets a random class and a random box."""
    rng = np.random.default_rng(seed)

    def corrupt(trainer):
        if trainer.epoch != epoch:
            return
        nc = len(trainer.data["names"])
        for lab in trainer.train_loader.dataset.labels:
            n = len(lab["cls"])
            lab["cls"] = rng.integers(0, nc, size=(n, 1)).astype(np.float32)
            xy = rng.uniform(0.2, 0.8, size=(n, 2))
            wh = rng.uniform(0.05, 0.4, size=(n, 2))
            lab["bboxes"] = np.concatenate([xy, wh], 1).astype(np.float32)

    return corrupt


def provoked_runs(seeds, epochs: int, warmup_per_x: float, corrupt_epoch: int,
                  optimizer: str = "SGD") -> dict[str, tuple[dict, list]]:
    runs = {}
    for mult in (30, 100):
        for s in seeds:
            kw = dict(optimizer=optimizer, lr0=DEFAULT_LR0 * mult, seed=s, epochs=epochs,
                      warmup_epochs=warmup_per_x * mult)
            runs[f"{optimizer} lr0 x{mult} seed {s}"] = (kw, [])
    runs["labels corrupted halfway"] = (dict(optimizer="SGD", lr0=DEFAULT_LR0, epochs=2 * corrupt_epoch,
                                             warmup_epochs=3),
                                        [("on_train_epoch_start", _corrupt_labels_at(corrupt_epoch))])
    return runs


def step_losses(run: Path) -> dict[int, float]:
    """Optimizer step -> loss of its batch (the provoked runs step at every batch, nbs=batch; the
    recorder runs after the batch's step, so the plugin's counter already names it)."""
    return mean_by_step(json.loads((run / "step_losses.json").read_text(encoding="utf-8")))


def mean_by_step(pairs) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for step, loss in pairs:
        by_step.setdefault(step, []).append(loss)
    return {s: float(np.mean(v)) for s, v in sorted(by_step.items())}


def divergence_step(losses: dict[int, float]) -> int | None:
    """The first optimizer step whose loss is non-finite or above DIVERGED_RISE x the median of the earlier
    steps' losses, or the first of COLLAPSE_STEPS in a row below that median / COLLAPSE_FALL; None if neither."""
    steps = list(losses.items())
    seen: list[float] = []
    for i, (step, loss) in enumerate(steps):
        if not math.isfinite(loss):
            return step
        if len(seen) >= 3:
            median = statistics.median(seen)
            following = [v for _, v in steps[i:i + COLLAPSE_STEPS]]
            if loss > DIVERGED_RISE * median or (len(following) == COLLAPSE_STEPS
                                                  and max(following) < median / COLLAPSE_FALL):
                return step
        seen.append(loss)
    return None


def train_provoked(data: Path, out: Path, name: str, kw: dict, callbacks: list, max_steps: int,
                   alignment: bool = False, curvature: bool = False, sharpness: bool = False) -> Path:
    store: list = []
    aligned: list = []
    curved: list = []
    sharp: list = []
    slug = "diverge-" + name.replace(" ", "_")
    run = out / slug
    if (not (run / "step_losses.json").exists() or (alignment and not (run / "alignment.json").exists())
            or (curvature and not (run / "curvature.json").exists())
            or (sharpness and not (run / "sharpness.json").exists())):
        record = [("on_train_batch_end", _loss_recorder(store, max_steps))]
        if alignment:
            record.append(("on_train_start", _alignment_recorder(aligned)))
        if curvature:
            record.append(("on_train_start", _curvature_recorder(curved)))
        if sharpness:
            record.append(("on_train_start", _sharpness_recorder(sharp)))
        run = fd.train(data, out, slug, dict(kw), [*callbacks, *record], overrides={"clip.mode": "none"})
        (run / "step_losses.json").write_text(json.dumps(store), encoding="utf-8")
        if alignment:
            (run / "alignment.json").write_text(json.dumps(aligned), encoding="utf-8")
        if curvature:
            (run / "curvature.json").write_text(json.dumps(curved), encoding="utf-8")
        if sharpness:
            (run / "sharpness.json").write_text(json.dumps(sharp), encoding="utf-8")
    return run


def first_warning(alerts: list[dict]) -> int | None:
    steps = [a["step"] for a in alerts if a["kind"] == "diverging"]
    return min(steps) if steps else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/gradkit-diverge")
    ap.add_argument("--faults-out", default="/tmp/gradkit-faults", help="where fault_detection.py keeps its runs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--warmup-per-x", type=float, default=WARMUP_EPOCHS_PER_X,
                    help="warm-up epochs per 1x of lr0")
    ap.add_argument("--max-steps", type=int, default=60, help="stop a run that has not diverged by then")
    ap.add_argument("--only", default="", help="run only the provoked runs whose name contains this")
    ap.add_argument("--corrupt-epoch", type=int, default=6, help="epoch at which the labels are corrupted")
    ap.add_argument("--optimizer", default="SGD", help="optimizer of the provoked runs (the label run keeps SGD)")
    ap.add_argument("--model", default=fd.MODEL, help="model YAML of the provoked and healthy runs trained here")
    ap.add_argument("--data", default=None, help="a dataset YAML instead of the generated one (--images, --imgsz)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--curvature", action="store_true",
                    help="also record the loss of each step's batch after the step, here and on the healthy corpus "
                         "(into OUT/healthy and OUT/healthy-here), and print how often and how far a step raised it, "
                         "and each step's predicted gain (-g.d over the median loss so far)")
    ap.add_argument("--sharpness", action="store_true",
                    help="also record, per step, the largest lr-scaled Hessian eigenvalue over the Nesterov "
                         "stability limit, here and on the healthy SGD runs at this size (into OUT/healthy-sharp)")
    ap.add_argument("--layer-spikes", action="store_true",
                    help="replay the recorded per-layer norms: the first step with a layer LAYER_SPIKE_DECADES above "
                         "its own recent median, here and on the healthy runs recorded beside them")
    ap.add_argument("--weight-growth", action="store_true",
                    help="also train the healthy from-scratch runs at this size (into OUT/healthy-growth) and print "
                         "each run's largest weight growth, first growth >= diverging_growth and its lead")
    ap.add_argument("--alignment", action="store_true",
                    help="also record cos(gradient, momentum) per step and print its first overshoot and lead")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else fd._dataset(out, args.images, args.imgsz)
    fd.MODEL = args.model
    fd.BASE["imgsz"] = args.imgsz
    leads, overshoot_leads, curved, sharp, spiky = [], [], {}, {}, {}
    print(f"{'run':28}{'steps':>6}{'diverged at':>12}{'warned at':>10}{'lead':>6}"
          + (f"{'cos(g,m)<=' + str(ALIGNMENT_WARN) + ' at':>20}{'lead':>6}" if args.alignment else ""))
    for name, (kw, cbs) in provoked_runs([int(s) for s in args.seeds.split(",")], args.epochs,
                                              args.warmup_per_x, args.corrupt_epoch, args.optimizer).items():
        if args.only not in name:
            continue
        run = train_provoked(data, out, name, kw, cbs, args.max_steps, args.alignment, args.curvature,
                             args.sharpness)
        losses = step_losses(run)
        div, warn = divergence_step(losses), first_warning(fd.replay(run))
        lead = div - warn if div is not None and warn is not None else None
        if lead is not None:
            leads.append(lead)
        if args.curvature:
            curved[name] = (run, div)
        if args.sharpness:
            sharp[name] = (run, div)
        spiky[name] = (run, div)
        line = (f"{name:28}{len(losses):>6}{div if div else '-':>12}{warn if warn else '-':>10}"
                f"{lead if lead is not None else '-':>6}")
        if args.alignment:
            over = first_overshoot(run)
            over_lead = div - over if div is not None and over is not None and over <= div else None
            if div is not None:
                overshoot_leads.append(over_lead or 0)  # no sign before the divergence: lead 0
            line += f"{over if over else '-':>20}{over_lead if over_lead is not None else '-':>6}"
        print(line)
    if leads:
        print(f"diverging: median lead {statistics.median(leads)} optimizer steps over the {len(leads)} diverged "
              "runs it warned about")
    if overshoot_leads:
        print(f"cos(gradient, momentum) <= {ALIGNMENT_WARN}: median lead {statistics.median(overshoot_leads)} "
              f"optimizer steps over all {len(overshoot_leads)} diverged runs (lead 0 where it came at or after "
              "the divergence, or never)")
    healthy = [p for p in Path(args.faults_out).glob("healthy-*") if (p / "gradients.csv").exists()]
    false = sum(first_warning(fd.replay(p)) is not None for p in healthy)
    print(f"healthy corpus: {false} of {len(healthy)} runs with a diverging warning")
    if args.layer_spikes:
        recorded = [*healthy, *(out / "healthy-sharp").glob("healthy-*"), *(out / "healthy-here").glob("healthy-*")]
        spike_leads = print_layer_spikes({**spiky, **{f"healthy {p.parent.name}/{p.name}": (p, None)
                                                      for p in recorded if (p / "gradients.csv").exists()}})
        if spike_leads:
            print(f"layer spike: median lead {statistics.median(spike_leads)} optimizer steps over all "
                  f"{len(spike_leads)} diverged runs (lead 0 where none came first)")
    if args.weight_growth:
        grown = record_healthy(out / "healthy-growth", data, args.imgsz, HEALTHY_AT_PROVOKED_SIZE)
        probes = record_growth_probes(out / "growth-probes", data, args.imgsz)
        growth_leads = print_weight_growth({**spiky, **{f"healthy {k}, {args.imgsz} px": (p, None)
                                                        for k, p in grown.items()},
                                            **{f"healthy {p.name}": (p, None) for p in healthy},
                                            **{f"probe {k}, {args.imgsz} px": (p, None) for k, p in probes.items()}})
        if growth_leads:
            print(f"weight growth: median lead {statistics.median(growth_leads)} optimizer steps over all "
                  f"{len(growth_leads)} diverged runs (lead 0 where none came first)")
    if args.sharpness:
        sharp_healthy = record_healthy_sharpness(out / "healthy-sharp", data, args.imgsz,
                                                 [n for n in HEALTHY_AT_PROVOKED_SIZE if n.startswith("SGD")],
                                                 args.max_steps)
        sharp_leads = print_stability_ratios({**sharp, **{f"healthy {k}, {args.imgsz} px": (p, None)
                                                          for k, p in sharp_healthy.items()}})
        if sharp_leads:
            print(f"stability ratio >= {SHARPNESS_WARN:g}: median lead {statistics.median(sharp_leads)} optimizer "
                  f"steps over all {len(sharp_leads)} diverged runs (lead 0 where none came first)")
    if args.curvature:
        # the healthy corpus as fault_detection.py trains it (24 images at 64 px), and its from-scratch runs
        # on the provoked runs' data and size, where a batch holds as many objects as theirs
        corpus = record_healthy_curvature(out / "healthy", fd._dataset(out / "healthy", fd.IMAGES, fd.IMGSZ),
                                          fd.IMGSZ)
        here = record_healthy_curvature(out / "healthy-here", data, args.imgsz, HEALTHY_AT_PROVOKED_SIZE)
        rise_leads = print_same_batch_rises({**curved, **{f"healthy {k}": (p, None) for k, p in corpus.items()},
                                **{f"healthy {k}, {args.imgsz} px": (p, None) for k, p in here.items()}})
        if rise_leads:
            print(f"own-batch rise >= {RISE_WARN:.0%}: median lead {statistics.median(rise_leads)} optimizer steps "
                  f"over all {len(rise_leads)} diverged runs (lead 0 where none came 2 or more steps ahead)")
        gain_leads = print_predicted_gain({**curved, **{f"healthy {k}": (p, None) for k, p in corpus.items()},
                                           **{f"healthy {k}, {args.imgsz} px": (p, None) for k, p in here.items()}})
        if gain_leads:
            print(f"predicted gain >= {GAIN_WARN:g}: median lead {statistics.median(gain_leads)} optimizer steps over "
                  f"all {len(gain_leads)} diverged runs (lead 0 where none came first)")


if __name__ == "__main__":
    main()
