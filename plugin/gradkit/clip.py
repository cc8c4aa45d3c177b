"""Gradient clipping policies, pure PyTorch.

One small function per policy and a dispatcher, :func:`make_clipper`, which returns a callable
taking ``(name, parameter)`` pairs, clipping ``.grad`` in place and returning a :class:`ClipResult`.
Nothing here knows about trainers; the Ultralytics integration calls exactly these functions on the
unscaled, fully accumulated gradients.

Every policy measures the per-tensor gradient norms once (one fused ``torch._foreach_norm``) and
returns them, so a monitor can derive per-layer pre-clip norms without a second pass.

Non-finite gradients are left untouched (no NaN clip coefficient is multiplied in) so the caller's
non-finite policy can see where they are and decide to skip the step.
"""

from __future__ import annotations

import bisect
import copy
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_AGC_EXCLUDE",
    "POLICY_DEFAULTS",
    "ClipResult",
    "Clipper",
    "ZClipStats",
    "agc_",
    "autoclip_threshold",
    "layer_of",
    "make_clipper",
    "zclip_threshold",
]

#: Ultralytics Detect heads' final prediction convolutions (box and class outputs, both branches).
DEFAULT_AGC_EXCLUDE: tuple[str, ...] = (r"(^|\.)model\.\d+\.(one2one_)?cv[23]\.\d+\.2\.",)

_LAYER_RE = re.compile(r"(?:^|\.)model\.(\d+)\.")


def layer_of(name: str) -> str:
    """Group key of a parameter: the Ultralytics layer index (``model.6.cv1...`` -> ``"6"``).

    Names that do not follow the Ultralytics pattern group by their first component.
    """
    match = _LAYER_RE.search(name)
    return match.group(1) if match else name.split(".", 1)[0]


@dataclass
class ClipResult:
    """What one clipping call did.

    Attributes:
        total_norm: Global L2 gradient norm before clipping (0-dim tensor, on the gradients' device), whatever
            ``norm_type`` the policy's bound applies to: the monitor combines norms as L2 norms.
        clip_coef: Effective scale of the global norm, clipped / unclipped (1 when nothing changed).
        tensor_norms: Per-tensor L2 norms before clipping, aligned with ``names``.
        names: Names of the parameters that had a gradient, in order.
        uniform: True when every gradient was scaled by the same ``clip_coef`` (post-clip norms are
            then ``tensor_norms * clip_coef``); False when the policy acts per element or per unit.
        total_norm_clipped: Global norm after clipping.
        threshold: The bound the policy applied (max norm, value, AutoClip percentile...), if any.
    """

    total_norm: torch.Tensor
    clip_coef: torch.Tensor
    tensor_norms: torch.Tensor
    names: list[str]
    uniform: bool
    total_norm_clipped: torch.Tensor
    threshold: float | None = None


def _grads(named: Iterable[tuple[str, torch.nn.Parameter]]) -> tuple[list[str], list[torch.Tensor]]:
    names, grads = [], []
    for name, p in named:
        if p.grad is not None:
            names.append(name)
            grads.append(p.grad)
    return names, grads


