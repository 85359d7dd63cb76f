"""Float32 accuracy at a large phase offset ``psi``.

``psi`` enters the phase ``2 pi x'/lambd + psi``. In float32 a large ``psi`` leaves that sum only a
few correct bits (one float32 ulp at 1e8 is 8 radians), so every backend reduces ``psi`` modulo
``2 pi`` in float64 first (``gaborlayer._reference.reduced_phase_offset``; docs/math.md, "Phase
reduction"). Here the float32 banks and gradients at ``psi`` in {1e3, 1e6, 1e8, -1e8} (and at large
``theta``, which ``cos``/``sin`` already reduce exactly) are compared with the float64 ones at the
same (float32) parameter values, rounded to float32. Before the reduction the float32 bank was off
by 3e-5 at ``psi = 1e3``, 3e-2 at 1e6 and 1.7 at 1e8.
"""
from __future__ import annotations

import math
from decimal import Decimal, getcontext

import pytest
import torch

from gaborlayer import gabor_kernel1d, gabor_kernel2d, gabor_kernel3d
from gaborlayer._reference import reduced_phase_offset

PSI = [1e3, 1e6, 1e8, -1e8]
THETA = [0.3, -2.0, 1e3, 1e6]
N = 16
# The float32 bank carries the rounding of the phase 2 pi x'/lambd (|phase| up to ~8 rad with the
# sizes and wavelengths below, one float32 ulp there is 1e-6) and of the envelope: the largest
# error over these cases at a small psi is 7e-7. A few float32 ulps of |K| <= 1.
ATOL = 1.5e-6
BUILDS = {
    "1d": (gabor_kernel1d, ("sigma", "lambd", "psi"), 15),
    "2d": (gabor_kernel2d, ("theta", "sigma", "lambd", "gamma", "psi"), (9, 8)),
    "3d": (gabor_kernel3d, ("theta", "phi", "sigma", "lambd", "gamma", "psi"), (5, 4, 5)),
}


def parameters(names, psi: float, theta: float) -> list[torch.Tensor]:
    """``N`` float32 filters: random shapes, the given ``psi`` and ``theta`` (plus a little spread)."""
    gen = torch.Generator().manual_seed(len(names))
    ranges = {"phi": (-1.5, 1.5), "sigma": (1.0, 4.0), "lambd": (4.0, 12.0), "gamma": (0.3, 2.0)}
    values = []
    for name in names:
        if name in ("psi", "theta"):
            centre = psi if name == "psi" else theta
            # Spread by whole float32 steps of the value (at least 0.37 rad), so the filters differ.
            step = max(0.37, math.ulp(float(torch.tensor(centre, dtype=torch.float32))))
            values.append(centre + step * torch.arange(N, dtype=torch.float64))
        else:
            lo, hi = ranges[name]
            values.append(lo + (hi - lo) * torch.rand(N, dtype=torch.float64, generator=gen))
    return [v.float() for v in values]


# The 1-D bank has no theta: one case per psi.
CASES = [(psi, theta, dims) for psi in PSI for dims in BUILDS for theta in (THETA if dims != "1d" else THETA[:1])]


def ulp32(x: float) -> float:
    """One float32 ulp at ``x`` (normal range)."""
    return 2.0 ** (math.frexp(abs(x))[1] - 24)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("psi, theta, dims", CASES, ids=[f"psi={p:g}-theta={t:g}-{d}" for p, t, d in CASES])
def test_float32_bank_is_the_float64_bank_rounded(psi, theta, dims, backend):
    build, names, size = BUILDS[dims]
    p32 = parameters(names, psi, theta)
    bank32 = build(*p32, size, backend=backend)
    bank64 = build(*(p.double() for p in p32), size, backend=backend)  # the same parameter values
    assert bank32.dtype == torch.float32
    err = float((bank32 - bank64.float()).abs().max())
    assert err <= ATOL, f"max |float32 - float64| = {err:.3g} at psi={psi:g}, theta={theta:g}"


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dims", list(BUILDS))
@pytest.mark.parametrize("psi", PSI, ids=lambda p: f"psi={p:g}")
def test_float32_gradients_at_large_psi_are_the_float64_ones(psi, dims, backend):
    build, names, size = BUILDS[dims]
    p32 = [p.requires_grad_() for p in parameters(names, psi, THETA[0])]
    p64 = [p.detach().double().requires_grad_() for p in p32]
    weight = torch.randn(build(*p64, size).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g32 = torch.autograd.grad((build(*p32, size, backend=backend) * weight.float()).sum(), p32)
    g64 = torch.autograd.grad((build(*p64, size, backend=backend) * weight).sum(), p64)
    # Sums over the taps, per filter relative to sum |w|: at most 7e-8 over these cases (as at a
    # small psi); before the reduction 2e-6 at psi = 1e3, 4e-3 at 1e6 and 0.3 at 1e8.
    scale = weight.abs().flatten(1).sum(1)
    for name, a, b in zip(names, g32, g64):
        per_filter = float(((a.double() - b).abs() / scale).max())
        assert per_filter <= 3e-7, f"d/d{name}: {per_filter:.3g} of sum |w|"


def test_float32_bank_at_huge_psi_is_cos_of_the_exact_remainder():
    """At the centre tap (x' = 0) the bank is cos(psi): checked against psi mod 2 pi in 50 digits."""
    getcontext().prec = 60
    two_pi = 2 * Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
    for psi in (1e3, 1e6, 1e8, -1e8, 12345678.0, 3e9, -1e12, 1e15):
        p = torch.tensor([psi], dtype=torch.float32)
        exact = float(Decimal(float(p)) % two_pi)  # Decimal's % keeps the sign of the dividend, as fmod
        centre = gabor_kernel2d(p.new_tensor([0.3]), 1.0, 4.0, 1.0, p, 1)[0, 0, 0]
        assert abs(float(centre) - math.cos(exact)) <= 2 * 2**-24, psi
        # The remainder itself: one float32 rounding of the exact value.
        assert abs(float(reduced_phase_offset(p)) - exact) <= ulp32(exact) / 2, psi
        # In float64, to a few float64 roundings (fmod by 2 pi alone would be off by 4e-9 at 1e8).
        assert abs(float(reduced_phase_offset(p.double())) - exact) <= 4 * math.ulp(2 * math.pi), psi


def test_the_reduction_keeps_small_psi_and_has_derivative_one():
    small = torch.tensor([0.0, -0.0, 1e-30, 3.0, -3.0, math.pi, -math.pi, 6.28, -6.28], dtype=torch.float32)
    assert torch.equal(reduced_phase_offset(small), small)  # bit for bit inside (-2 pi, 2 pi)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        psi = torch.tensor([0.5, 7.0, -1e3, 1e4], dtype=dtype, requires_grad=True)
        reduced = reduced_phase_offset(psi)
        assert reduced.dtype == dtype and bool((reduced.abs() < 2 * math.pi + 0.01).all())
        (grad,) = torch.autograd.grad(reduced.sum(), psi, create_graph=True)
        assert torch.equal(grad, torch.ones_like(psi))
    _, tangent = torch.func.jvp(reduced_phase_offset, (torch.tensor([1e8]),), (torch.tensor([2.5]),))
    assert float(tangent) == 2.5
