"""The maths behind ``benchmarks/divergence.py --sharpness``, against cases with known answers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import divergence as dv  # a benchmark script, found through the path above


def _final_size(lr: float, momentum: float, steps: int = 3000) -> float:
    x = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr, momentum=momentum, nesterov=True)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * x**2).sum().backward()                               # curvature 1: lr * curvature = lr
        opt.step()
    return float(x.detach().abs())


@pytest.mark.parametrize("momentum", [0.5, 0.8, 0.937])  # torch refuses Nesterov without momentum
def test_nesterov_limit_is_where_torch_sgd_stops_converging(momentum):
    limit = dv.nesterov_limit(momentum)
    assert _final_size(0.98 * limit, momentum) < 1e-3
    assert not _final_size(1.02 * limit, momentum) < 1e3            # grows without bound (or overflows)


def _quadratic(seed: int = 0):
    """Two parameter tensors (two "param groups" with their own lr) of f = x^T A x / 2, A symmetric with
    a known spectrum; returns (params, A, gradient function, the exact eigenvalues of P^1/2 A P^1/2)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = q @ np.diag([9.0, 4.0, 2.0, 1.0, 0.5, -0.3]) @ q.T
    lrs = np.array([0.1] * 4 + [0.02] * 2)
    exact = np.linalg.eigvalsh(np.sqrt(lrs)[:, None] * a * np.sqrt(lrs)[None, :])
    params = [torch.tensor(rng.normal(size=4)), torch.tensor(rng.normal(size=2))]
    for p in params:
        p.requires_grad_(True)
    a_t = torch.tensor(a)

    def gradient():
        x = torch.cat(params)
        return list(torch.autograd.grad(0.5 * x @ a_t @ x, params))

    return params, a_t, gradient, exact, [math.sqrt(0.1), math.sqrt(0.02)]


def test_power_iteration_finds_the_dominant_eigenvalue_of_the_lr_scaled_hessian():
    _, a, _, exact, scale = _quadratic()

    def exact_hvp(u):
        hu = a @ torch.cat(u)
        return [hu[:4], hu[4:]]

    value, v = dv.dominant_eigenvalue(exact_hvp, scale, [torch.ones(4, dtype=torch.float64),
                                                          torch.ones(2, dtype=torch.float64)], 200)
    assert value == pytest.approx(exact.max(), rel=1e-6)
    assert math.sqrt(sum(float((x * x).sum()) for x in v)) == pytest.approx(1.0)


def test_finite_difference_hvp_matches_the_exact_product_and_puts_the_parameters_back():
    params, a, gradient, _, _ = _quadratic(1)
    before = [p.detach().clone() for p in params]
    u = [torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64)]
    hu = torch.cat(dv.finite_difference_hvp(gradient, params, gradient(), u))
    assert torch.allclose(hu, a @ torch.cat(u), rtol=1e-6, atol=1e-8)   # exact for a quadratic, up to rounding
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))


def test_finite_difference_hvp_puts_the_parameters_back_when_the_gradient_fails():
    params, _, _, _, _ = _quadratic(2)
    before = [p.detach().clone() for p in params]

    def failing():
        raise RuntimeError("planted")

    with pytest.raises(RuntimeError, match="planted"):
        dv.finite_difference_hvp(failing, params, [torch.zeros(4), torch.zeros(2)],
                                 [torch.ones(4, dtype=torch.float64), torch.ones(2, dtype=torch.float64)])
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))
