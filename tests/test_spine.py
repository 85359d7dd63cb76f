"""The pieces the layers are built from, each on its own: the per-dimension spec (``_family``),
parameter storage (``_storage``), the eval cache (``_cache``), the extent diagnostics
(``_extent``), the memory-layout probe (``_layout``), the guarded private-API helpers
(``_compat``), the plain gradient functions, explicit op registration and the lazy imports."""
from __future__ import annotations

import inspect
import math
import os
import pathlib
import subprocess
import sys
import threading
import types

import pytest
import torch
import torch.nn as nn

import gaborlayer
from gaborlayer import _autograd, _compat, _storage
from gaborlayer._cache import BankCache, cacheable
from gaborlayer._extent import extent_report
from gaborlayer._family import FAMILIES, GABOR_2D
from gaborlayer._layout import requested_memory_format

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {1: gaborlayer.GaborConv1d, 2: gaborlayer.GaborConv2d, 3: gaborlayer.GaborConv3d}


# -- the per-dimension spec ------------------------------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_family_agrees_with_its_layer_function_and_formula(dims):
    family = FAMILIES[dims]
    layer = LAYERS[dims]
    assert layer._family is family
    assert set(family.names) <= set(inspect.signature(layer).parameters)  # the constructor's names
    assert family.names[-1] == "psi" and "sigma" in family.names and "lambd" in family.names
    assert family.conv_class.__name__ == f"Conv{dims}d" and family.conv.__name__ == f"conv{dims}d"
    functional = getattr(gaborlayer, f"gabor_kernel{dims}d")
    assert tuple(inspect.signature(functional).parameters)[:len(family.names)] == family.names
    size = (5, 4, 3)[:dims]
    classic = family.classic(6, 2, size, dtype=torch.float64)
    assert tuple(classic) == family.names and all(v.shape == (6, 2) for v in classic.values())
    params = [v.reshape(-1) for v in classic.values()]
    torch.testing.assert_close(family.function.apply(*params, *size), family.reference(*params, *size))
    halves = family.half_extents({k: v for k, v in classic.items()}, 3.0)
    assert len(halves) == dims and all(h.shape == (6, 2) for h in halves)
    assert family.triton == (dims == 2) and (family.fit_slices is None) == (dims == 3)


def test_no_module_outside_the_spec_branches_on_the_dimension():
    for path in (ROOT / "gaborlayer").glob("*.py"):
        if path.name == "_family.py":
            continue
        text = path.read_text()
        for pattern in ("dims == 1", "dims == 3", "dims != 2", "_dims == 2"):
            assert pattern not in text, f"{path.name} branches on the dimension: {pattern!r}"