def _norms(grads: Sequence[torch.Tensor], norm_type: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not grads:
        return torch.zeros(()), torch.zeros(0)
    per_tensor = torch.stack([n.float() for n in torch._foreach_norm(list(grads), norm_type)])
    return torch.linalg.vector_norm(per_tensor, norm_type), per_tensor


def _coefficient(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """The global norm's scale, after / before: 1 for an all-zero gradient (nothing changed)."""
    return torch.where(before > 0, after / torch.where(before > 0, before, 1.0), torch.ones_like(before))


def _reported_norms(grads: Sequence[torch.Tensor], bounded_by: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L2 norms every policy reports (the monitor sums their squares), for a policy whose bound applies to the
    ``bounded_by``-norm: accumulated in float64 there, so gradients whose inf- or 1-norm is finite but whose
    squares overflow float32 (1e20) keep a finite L2 norm and are clipped, as torch clips them."""
    if bounded_by == 2.0 or not grads:
        return _norms(grads, 2.0)
    per = torch.stack([torch.linalg.vector_norm(g, 2, dtype=torch.float64) for g in grads])
    return torch.linalg.vector_norm(per, 2).float(), per.float()


def _is_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


class Clipper:
    """A clipping policy bound to its parameters; call it with ``(name, parameter)`` pairs.

    Stateful policies (AutoClip) expose ``state_dict`` / ``load_state_dict`` so their history
    survives a resume.
    """

    def __init__(self, mode: str, fn: Callable[..., ClipResult], params: dict[str, Any]):
        self.mode = mode
        self.params = params
        self._fn = fn
        self.history: NormHistory | None = None
        if mode == "autoclip":
            self.history = NormHistory(params.get("history"))
        self.zstats: ZClipStats | None = None
        if mode == "zclip":
            self.zstats = ZClipStats(params["alpha"], params["warmup_steps"])

    def __call__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> ClipResult:
        named = list(named_parameters)
        if named and isinstance(named[0], torch.Tensor):
            raise TypeError("a gradkit clipper takes (name, parameter) pairs: pass model.named_parameters(), "
                            "not model.parameters() (the names group layers and select AGC's exclusions)")
        return self._fn(self, named)

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "history": list(self.history) if self.history is not None else None,
                "zclip": self.zstats.state_dict() if self.zstats is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Read back a saved state, all or nothing: one that could make a threshold NaN, negative or undefined
        (a state file is untrusted) raises ValueError naming the field, and the clipper keeps its own."""
        if not isinstance(state, dict) or state.get("mode") != self.mode:
            found = state.get("mode") if isinstance(state, dict) else state
            raise ValueError(f"clip state is for mode {found!r}, this clipper is {self.mode!r}")
        history = _norm_list([] if state.get("history") is None else state["history"], "clip state history")
        if self.zstats is not None and state.get("zclip") is not None:
            self.zstats.load_state_dict(state["zclip"])
        if self.history is not None:
            self.history.clear()
            self.history.extend(history)

    def __repr__(self) -> str:
        return f"Clipper(mode={self.mode!r}, params={self.params!r})"


# --------------------------------------------------------------------------- policies
def _none(clipper: Clipper, named) -> ClipResult:
    names, grads = _grads(named)
    total, per = _norms(grads, 2.0)
    one = torch.ones_like(total)
    return ClipResult(total, one, per, names, True, total)


def _global_norm(max_norm: float, norm_type: float):
    """Global norm clipping, as ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al. 2013)."""

    def clip(clipper: Clipper, named) -> ClipResult:
        names, grads = _grads(named)
        total, per = _reported_norms(grads, norm_type)
        bounded = total if norm_type == 2.0 else _norms(grads, norm_type)[0]
        if not grads or not _is_finite(bounded):
            return ClipResult(total, torch.ones_like(total), per, names, True, total, max_norm)
        coef = torch.clamp(max_norm / (bounded + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef.to(grads[0].device))
        return ClipResult(total, coef, per, names, True, total * coef, max_norm)

    return clip


def _value(clip_value: float):
    """Element-wise clipping to [-clip_value, clip_value], as ``torch.nn.utils.clip_grad_value_``."""

    def clip(clipper: Clipper, named) -> ClipResult:
        names, grads = _grads(named)
        total, per = _norms(grads, 2.0)
        if not grads or not _is_finite(total):
            return ClipResult(total, torch.ones_like(total), per, names, False, total, clip_value)
        torch._foreach_clamp_min_(grads, -clip_value)
        torch._foreach_clamp_max_(grads, clip_value)
        after, _ = _norms(grads, 2.0)
        return ClipResult(total, _coefficient(after, total), per, names, False, after, clip_value)

    return clip


def _unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit: over all dims but the first; a vector or scalar is one unit."""
    if x.ndim <= 1:
        return x.norm(2)
    return x.norm(2, dim=tuple(range(1, x.ndim)), keepdim=True)


def agc_(params: Iterable[torch.nn.Parameter], clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping in place (Brock, De, Smith, Simonyan 2021, "High-Performance
    Large-Scale Image Recognition Without Normalization", NFNets).

    For every output unit i: if ``||G_i|| > clip_factor * max(||W_i||, eps)`` then
    ``G_i <- G_i * clip_factor * max(||W_i||, eps) / ||G_i||``.
    """
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.detach()
        bound = _unitwise_norm(p.detach().float()).clamp(min=eps) * clip_factor
        g_norm = _unitwise_norm(g.float())
        scale = torch.where(g_norm > bound, bound / g_norm.clamp(min=1e-6), torch.ones_like(g_norm))
        g.mul_(scale.to(g.dtype))


def _agc(clip_factor: float, eps: float, exclude: Sequence[str]):
    patterns = [re.compile(p) for p in exclude]

    def clip(clipper: Clipper, named) -> ClipResult:
        named = [(n, p) for n, p in named if p.grad is not None]
        names, grads = [n for n, _ in named], [p.grad for _, p in named]
        total, per = _norms(grads, 2.0)
        if not grads or not _is_finite(total):
            return ClipResult(total, torch.ones_like(total), per, names, False, total, clip_factor)
        agc_([p for n, p in named if not any(r.search(n) for r in patterns)], clip_factor, eps)
        after, _ = _norms(grads, 2.0)
        return ClipResult(total, _coefficient(after, total), per, names, False, after, clip_factor)

    return clip


class NormHistory:
    """AutoClip's observed norms, the last ``maxlen`` (all where None): in order, as the state file keeps them, and
    sorted as they arrive, so each step's percentile costs a binary search and an insertion, not a sort of every norm
    seen (the paper's reference does that)."""

    def __init__(self, maxlen: int | None):
        self._in_order: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] = []

    def append(self, norm: float) -> None:
        if self._in_order.maxlen is not None and len(self._in_order) == self._in_order.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._in_order[0])]  # the one the window drops
        self._in_order.append(norm)
        bisect.insort(self._sorted, norm)

    def extend(self, norms: Iterable[float]) -> None:
        self._in_order.extend(norms)
        self._sorted = sorted(self._in_order)  # once: a resume reads a whole history back

    def clear(self) -> None:
        self._in_order.clear()
        self._sorted.clear()

    def percentile(self, q: float) -> float:
        """As ``np.percentile(norms, q)`` (its default, linear interpolation between the nearest ranks)."""
        at = (len(self._sorted) - 1) * q / 100.0
        lo = math.floor(at)
        hi = min(lo + 1, len(self._sorted) - 1)
        low, high = self._sorted[lo], self._sorted[hi]
        return low + (high - low) * (at - lo)

    def __iter__(self):
        return iter(self._in_order)

    def __len__(self) -> int:
        return len(self._in_order)


def autoclip_threshold(history: Iterable[float], percentile: float) -> float:
    """AutoClip threshold: the ``percentile``-th percentile of the observed gradient norms."""
    return float(np.percentile(np.fromiter(history, dtype=np.float64), percentile))


def _autoclip(percentile: float):
    """AutoClip (Seetharaman, Wichern, Pardo, Le Roux 2020, "AutoClip: Adaptive Gradient Clipping for
    Source Separation Networks"): clip the global norm at the p-th percentile of all norms seen so
    far, the current one included. On the first step the history holds only the current norm, so
    the threshold equals it and nothing is clipped (warm start); non-finite norms are not recorded.
    """

    def clip(clipper: Clipper, named) -> ClipResult:
        names, grads = _grads(named)
        total, per = _norms(grads, 2.0)
        if not grads or not _is_finite(total):
            return ClipResult(total, torch.ones_like(total), per, names, True, total, None)
        clipper.history.append(float(total))
        threshold = clipper.history.percentile(percentile)
        # the first step's threshold is the norm itself: nothing is clipped there, and the coefficient says 1
        coef = torch.where(total > threshold, threshold / (total + 1e-6), torch.ones_like(total))
        torch._foreach_mul_(grads, coef.to(grads[0].device))
        return ClipResult(total, coef, per, names, True, total * coef, threshold)

    return clip


class ZClipStats:
    """ZClip's running statistics of the total gradient norm (Kumar et al. 2025, arXiv 2504.02507).

    The first ``warmup_steps`` norms are collected; their mean and (population) variance start the
    exponential moving averages ``mu <- alpha mu + (1 - alpha) g``, then
    ``var <- alpha var + (1 - alpha) (g - mu)^2`` with the updated ``mu``, as the authors' reference
    implementation (PyPI ``zclip`` 1.0.0) does.
    """

    def __init__(self, alpha: float, warmup_steps: int):
        self.alpha = alpha
        self.warmup_steps = warmup_steps
        self.buffer: list[float] = []
        self.mean: float | None = None
        self.var: float | None = None

    @property
    def ready(self) -> bool:
        return self.mean is not None

    def warm_up(self, norm: float) -> None:
        self.buffer.append(norm)
        if len(self.buffer) >= self.warmup_steps:
            self.mean = sum(self.buffer) / len(self.buffer)
            self.var = sum((x - self.mean) ** 2 for x in self.buffer) / len(self.buffer)
            self.buffer = []

    def update(self, norm: float) -> None:
        self.mean = self.alpha * self.mean + (1 - self.alpha) * norm
        self.var = self.alpha * self.var + (1 - self.alpha) * (norm - self.mean) ** 2

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": list(self.buffer), "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """All or nothing, as :meth:`Clipper.load_state_dict`: a mean and a variance both set (finite, the
        variance not negative) or both unset, and a buffer of norms."""
        if not isinstance(state, dict):
            raise ValueError(f"zclip state is {type(state).__name__}, not a mapping")
        buffer = _norm_list([] if state.get("buffer") is None else state["buffer"], "zclip state buffer")
        mean, var = state.get("mean"), state.get("var")
        if (mean is None) != (var is None):
            raise ValueError(f"zclip state has mean {mean!r} and var {var!r}: both or neither")
        if mean is not None:
            mean, var = (_norm_list([v], f"zclip state {name}")[0] for name, v in (("mean", mean), ("var", var)))
        self.buffer, self.mean, self.var = buffer, mean, var


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _norm_list(values: Any, what: str) -> list[float]:
    """``values`` as gradient norms (finite numbers >= 0), or ValueError naming ``what``."""
    try:
        norms = [float(v) for v in values] if isinstance(values, list | tuple) and all(map(_is_number, values)) \
            else None
    except OverflowError:  # an int past float's range
        norms = None
    if norms is None or not all(math.isfinite(v) and v >= 0 for v in norms):
        raise ValueError(f"{what} is not a list of finite norms >= 0: {str(values)[:60]}")
    return norms


def zclip_threshold(norm: float, mean: float, var: float, z_thresh: float, eps: float,
                    clip_factor: float) -> float | None:
    """ZClip's reciprocal clipping bound, or None when the norm is no outlier.

    ``z = (g - mu) / (sigma + eps)``; if ``z > z_thresh`` the norm is clipped to
    ``(mu + z_thresh * sigma / (z / z_thresh)) * clip_factor``: the larger the spike, the tighter
    the bound (Kumar et al. 2025, section 3, "reciprocal clipping").
    """
    std = math.sqrt(var)
    z = (norm - mean) / (std + eps)
    if z <= z_thresh:
        return None
    return (mean + z_thresh * std / (z / z_thresh)) * clip_factor


def _zclip(z_thresh: float, eps: float, clip_factor: float, max_norm: float | None):
    """ZClip (Kumar, Owen, Ashraf et al. 2025, "ZClip: Adaptive Spike Mitigation for LLM
    Pre-Training", arXiv 2504.02507): z-score of the total norm against EMAs of its mean and
    variance; an outlier is clipped to the reciprocal bound of :func:`zclip_threshold` and the
    statistics are updated with that bound instead of the spike. No clipping during the warm-up.
    ``max_norm`` is the reference implementation's extra absolute cap (off unless set); it does
    not enter the statistics. Non-finite norms are left for the caller and not recorded.
    """

    def clip(clipper: Clipper, named) -> ClipResult:
        names, grads = _grads(named)
        total, per = _norms(grads, 2.0)
        if not grads or not _is_finite(total):
            return ClipResult(total, torch.ones_like(total), per, names, True, total, None)
        norm, stats = float(total), clipper.zstats
        adaptive = None
        if stats.ready:
            adaptive = zclip_threshold(norm, stats.mean, stats.var, z_thresh, eps, clip_factor)
            stats.update(adaptive if adaptive is not None else norm)
        else:
            stats.warm_up(norm)
        bound = min(b for b in (adaptive, max_norm, math.inf) if b is not None)
        coef = bound / (norm + 1e-6) if norm > bound else 1.0
        if coef < 1.0:
            torch._foreach_mul_(grads, coef)
        threshold = None if math.isinf(bound) else bound
        coef_t = torch.full_like(total, coef)
        return ClipResult(total, coef_t, per, names, True, total * coef_t, threshold)

    return clip


def _layer_norm(max_norm: float, norm_type: float, group_fn: Callable[[str], str]):
    """Norm clipping applied separately to each layer's gradients (each layer bounded by max_norm)."""

    def clip(clipper: Clipper, named) -> ClipResult:
        names, grads = _grads(named)
        total, per = _reported_norms(grads, norm_type)
        bounded_total, bounded = (total, per) if norm_type == 2.0 else _norms(grads, norm_type)
        if not grads or not _is_finite(bounded_total):
            return ClipResult(total, torch.ones_like(total), per, names, False, total, max_norm)
        keys = [group_fn(n) for n in names]
        order = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        index = torch.tensor([order[k] for k in keys], device=per.device)
        if math.isinf(norm_type):
            layer = torch.zeros(len(order), device=per.device).scatter_reduce_(0, index, bounded, "amax")
        else:
            powered = torch.zeros(len(order), device=per.device).index_add_(0, index, bounded**norm_type)
            layer = powered ** (1.0 / norm_type)
        coef = torch.clamp(max_norm / (layer + 1e-6), max=1.0)
        per_tensor_coef = coef[index]
        for g, c in zip(grads, per_tensor_coef, strict=True):
            g.mul_(c.to(g.dtype))
        after, _ = _reported_norms(grads, norm_type)
        return ClipResult(total, _coefficient(after, total), per, names, False, after, max_norm)

    return clip


#: Each policy's parameters and their defaults: the one definition (the configuration reference
#: shows these; gradkit.config.CLIP_MODE_PARAMS lists the same names for validation, a test keeps them equal).
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "stock": {},
    "none": {},
    "norm": {"max_norm": 10.0, "norm_type": 2.0},
    "value": {"clip_value": 1.0},
    "agc": {"clip_factor": 0.01, "eps": 1e-3, "exclude": list(DEFAULT_AGC_EXCLUDE)},
    "autoclip": {"percentile": 10.0, "history": None},
    "layer_norm": {"max_norm": 10.0, "norm_type": 2.0},
    "zclip": {"alpha": 0.97, "z_thresh": 2.5, "warmup_steps": 25, "eps": 1e-6, "clip_factor": 1.0, "max_norm": None},
}


