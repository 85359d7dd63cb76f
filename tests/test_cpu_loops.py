"""The compiled loops' own exponential, sine and cosine (``gaborlayer._cpu_loops``): polynomials
that LLVM vectorises, checked against the C library's (through NumPy's float64 ``exp``, ``sin`` and
``cos``) over generated numbers and at the edges of their ranges. The loops' banks and gradients
are checked in tests/test_cpu_kernels.py and the generated gradient suites."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import scaled
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")
from gaborlayer._cpu_loops import SINCOS_LIMIT, _exp, _sincos_into  # noqa: E402 (needs numba)


@numba.njit
def _exp_of(values, out):  # pragma: no cover - compiled
    for n in range(values.shape[0]):
        out[n] = _exp(values[n])


@numba.njit
def _sincos_of(angles, sin_out, cos_out):  # pragma: no cover - compiled
    _sincos_into(angles, sin_out, cos_out)


@settings(max_examples=scaled(200))
@given(st.lists(st.floats(-800.0, 720.0, allow_nan=False), min_size=1, max_size=300))
def test_the_loops_exp_is_the_c_librarys_to_two_ulps(values):
    """Relative error at most 2 ulp from -708 to 709 (against float64 ``exp`` via numpy); 0 below
    (no subnormals), inf above; NaN stays NaN, -inf gives 0. In and out of vectorised loop bodies."""
    e = np.array(values + [0.0, -0.0, -708.0, 709.0, -708.5, 709.5, -np.inf, np.inf, np.nan], dtype=np.float64)
    got = np.empty_like(e)
    _exp_of(e, got)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(e)
    normal = (e >= -708.0) & (e <= 709.0)
    assert (np.abs(got[normal] - want[normal]) <= 2 * np.spacing(want[normal])).all()
    assert (got[e < -708.0] == 0).all() and (got[e > 709.0] == np.inf).all() and np.isnan(got[-1])


@settings(max_examples=scaled(200))
@given(st.lists(st.floats(-2e5, 2e5, allow_nan=False), min_size=1, max_size=300))
def test_the_loops_sine_and_cosine_are_the_c_librarys_to_rounding(values):
    """Absolute error at most 2.5e-16 up to |x| = SINCOS_LIMIT (where the C library's own result
    carries about 1e-16); beyond it, and for NaN and inf, the C library's."""
    x = np.array(values + [0.0, np.pi / 4, np.pi / 2, np.pi, 1e5, -1e5, 3e5, np.nan, np.inf, -np.inf], dtype=np.float64)
    sin, cos = np.empty_like(x), np.empty_like(x)
    _sincos_of(x, sin, cos)
    with np.errstate(invalid="ignore"):
        want_sin, want_cos = np.sin(x), np.cos(x)
    near = np.abs(x) <= SINCOS_LIMIT
    assert np.abs(sin[near] - want_sin[near]).max() <= 2.5e-16 and np.abs(cos[near] - want_cos[near]).max() <= 2.5e-16
    np.testing.assert_array_equal(sin[~near], want_sin[~near])
    np.testing.assert_array_equal(cos[~near], want_cos[~near])