# -- plain gradient functions ----------------------------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gradient_functions_are_the_functions_backward(dims, monkeypatch):
    # The 2-D Function's own path (not the eager CPU moment path: tests/test_speed_paths.py)
    monkeypatch.setattr(_autograd, "moments_pay", lambda params: False)
    family = FAMILIES[dims]
    backward = getattr(_autograd, f"gabor_kernel{dims}d_backward")
    gen = torch.Generator().manual_seed(dims)
    params = [(0.5 + 2 * torch.rand(4, generator=gen, dtype=torch.float64)).requires_grad_() for _ in family.names]
    size = (5, 6, 3)[:dims]
    bank = family.function.apply(*params, *size)
    grad = torch.randn(bank.shape, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad(bank, params, grad)
    need = [i % 2 == 0 for i in range(len(params))]
    got = backward(grad, [p.detach() for p in params], size, need)
    for g, e, n in zip(got, expected, need):
        if n:
            torch.testing.assert_close(g, e, rtol=0, atol=0)
        else:
            assert g is None


def test_ops_backward_takes_no_fake_ctx():
    source = (ROOT / "gaborlayer" / "_ops.py").read_text()
    assert "SimpleNamespace" not in source and "GaborKernel2d.backward" not in source


# -- storage ---------------------------------------------------------------------------------
def test_storage_round_trip_and_registration():
    values = {"theta": torch.tensor([[-7.0, 0.3]]), "sigma": torch.tensor([[1e-3, 40.0]]),
              "lambd": torch.tensor([[2.001, 9.0]]), "psi": torch.tensor([[3.0, -1.0]])}
    module = nn.Module()
    _storage.register(module, tuple(values), ("theta", "lambd"), (1, 2), dtype=torch.float64)
    assert {n for n, _ in module.named_parameters()} == {"theta", "log_lambd_excess"}
    assert {n for n, _ in module.named_buffers()} == {"log_sigma", "psi"}
    _storage.assign(module, {k: v.double() for k, v in values.items()})
    for name, value in values.items():
        torch.testing.assert_close(_storage.constrained(module, name), value.double(), rtol=1e-12, atol=0)
    with torch.no_grad():
        module.log_sigma.fill_(1e4)  # far beyond LOG_LIMIT: bounded, not inf
    assert torch.isfinite(_storage.constrained(module, "sigma")).all()


# -- the eval cache --------------------------------------------------------------------------
def test_bank_cache_keys_on_version_and_survives_concurrent_clears():
    cache, builds = BankCache(), []
    t = torch.zeros(3)

    def build():
        builds.append(1)
        return t * 2

    first = cache.get([t], ("cfg",), build)
    assert cache.get([t], ("cfg",), build) is first and len(builds) == 1
    t.add_(1.0)
    torch.testing.assert_close(cache.get([t], ("cfg",), build), torch.full((3,), 2.0))
    assert len(builds) == 2 and cache.get([t], ("other",), build) is not None and len(builds) == 3
    errors, stop = [], threading.Event()

    def clear_often():
        while not stop.is_set():
            cache.clear()

    thread = threading.Thread(target=clear_often)
    thread.start()
    try:
        for _ in range(20000):
            try:
                cache.get([t], ("cfg",), build)
            except Exception as exc:  # noqa: BLE001 - any error at all is the failure
                errors.append(exc)
                break
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_cacheable():
    plain = torch.zeros(2)
    learnable = torch.zeros(2, requires_grad=True)
    assert cacheable(False, [plain]) and not cacheable(True, [plain])
    assert not cacheable(False, [learnable])
    with torch.no_grad():
        assert cacheable(False, [learnable])
    with torch.inference_mode():
        inference = torch.zeros(2)
    assert not cacheable(False, [inference])


# -- extent diagnostics ----------------------------------------------------------------------
def test_extent_report_and_non_finite_parameters():
    values = {"theta": torch.tensor([[0.0, 0.0]], dtype=torch.float64),
              "sigma": torch.tensor([[1.0, 3.0]], dtype=torch.float64),
              "lambd": torch.tensor([[5.0, 2.1]], dtype=torch.float64),
              "gamma": torch.tensor([[1.0, 1.0]], dtype=torch.float64)}
    report = extent_report(GABOR_2D, values, (7, 7))
    assert report["cut"].tolist() == [[False, True]] and report["near_nyquist"].tolist() == [[False, True]]
    assert report["suggested_kernel_size"] == (19, 19)
    values["sigma"][0, 1] = math.nan  # no extent: skipped, and named as non-finite
    report = extent_report(GABOR_2D, values, (7, 7))
    assert report["cut"].tolist() == [[False, False]] and report["non_finite"].tolist() == [[False, True]]
    assert report["suggested_kernel_size"] == (7, 7)
    values["sigma"][0, 0] = math.inf
    assert extent_report(GABOR_2D, values, (7, 7))["suggested_kernel_size"] is None


def test_mode_switches_with_a_nan_parameter():
    # nn.Conv2d switches modes with NaN weights; so does a Gabor layer (the extent check used to
    # raise "cannot convert float NaN to integer" and leave the model half switched).
    model = nn.Sequential(gaborlayer.GaborConv2d(1, 2, 5), nn.ReLU())
    with torch.no_grad():
        model[0].log_sigma.fill_(math.nan)
    with pytest.warns(gaborlayer.GaborTruncationWarning):
        model.eval()
    assert not model[0].training
    model.train()
    assert model[0].training
    model.load_state_dict(model.state_dict())


# -- memory layout ---------------------------------------------------------------------------
def test_requested_memory_format():
    like = torch.zeros(1)
    last = torch.channels_last

    def to_last(t):
        return t.contiguous(memory_format=last)

    def fails(t):
        raise RuntimeError("only parameters")

    assert requested_memory_format(to_last, like, last, 2, None) is last
    assert requested_memory_format(lambda t: t.contiguous(), like, last, 2, last) is None
    assert requested_memory_format(lambda t: t.double(), like, last, 2, last) is last  # keeps the layout
    assert requested_memory_format(fails, like, last, 2, last) is last


# -- private torch APIs behind one helper ----------------------------------------------------
def test_private_torch_apis_only_in_compat():
    for path in (ROOT / "gaborlayer").rglob("*.py"):
        if path.name != "_compat.py":
            text = path.read_text()
            assert "torch._C" not in text and "._version" not in text, path.name


def test_compat_degrades_safely_when_the_apis_move(monkeypatch):
    t = torch.ones(2)
    assert not _compat.functorch_active() and _compat.version_counter(t) == 0
    seen = []
    torch.func.vmap(lambda v: seen.append(_compat.functorch_active()) or v)(torch.ones(2, 2))
    assert seen == [True]
    monkeypatch.setattr(_compat, "_C", types.SimpleNamespace())  # the private APIs moved
    assert _compat.functorch_active()  # unknown: the path that is correct under a transform
    assert _compat.unwrap_functorch(t) is t
    m = gaborlayer.GaborConv2d(1, 2, 3).eval()
    with torch.no_grad():  # the cache is off, the layer still works
        first = m(torch.ones(1, 1, 5, 5))
        torch.testing.assert_close(m(torch.ones(1, 1, 5, 5)), first)
        assert m._cache._entry is None


# -- imports and op registration -------------------------------------------------------------
def _run(code: str, **env) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_loads_no_scipy_matplotlib_or_triton():
    out = _run("import sys, gaborlayer; "
               "print(sorted(m for m in ('scipy', 'matplotlib', 'triton', 'gaborlayer.fit._unused') "
               "if m in sys.modules))")
    assert out == "[]"


def test_querying_triton_registers_nothing_and_resolving_registers_the_op():
    out = _run("import sys, torch, gaborlayer._triton as t; from gaborlayer.functional import resolve_backend; "
               "r = t.unavailable_reason('cpu'); a = 'gaborlayer._ops' in sys.modules; "
               "b = resolve_backend('triton', torch.device('cpu')); "
               "print(repr(r), a, b, 'gaborlayer._ops' in sys.modules, hasattr(torch.ops.gaborlayer, 'gabor_bank'))",
               TRITON_INTERPRET="1")
    assert out == "'' False triton True True"


def test_default_fusers_degrade_when_the_table_moved(monkeypatch):
    from torch.ao.quantization import fuser_method_mappings

    assert _compat.register_default_fusers({})
    monkeypatch.delattr(fuser_method_mappings, "_DEFAULT_OP_LIST_TO_FUSER_METHOD")
    assert not _compat.register_default_fusers({(int, int): None})