def make_clipper(mode: str, group_fn: Callable[[str], str] = layer_of, **params: Any) -> Clipper:
    """Build a clipping policy.

    Args:
        mode: ``stock`` (global L2 at 10, Ultralytics' own), ``none``, ``norm``, ``value``, ``agc``,
            ``autoclip``, ``layer_norm`` or ``zclip``.
        group_fn: Maps a parameter name to its layer, for ``layer_norm``.
        **params: The mode's parameters (see ``gradkit.config.CLIP_MODE_PARAMS``).

    Raises:
        ValueError: for an unknown mode, an unknown parameter or an out-of-range value.
    """
    defaults = POLICY_DEFAULTS
    if mode not in defaults:
        raise ValueError(f"unknown clip mode {mode!r}; modes: {', '.join(defaults)}")
    unknown = sorted(set(params) - set(defaults[mode]))
    if unknown:
        raise ValueError(f"clip mode {mode!r} takes {sorted(defaults[mode]) or 'no parameters'}, got {unknown}")
    p = {**copy.deepcopy(defaults[mode]), **params}
    for key in ("max_norm", "clip_value", "clip_factor", "eps", "norm_type"):
        if key in p and p[key] is not None and not p[key] > 0:
            raise ValueError(f"clip.{key} must be > 0, got {p[key]!r}")
    if mode == "autoclip" and not 0 < p["percentile"] <= 100:
        raise ValueError(f"clip.percentile must be in (0, 100], got {p['percentile']!r}")
    if mode == "autoclip" and p["history"] is not None and (isinstance(p["history"], bool) or
                                                             not isinstance(p["history"], int) or p["history"] < 1):
        raise ValueError(f"clip.history must be a whole number >= 1 or unset, got {p['history']!r}")
    if mode == "zclip" and not (0 < p["alpha"] < 1 and p["z_thresh"] > 0 and p["warmup_steps"] >= 1):
        raise ValueError(f"zclip needs 0 < alpha < 1, z_thresh > 0, warmup_steps >= 1; got alpha={p['alpha']!r}, "
                         f"z_thresh={p['z_thresh']!r}, warmup_steps={p['warmup_steps']!r}")
    factories: dict[str, Callable[[], Callable[..., ClipResult]]] = {
        "stock": lambda: _global_norm(10.0, 2.0),
        "none": lambda: _none,
        "norm": lambda: _global_norm(float(p["max_norm"]), float(p["norm_type"])),
        "value": lambda: _value(float(p["clip_value"])),
        "agc": lambda: _agc(float(p["clip_factor"]), float(p["eps"]), p["exclude"]),
        "autoclip": lambda: _autoclip(float(p["percentile"])),
        "layer_norm": lambda: _layer_norm(float(p["max_norm"]), float(p["norm_type"]), group_fn),
        "zclip": lambda: _zclip(float(p["z_thresh"]), float(p["eps"]), float(p["clip_factor"]),
                                None if p["max_norm"] is None else float(p["max_norm"])),
    }
    return Clipper(mode, factories[mode](), p)
