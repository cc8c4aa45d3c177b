"""The simple gradient noise scale of McCandlish et al. (2018), "An Empirical Model of Large-Batch
Training", from two batch sizes of the same optimizer step.

With gradient accumulation, the gradient after the first micro-batch (``b`` samples) and after the
whole step (``B`` samples) are two unbiased estimates of the same true gradient ``G`` at the same
weights. With ``|g_b|^2`` and ``|g_B|^2`` the squared norms of the *mean* gradients (appendix A.1):

    |G|^2  ~  (B |g_B|^2 - b |g_b|^2) / (B - b)
    tr(S)  ~  (|g_b|^2 - |g_B|^2) / (1/b - 1/B)

Each is unbiased but noisy, and their ratio is not: as the paper advises, numerator and denominator
are averaged separately over steps and divided at the end, ``B_simple = mean tr(S) / mean |G|^2``.
``B_simple`` estimates the critical batch size: batches well below it train with near-linear
speed-up per sample when enlarged, batches well above it waste samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MIN_READING_PAIRS", "NoiseScale", "critical_batch_reading"]

#: Steps with two batch sizes below which the reading gives the value without a verdict: the estimators are unbiased
#: but noisy, and only their average over many steps is read (McCandlish et al., appendix A.1). A floor chosen, not
#: measured: one pair (batches of 16 and 17 images) gave a confident verdict.
MIN_READING_PAIRS = 10


@dataclass
class NoiseScale:
    """Running sums of the two unbiased estimates; :meth:`value` is their ratio."""

    trace_sum: float = 0.0
    grad_sq_sum: float = 0.0
    steps: int = 0

    def add(self, small_sq: float, b: float, big_sq: float, big_b: float) -> bool:
        """Add one step: squared norms of the mean gradient over ``b`` and over ``big_b > b`` samples.

        Returns False (and adds nothing) when the pair cannot give an estimate (non-finite, b >= B).
        """
        if not (b > 0 and big_b > b and math.isfinite(small_sq) and math.isfinite(big_sq)):
            return False
        self.grad_sq_sum += (big_b * big_sq - b * small_sq) / (big_b - b)
        self.trace_sum += (small_sq - big_sq) / (1.0 / b - 1.0 / big_b)
        self.steps += 1
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {"trace_sum": self.trace_sum, "grad_sq_sum": self.grad_sq_sum, "steps": self.steps}

    def load_state_dict(self, state: Any) -> None:
        """Continue from saved sums (a resume); a state file is untrusted input: a sum that is not a finite
        number or a step count that is not a whole number from 0 is a ValueError naming it, and nothing loads."""
        if not isinstance(state, dict):
            raise ValueError(f"noise scale state is a {type(state).__name__}, not a mapping of its sums")
        sums = {}
        for key in ("trace_sum", "grad_sq_sum"):
            value = state.get(key)
            try:  # a whole number too large for a float overflows
                sums[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            except OverflowError:
                sums[key] = None
            if sums[key] is None or not math.isfinite(sums[key]):
                raise ValueError(f"noise scale state {key!r} is {str(value)[:40]!r}, not a finite number")
        steps = state.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"noise scale state 'steps' is {str(steps)[:40]!r}, not a whole number from 0")
        self.trace_sum, self.grad_sq_sum, self.steps = sums["trace_sum"], sums["grad_sq_sum"], steps

    def value(self) -> float:
        """``B_simple`` in samples; NaN without steps or when either estimate is not positive (a negative ratio is
        no batch size: the estimates are still within their noise)."""
        if self.steps == 0 or self.grad_sq_sum <= 0 or self.trace_sum <= 0:
            return float("nan")
        return self.trace_sum / self.grad_sq_sum


def critical_batch_reading(noise_scale: float, batch: int, pairs: int = 0) -> str:
    """One sentence on what ``B_simple`` says about the batch size used (images per optimizer step); ``pairs``:
    the steps that gave two batch sizes (without any, there was no accumulation to measure by)."""
    if not math.isfinite(noise_scale) and pairs:
        return (f"no estimate: over {pairs} step(s) with two batch sizes the gradient's squared norm or its noise "
                "was estimated not positive (too few steps for the estimates to rise above their scatter; more steps "
                "would tell)")
    if not math.isfinite(noise_scale):
        return "no estimate (it needs gradient accumulation: nbs larger than batch)"
    if 0 < pairs < MIN_READING_PAIRS:
        return (f"noise scale B_simple ~ {noise_scale:.3g} images from only {pairs} step(s) with two batch sizes: too "
                f"few for a verdict on the {batch} images per optimizer step (it is read from {MIN_READING_PAIRS} on)")
    ratio = batch / max(noise_scale, 1e-12)
    if ratio < 0.5:
        verdict = "below the critical batch size: larger batches would need proportionally fewer steps"
    elif ratio > 2:
        verdict = "above the critical batch size: smaller batches would reach the same loss with fewer images"
    else:
        verdict = "near the critical batch size: a good trade-off between steps and images"
    return (f"noise scale B_simple ~ {noise_scale:.3g} images vs {batch} images per optimizer step: {verdict}. "
            "Caveat: B_simple assumes a well-conditioned loss (B_crit can differ by a factor of a few) and "
            "drifts during training, usually growing as the loss falls")
