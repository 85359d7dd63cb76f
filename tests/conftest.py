"""Shared test set-up: hypothesis profiles, generated Gabor parameters, and two guards.

Profiles: ``dev`` (default, fast) and ``ci`` (chosen when the ``CI`` environment variable is set,
or with ``HYPOTHESIS_PROFILE=ci``). Under ``ci`` the gradient tests generate well over 10,000
cases in total; the session prints how many gradient cases ran (``.ci/run`` checks the figure).
``ci`` is derandomized: each test draws the same cases on every machine until the test changes, so
a clean clone passes or fails as it did here. ``explore`` (``HYPOTHESIS_PROFILE=explore``) draws as
many fresh random cases, to look for new failures; a failure it finds is replayed with
``@example`` in the test.

Guards: under ``GABORLAYER_STRICT_SKIPS=1`` (set by ``make test``) a skipped test fails, unless
it is marked ``gpu`` (needs a CUDA device, which CI never has) -- so nothing, the Triton path
included, is skipped by accident.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=400, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def scaled(n: int) -> int:
    """``max_examples`` for a test: ``n`` under the ci and explore profiles, a tenth of it (at least
    10) under dev."""
    return max(10, n // 10) if PROFILE == "dev" else n


# -- generated parameters -----------------------------------------------------------------
def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


RANGES = {
    "theta": (-60.0, 60.0),  # far outside [0, 2 pi): the periodic wrap is part of the contract
    "sigma": (0.4, 8.0),
    "lambd": (1.0, 24.0),
    "gamma": (0.2, 3.0),
    "psi": (-20.0, 20.0),
}


@st.composite
def gabor_params(draw, n_max: int = 4, dtype=torch.float64, ranges=None):
    """Five tensors of shape ``(N,)`` with values in ``RANGES`` (or the given ranges)."""
    ranges = {**RANGES, **(ranges or {})}
    n = draw(st.integers(1, n_max))
    return tuple(torch.tensor(draw(st.lists(_floats(*ranges[k]), min_size=n, max_size=n)), dtype=dtype)
                 for k in ("theta", "sigma", "lambd", "gamma", "psi"))


kernel_sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))  # odd, even and rectangular
odd_kernel_sizes = st.tuples(st.integers(0, 6), st.integers(0, 6)).map(lambda t: (2 * t[0] + 1, 2 * t[1] + 1))
square_kernel_sizes = st.integers(1, 11)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


def log_uniform(lo: float, hi: float):
    """Positive floats spread evenly over the decades from ``lo`` to ``hi``, ends included."""
    return st.one_of(st.sampled_from([lo, hi]), _floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0 ** e))


def angles(huge: float = 1e30):
    """Angles in radians: moderate, huge (up to ``huge``), and exact multiples of pi/2 (fold edges)."""
    return st.one_of(_floats(-60.0, 60.0), _floats(-huge, huge),
                     st.integers(-64, 64).map(lambda k: k * math.pi / 2),
                     st.sampled_from([math.pi, -math.pi, 2 * math.pi, math.nextafter(math.pi, 0.0),
                                      math.nextafter(-math.pi, 0.0), -1e-30, 1e-30, 0.0, -0.0]))


# The valid range at its extremes: what the no-NaN/inf contract of gabor_kernel2d is tested over.
EXTREME_RANGES = {"sigma": (1e-30, 1e30), "lambd": (1e-3, 1e30), "gamma": (1e-30, 1e30)}


@st.composite
def extreme_params(draw):
    """One set of five python floats, each positive parameter log-uniform over its extreme range."""
    return (draw(angles()), *(draw(log_uniform(*EXTREME_RANGES[k])) for k in ("sigma", "lambd", "gamma")),
            draw(_floats(-1e6, 1e6)))


# -- one thread -------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every tensor in the suite is small: on a shared 2-core machine a second OpenMP thread only
    spins (a 50 us convolution took 50 ms), so the whole session runs on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- counting gradient cases ----------------------------------------------------------------
class _Counter:
    def __init__(self):
        self.total = 0

    def add(self, n: int = 1) -> None:
        self.total += n


_GRADIENT_CASES = _Counter()


@pytest.fixture(scope="session")
def gradient_cases() -> _Counter:
    """Call ``gradient_cases.add()`` once per generated case checked against numerical derivatives."""
    return _GRADIENT_CASES


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"gaborlayer: {_GRADIENT_CASES.total} gradient cases checked against numerical "
                                f"derivatives (hypothesis profile {PROFILE})")


# -- no accidental skips ---------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; may skip where there is none")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("GABORLAYER_STRICT_SKIPS") == "1"
    if strict and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped outside a GPU test under GABORLAYER_STRICT_SKIPS=1: {report.longrepr}"


PI = math.pi


# -- 1-D and 3-D parameters (tests/test_nd.py) ------------------------------------------------
NAMES_1D = ("sigma", "lambd", "psi")
NAMES_3D = ("theta", "phi", "sigma", "lambd", "gamma", "psi")
RANGES_ND = {**RANGES, "phi": (-60.0, 60.0)}


@st.composite
def nd_params(draw, names, n_max: int = 3, dtype=torch.float64, ranges=None):
    """One tensor ``(N,)`` per name in ``names``, values in ``RANGES_ND`` (or the given ranges)."""
    ranges = {**RANGES_ND, **(ranges or {})}
    n = draw(st.integers(1, n_max))
    return tuple(torch.tensor(draw(st.lists(_floats(*ranges[k]), min_size=n, max_size=n)), dtype=dtype)
                 for k in names)


def conv_twin(m):
    """The plain nn.Conv1d/2d/3d built from a Gabor layer's arguments, holding its bank and bias
    (built here, independently of the layer's own to_convNd)."""
    conv_class = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(m.kernel_size)]
    ref = conv_class(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                     m.bias is not None, m.padding_mode, dtype=m.weight.dtype)
    with torch.no_grad():
        ref.weight.copy_(m.weight)
        if m.bias is not None:
            ref.bias.copy_(m.bias)
    return ref
