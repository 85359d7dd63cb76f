"""GaborConv2d: a drop-in nn.Conv2d whose weight is a Gabor bank.

What a user of nn.Conv2d expects (same arguments, same output, same dtype/device/serialisation
behaviour), what the Gabor parameterisation promises (constraints without clamping, gradients to
every learnable parameter, exact against numerical derivatives) and the eval-mode bank cache
(built once, never stale).
"""
from __future__ import annotations

import copy
import doctest
import math
import pickle

import pytest
import torch
import torch.nn as nn
from conftest import EXTREME_RANGES, RANGES, angles, conv_twin, float_dtypes, kernel_sizes, log_uniform, scaled
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import gaborlayer._weight as _weight
import gaborlayer.modules as modules
from gaborlayer import GaborConv1d, GaborConv2d, gabor_conv2d, gabor_kernel2d

# torch's performance hint for padding="same" with an even kernel; nn.Conv2d gives it too.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
RAW_NAMES = ("theta", "log_sigma", "log_lambd_excess", "log_gamma", "psi")
NAMES = ("theta", "sigma", "lambd", "gamma", "psi")
X = torch.randn(2, 2, 9, 9, generator=torch.Generator().manual_seed(1))


def exact(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def fresh_copy(m: GaborConv2d, dtype=None) -> GaborConv2d:
    """A newly constructed module (never cached anything) holding m's current state."""
    dtype = dtype or m.theta.dtype
    twin = GaborConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                       m.bias is not None, m.padding_mode, dtype=dtype, zero_mean=m.zero_mean, backend=m.backend)
    twin.load_state_dict({k: v.to(dtype) for k, v in m.state_dict().items()})
    return twin


# -- generated convolution configurations ---------------------------------------------------
def int_or_pair(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def as_pair(v):
    return v if isinstance(v, tuple) else (v, v)


@st.composite
def conv_configs(draw, max_per_group=3, max_groups=3, max_kernel=5, max_extra=3):
    """(constructor kwargs, input shape) covering every nn.Conv2d argument."""
    groups = draw(st.integers(1, max_groups))
    kernel = draw(int_or_pair(1, max_kernel))
    dilation = draw(int_or_pair(1, 2))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), int_or_pair(0, 2)))
    stride = 1 if padding == "same" else draw(int_or_pair(1, 3))
    kwargs = dict(in_channels=groups * draw(st.integers(1, max_per_group)),
                  out_channels=groups * draw(st.integers(1, max_per_group)),
                  kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                  bias=draw(st.booleans()), padding_mode=draw(st.sampled_from(PADDING_MODES)))
    pad = (0, 0) if isinstance(padding, str) else as_pair(padding)
    # Big enough for the dilated kernel, and for reflect padding (pad < size).
    size = [max(d * (k - 1) + 1, p + 1) + draw(st.integers(0, max_extra))
            for k, d, p in zip(as_pair(kernel), as_pair(dilation), pad)]
    batch = draw(st.sampled_from([(), (1,), (2,)]))  # () is an unbatched (C, H, W) input
    return kwargs, (*batch, kwargs["in_channels"], *size)


@st.composite
def init_values(draw, shape, ranges=None):
    """One value per filter for each of the five parameters, in the conftest ranges (lambd > 2)."""
    ranges = {**RANGES, "lambd": (2.05, 24.0), **(ranges or {})}
    n = shape[0] * shape[1]
    return {name: torch.tensor(draw(st.lists(st.floats(*ranges[name]), min_size=n, max_size=n)),
                               dtype=torch.float64).reshape(shape)
            for name in NAMES}


# -- nn.Conv2d equivalence -------------------------------------------------------------------
@settings(max_examples=scaled(500))
@given(config=conv_configs(), dtype=st.sampled_from([torch.float32, torch.float64]),
       zero_mean=st.booleans(), learn=st.sampled_from(["all", "none", ("theta", "psi")]), seed=st.integers(0, 99))
def test_output_equals_nn_conv2d(config, dtype, zero_mean, learn, seed):
    kwargs, input_shape = config
    torch.manual_seed(seed)
    m = GaborConv2d(**kwargs, dtype=dtype, zero_mean=zero_mean, learn=learn)
    ref = conv_twin(m)
    x = torch.randn(input_shape, dtype=dtype)
    expected = ref(x)
    exact(m(x), expected)
    exact(m.to_conv2d()(x), expected)
    m.eval()
    with torch.no_grad():
        exact(m(x), expected)  # built into the cache
        exact(m(x), expected)  # read from it


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("padding", ["same", "valid", 2, (0, 3)])
@pytest.mark.parametrize("kernel_size, dilation", [(4, 1), ((2, 5), (3, 1)), ((3, 4), 2)])
def test_output_equals_nn_conv2d_grid(padding_mode, padding, kernel_size, dilation):
    """The edge cases spelled out: even kernels make 'same' padding asymmetric."""
    torch.manual_seed(0)
    m = GaborConv2d(2, 4, kernel_size, padding=padding, dilation=dilation, padding_mode=padding_mode, groups=2)
    ref = conv_twin(m)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(m, attr) == getattr(ref, attr), attr  # code that inspects conv layers
    assert tuple(m._reversed_padding_repeated_twice) == tuple(ref._reversed_padding_repeated_twice)
    x = torch.randn(1, 2, 11, 10)
    exact(m(x), ref(x))
    exact(m(x[0]), ref(x[0]))


def test_to_conv2d_is_a_plain_independent_conv2d():
    m = GaborConv2d(2, 4, (3, 5), padding="same", padding_mode="circular", dtype=torch.float64)
    conv = m.to_conv2d()
    assert type(conv) is nn.Conv2d
    assert (conv.kernel_size, conv.padding, conv.padding_mode, conv.weight.dtype) == \
           ((3, 5), "same", "circular", torch.float64)
    assert conv.weight.requires_grad and conv.weight.is_leaf  # a trainable conv of its own
    before = m.weight.detach().clone()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    exact(m.weight.detach(), before)


def test_module_equals_functional():
    torch.manual_seed(0)
    m = GaborConv2d(4, 6, 5, stride=2, padding=1, dilation=(1, 2), groups=2, zero_mean=True, dtype=torch.float64)
    x = torch.randn(2, 4, 13, 11, dtype=torch.float64)
    params = [getattr(m, n) for n in NAMES]
    torch.testing.assert_close(m.weight, gabor_kernel2d(*params, m.kernel_size, zero_mean=True))
    torch.testing.assert_close(m(x), gabor_conv2d(x, *params, m.kernel_size, m.bias, 2, 1, (1, 2), 2, zero_mean=True))


# -- parameters: shapes, constraints, initialisation ----------------------------------------
def test_parameter_shapes_and_weight():
    m = GaborConv2d(6, 4, (5, 3), groups=2)
    for name in NAMES:
        assert getattr(m, name).shape == (4, 3), name
    assert m.weight.shape == (4, 3, 5, 3)
    assert {n for n, _ in m.named_parameters()} == {*RAW_NAMES, "bias"}


@pytest.mark.parametrize("in_channels, out_channels, kernel_size", [(2, 1, 1), (1, 2, 1), (3, 4, 1), (1, 1, 1),
                                                                    (2, 1, 3), (3, 4, (1, 5)), (1, 3, (5, 1))])
def test_weight_has_the_strides_of_nn_conv2d(in_channels, out_channels, kernel_size):
    """Equal values are not enough: with odd strides on size-1 dims a 1 x 1 bank reads as
    channels_last, and F.conv2d then picks another kernel whose output differs in the last bit."""
    m = GaborConv2d(in_channels, out_channels, kernel_size)
    ref = nn.Conv2d(in_channels, out_channels, kernel_size)
    assert m.weight.stride() == ref.weight.stride()
    x = torch.randn(2, in_channels, 6, 6)
    exact(m(x), conv_twin(m)(x))


def test_classic_bank():
    """Orientations evenly over [0, pi), even and odd phases, a few scales with lambd tied to sigma."""
    m = GaborConv2d(3, 32, 9)
    theta, sigma, lambd, gamma, psi = (getattr(m, n).detach().double() for n in NAMES)
    for t in (theta, sigma, lambd, gamma, psi):
        assert (t == t[:, :1]).all()  # every input channel of a filter gets the same filter
    theta, sigma, lambd, gamma, psi = theta[:, 0], sigma[:, 0], lambd[:, 0], gamma[:, 0], psi[:, 0]
    torch.testing.assert_close(theta.unique(), torch.arange(8, dtype=torch.float64) * math.pi / 8)
    torch.testing.assert_close(psi.unique(), torch.tensor([-math.pi / 2, 0.0], dtype=torch.float64))
    assert len(lambd.unique()) == 2 and lambd.min() > 2 and lambd.max() <= 9 / 2 + 1e-5
    torch.testing.assert_close(sigma, torch.clamp(0.56 * lambd, max=9 / 6))  # one octave, 3 sigma inside
    assert (gamma == 1).all()
    assert not m.check_extent()["cut"].any()
    # Each (orientation, phase, scale) combination appears exactly once.
    assert len({(round(t.item(), 4), round(p.item(), 4), round(lam.item(), 4))
                for t, p, lam in zip(theta, psi, lambd)}) == 32
    # Math: even filters are symmetric under a half turn, odd ones antisymmetric.
    bank = m.weight.detach()[:, 0]
    even, odd = psi == 0, psi != 0
    torch.testing.assert_close(bank[even].flip(-2, -1), bank[even])
    torch.testing.assert_close(bank[odd].flip(-2, -1), -bank[odd])


def test_user_values_scalars_and_tensors():
    theta = torch.linspace(0, 1, 4)[:, None]  # (out, 1) broadcasts over in_channels
    m = GaborConv2d(2, 4, 5, theta=theta, sigma=1.5, lambd=2.5, gamma=torch.full((4, 2), 0.7), psi=-0.25,
                    dtype=torch.float64)
    torch.testing.assert_close(m.theta, theta.double().expand(4, 2))
    for name, value in (("sigma", 1.5), ("lambd", 2.5), ("gamma", 0.7), ("psi", -0.25)):
        torch.testing.assert_close(getattr(m, name).detach(), torch.full((4, 2), value, dtype=torch.float64))
    # Only the given parameters are taken from the user; the others come from the classic bank.
    m2 = GaborConv2d(2, 4, 5, sigma=3.0)
    exact(m2.theta.detach(), GaborConv2d(2, 4, 5).theta.detach())
    # A value just above the Nyquist floor is valid.
    assert (GaborConv2d(1, 1, 3, lambd=2.0000001, dtype=torch.float64).lambd > 2).all()


def test_reset_parameters_restores_initial_values():
    m = GaborConv2d(2, 3, 5, sigma=torch.tensor([[1.0], [2.0], [3.0]]))
    initial = copy.deepcopy(m.state_dict())
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    m.reset_parameters()
    for key in RAW_NAMES:
        exact(m.state_dict()[key], initial[key])
    bound = 1 / math.sqrt(2 * 5 * 5)  # bias as nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert m.bias.abs().max() <= bound


@settings(max_examples=scaled(100))
@given(raw=st.lists(st.floats(-30, 30), min_size=15, max_size=15))
def test_constraints_hold_for_any_raw_values(raw):
    m = GaborConv2d(1, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        for i, name in enumerate(RAW_NAMES):
            getattr(m, name).copy_(torch.tensor(raw[3 * i: 3 * i + 3]).view(3, 1))
    assert (m.sigma > 0).all() and (m.gamma > 0).all() and (m.lambd > 2).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("raw", [-1e4, -200.0, -88.0, 88.0, 200.0, 1e4])
def test_absurd_raw_values_never_give_nan(dtype, raw):
    """exp of a raw value beyond +-88 overflows float32; the bank must stay finite, and so must
    every gradient (the log-parameters are read through a clamp at +-80)."""
    for name in ("log_sigma", "log_lambd_excess", "log_gamma"):
        m = GaborConv2d(1, 2, 5, padding=2, dtype=dtype)
        with torch.no_grad():
            getattr(m, name).fill_(raw)
        y = m(torch.randn(1, 1, 8, 8, dtype=dtype))
        y.square().sum().backward()
        assert torch.isfinite(y).all(), name
        assert all(torch.isfinite(p.grad).all() for p in m.parameters()), name


def test_no_clamping_gradient_alive_at_the_nyquist_floor():
    """A clamp would zero the gradient at lambd = 2; the reparameterisation keeps it."""
    m = GaborConv2d(1, 1, 7, lambd=2.0 + 1e-3, dtype=torch.float64)
    m(torch.randn(1, 1, 9, 9, dtype=torch.float64)).square().sum().backward()
    assert m.log_lambd_excess.grad.abs().item() > 0


# -- gradients -------------------------------------------------------------------------------
@st.composite
def gradient_cases_strategy(draw):
    kwargs, input_shape = draw(conv_configs(max_per_group=2, max_groups=2, max_kernel=4, max_extra=2))
    shape = (kwargs["out_channels"], kwargs["in_channels"] // kwargs["groups"])
    values = draw(init_values(shape))
    values["amplitude"] = draw(st.one_of(st.none(), st.floats(-3.0, 3.0)))  # the optional sixth parameter
    return (kwargs, input_shape, values, draw(st.booleans()),
            draw(st.sampled_from(["auto", "torch", "reference"])), draw(st.booleans()))


def projected_forward(m, x, n_directions=3):
    """The module's output as a function of its raw parameters (and x), projected on a few fixed
    random directions: a wrong derivative of any parameter shows in every projection, and the
    check needs 3 backward passes instead of one per output element."""
    names = [n for n, _ in m.named_parameters()]
    y = m(x)
    directions = torch.randn(n_directions, y.numel(), dtype=y.dtype)

    def forward(x, *raw):
        return directions @ functional_call(m, dict(zip(names, raw)), (x,)).reshape(-1)

    raw = tuple(p.detach().clone().requires_grad_() for _, p in m.named_parameters())
    return forward, raw


@settings(max_examples=scaled(600))
@given(case=gradient_cases_strategy(), seed=st.integers(0, 99))
def test_gradcheck_raw_parameters(gradient_cases, case, seed):
    """Gradients of the stored parameters (log_sigma, ...) and the bias against finite differences,
    through the module's own forward, in training mode and in eval mode with grad enabled."""
    kwargs, input_shape, values, zero_mean, backend, training = case
    torch.manual_seed(seed)
    m = GaborConv2d(**kwargs, **values, zero_mean=zero_mean, backend=backend, dtype=torch.float64).train(training)
    x = torch.randn(input_shape, dtype=torch.float64)
    forward, raw = projected_forward(m, x)
    assert torch.autograd.gradcheck(lambda *raw: forward(x, *raw), raw)
    gradient_cases.add()


def test_gradcheck_input_and_gradgradcheck():
    torch.manual_seed(0)
    m = GaborConv2d(2, 2, 3, padding=1, padding_mode="reflect", zero_mean=True, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    forward, raw = projected_forward(m, x)
    assert torch.autograd.gradcheck(forward, (x, *raw))
    assert torch.autograd.gradgradcheck(lambda *raw: forward(x.detach(), *raw), raw)


def test_training_step_changes_every_learnable_parameter():
    """gabornet writes theta into .data in forward, so theta never learns; here it does."""
    torch.manual_seed(0)
    m = GaborConv2d(1, 4, 7, padding=3)
    x, target = torch.randn(2, 1, 16, 16), torch.randn(2, 4, 16, 16)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=1e-2)
    nn.functional.mse_loss(m(x), target).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for name, p in m.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


def test_constraints_survive_aggressive_training():
    """Adam at lr=1 moves every raw parameter by about 1 per step, far past where a clamp would bite."""
    torch.manual_seed(0)
    m = GaborConv2d(1, 4, 7, padding=3, lambd=2.5, sigma=1.4, gamma=0.5)
    opt = torch.optim.Adam(m.parameters(), lr=1.0)
    x = torch.randn(1, 1, 12, 12)
    for _ in range(20):
        opt.zero_grad()
        m(x).square().mean().backward()  # drives sigma towards 0 and some lambd towards the floor
        opt.step()
    assert (m.sigma > 0).all() and (m.gamma > 0).all() and (m.lambd > 2).all()
    assert (m.log_lambd_excess < -5).any()  # the floor was approached, and is still respected
    assert torch.isfinite(m(x)).all()


@settings(max_examples=scaled(300))
@given(size=kernel_sizes, zero_mean=st.booleans(), dtype=float_dtypes, data=st.data())
def test_never_nan_or_inf_for_valid_parameters(size, zero_mean, dtype, data):
    """Over the extreme valid range of the functional API (conftest), with lambd above Nyquist."""
    def column(strategy):
        return torch.tensor(data.draw(st.lists(strategy, min_size=3, max_size=3)), dtype=torch.float64).view(3, 1)

    values = {"theta": column(angles()), "psi": column(st.floats(-1e6, 1e6)),
              "sigma": column(log_uniform(*EXTREME_RANGES["sigma"])),
              "gamma": column(log_uniform(*EXTREME_RANGES["gamma"])),
              "lambd": 2 + column(log_uniform(1e-6, EXTREME_RANGES["lambd"][1]))}
    m = GaborConv2d(1, 3, size, padding="same", zero_mean=zero_mean, dtype=dtype, **values)
    y = m(torch.randn(1, 1, 10, 10, dtype=dtype))
    y.square().sum().backward()
    assert torch.isfinite(y).all()
    for name, p in m.named_parameters():
        assert torch.isfinite(p.grad).all(), name


# -- learn subsets ---------------------------------------------------------------------------
@pytest.mark.parametrize("learn, chosen", [("all", NAMES), ("none", ()), ("theta", ("theta",)),
                                           (("sigma", "lambd"), ("sigma", "lambd")),
                                           (["gamma", "psi", "theta"], ("gamma", "psi", "theta"))])
def test_learn_subset(learn, chosen):
    m = GaborConv2d(2, 3, 5, learn=learn)
    learned = {RAW_NAMES[NAMES.index(n)] for n in chosen}
    assert {n for n, _ in m.named_parameters()} == learned | {"bias"}
    assert {n for n, _ in m.named_buffers()} == set(RAW_NAMES) - learned
    assert set(m.state_dict()) == {*RAW_NAMES, "bias"}
    m(torch.randn(1, 2, 8, 8)).sum().backward()
    for name in RAW_NAMES:
        t = getattr(m, name)
        if name in learned:
            assert t.grad is not None and t.grad.abs().sum() > 0, name
        else:
            assert not t.requires_grad and t.grad is None, name
    # Modules that learn different subsets share one state_dict layout.
    other = GaborConv2d(2, 3, 5, learn="none", sigma=4.0)
    other.load_state_dict(m.state_dict())
    exact(other.weight, m.weight.detach())


# -- the eval-mode cache ---------------------------------------------------------------------
@pytest.fixture
def bank_builds(monkeypatch):
    """How many times the module built its bank: ``gaborlayer._weight.gabor_weight``, counted."""
    calls = []
    real = _weight.gabor_weight

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_weight, "gabor_weight", counting)
    return calls


def cached_module(**kwargs):
    torch.manual_seed(0)
    return GaborConv2d(2, 3, 5, padding=2, **kwargs).eval()


def test_eval_builds_the_bank_once(bank_builds):
    m = cached_module()
    with torch.no_grad():
        y1, w1 = m(X), m.weight
        y2, w2 = m(X), m.weight
    assert len(bank_builds) == 1
    assert w1 is not w2 and torch.equal(w1, w2)  # each read is a copy of the cached bank
    assert w1.grad_fn is None  # read under no_grad: no graph, though the parameters require grad
    exact(y2, y1)
    with torch.inference_mode():
        exact(m(X), y1)
    assert len(bank_builds) == 1
    with torch.no_grad():
        exact(m.train()(X), y1)  # the same result as training mode, which builds afresh


def test_eval_with_learn_none_caches_even_with_grad_enabled(bank_builds):
    m = cached_module(learn="none")
    x = X.clone().requires_grad_()
    m(x).sum().backward()
    m(x).sum().backward()
    assert len(bank_builds) == 1 and x.grad.abs().sum() > 0


def test_training_mode_never_caches(bank_builds):
    m = cached_module().train()
    with torch.no_grad():
        m(X)
        m(X)
    assert len(bank_builds) == 2


def test_eval_with_grad_enabled_still_gives_gradients(bank_builds):
    m = cached_module()
    with torch.no_grad():
        m(X)  # fills the cache, which must not serve a forward that needs the graph
    m(X).square().sum().backward()
    assert len(bank_builds) == 2
    eval_grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.train()(X).square().sum().backward()
    for name, p in m.named_parameters():
        assert eval_grads[name].abs().sum() > 0, name
        exact(eval_grads[name], p.grad)


def _load_state_dict(m):
    other = GaborConv2d(2, 3, 5, sigma=3.0, theta=0.3)
    m.load_state_dict(other.state_dict())


def _optimizer_step(m):
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    m(X).square().sum().backward()  # eval mode, grad enabled
    opt.step()


def _in_place_no_grad(m):
    with torch.no_grad():
        m.theta.add_(0.5)


def _data_replacement(m):
    m.log_sigma.data = m.log_sigma.data + 0.5


def _vector_to_parameters(m):
    vec = nn.utils.parameters_to_vector(m.parameters())
    nn.utils.vector_to_parameters(vec * 1.1, m.parameters())


def _assign_new_parameter(m):
    m.log_gamma = nn.Parameter(m.log_gamma.detach() + 0.5)


def _zero_mean_switched_on(m):
    m.zero_mean = True


def _train_eval_after_write_through_data(m):
    m.theta.data.add_(0.5)  # invisible to version counters: the documented escape hatch follows
    m.train().eval()


CHANGES = [_load_state_dict, _optimizer_step, _in_place_no_grad, _data_replacement,
           _vector_to_parameters, _assign_new_parameter, _zero_mean_switched_on,
           _train_eval_after_write_through_data]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_cache_is_rebuilt_after_every_kind_of_change(change):
    m = cached_module()
    with torch.no_grad():
        before = m(X)
    change(m)
    with torch.no_grad():
        after = m(X)
    assert not torch.equal(after, before)
    exact(after, fresh_copy(m)(X).detach())


def test_cache_is_rebuilt_after_a_change_of_buffer():
    m = cached_module(learn="none")
    with torch.no_grad():
        before = m(X)
        m.log_sigma.mul_(1.5)
        after = m(X)
    assert not torch.equal(after, before)
    exact(after, fresh_copy(m)(X).detach())


@pytest.mark.parametrize("convert", [lambda m: m.double(), lambda m: m.to(torch.float64),
                                     lambda m: m.to(dtype=torch.float64)], ids=["double", "to", "to_kw"])
def test_cache_follows_dtype_conversion(convert):
    m = cached_module()
    with torch.no_grad():
        m(X)
        convert(m)
        y = m(X.double())
    assert y.dtype == torch.float64 and m.weight.dtype == torch.float64
    exact(y, fresh_copy(m, torch.float64)(X.double()).detach())


def test_cache_is_rebuilt_after_reset_parameters():
    m = cached_module(bias=False)
    with torch.no_grad():
        initial = m(X)
        m.theta.add_(1.0)
        assert not torch.equal(m(X), initial)
    m.reset_parameters()
    with torch.no_grad():
        exact(m(X), initial)


def test_cache_never_stale_when_a_freed_address_is_reused():
    """With (32, 32) parameters the allocator hands a freed address straight back: a new tensor
    there has the data_ptr and version that the cache was keyed on. (No other allocation may
    come between the calls, so the outputs are checked afterwards.)"""
    m = GaborConv2d(32, 32, 3).eval()
    x = torch.randn(1, 32, 5, 5)
    shifts = [0.1 * i for i in range(6)]
    twin = fresh_copy(m)
    with torch.no_grad():
        called = []
        for s in shifts:
            # A fresh tensor per call, freed after it.
            log_sigma = torch.full((32, 32), s)
            called.append(functional_call(m, {"log_sigma": log_sigma}, (x,)))
            del log_sigma
        replaced = []
        for s in shifts:
            # Two replacements: the second may land where the storage the cache saw was freed.
            m.psi.data = torch.full((32, 32), s)
            m.psi.data = torch.full((32, 32), s + 0.05)
            replaced.append(m(x))
        for s, got in zip(shifts, called):
            twin.log_sigma.fill_(s)
            exact(got, twin(x))
        twin.load_state_dict(m.state_dict())
        for s, got in zip(shifts, replaced):
            twin.psi.fill_(s + 0.05)
            exact(got, twin(x))


def test_cache_under_inference_mode_serves_a_later_input_gradient():
    m = cached_module(learn="none")
    with torch.inference_mode():
        m(X)
    x = X.clone().requires_grad_()
    m(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_module_built_in_inference_mode():
    with torch.inference_mode():
        m = GaborConv2d(2, 3, 5).eval()
        assert m(X).shape == (2, 3, 5, 5)


def test_vmap_ensemble_in_eval_mode():
    """The torch.func model-ensemble recipe: stacked parameters, vmapped functional_call."""
    models = [GaborConv2d(2, 3, 5, theta=float(i)).eval() for i in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def run(p, b):
        return functional_call(base, (p, b), (X,))

    with torch.no_grad():
        out = torch.func.vmap(run)(params, buffers)
        for i, model in enumerate(models):
            torch.testing.assert_close(out[i], model(X))


# -- serialisation ---------------------------------------------------------------------------
def trained_module():
    torch.manual_seed(0)
    m = GaborConv2d(2, 4, (3, 5), padding="same", padding_mode="reflect", groups=2, zero_mean=True,
                    learn=("theta", "sigma", "psi"))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def test_state_dict_round_trip():
    m = trained_module()
    other = GaborConv2d(2, 4, (3, 5), padding="same", padding_mode="reflect", groups=2, zero_mean=True,
                        learn=("theta", "sigma", "psi"), theta=1.0)
    other.load_state_dict(m.state_dict())
    for key, value in m.state_dict().items():
        exact(other.state_dict()[key], value)
    exact(other(X), m(X))


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))], ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("cached", [False, True])
def test_deepcopy_and_pickle(clone, cached):
    m = trained_module()
    if cached:
        with torch.no_grad():
            m.eval()(X)
    twin = clone(m)
    assert repr(twin) == repr(m) and twin.training == m.training
    for key, value in m.state_dict().items():
        exact(twin.state_dict()[key], value)
    with torch.no_grad():
        exact(twin(X), m(X))
        twin.theta.add_(1.0)  # independent of the original
        assert not torch.equal(twin(X), m(X))


def test_pickle_leaves_the_cache_behind():
    m = trained_module().eval()
    size = len(pickle.dumps(m))
    with torch.no_grad():
        m(X)
    assert len(pickle.dumps(m)) == size


def test_deepcopy_with_init_tensor_that_has_history():
    theta = torch.zeros(4, 1, requires_grad=True) * 2  # not a leaf
    m = GaborConv2d(2, 4, 3, theta=theta)
    exact(copy.deepcopy(m).theta, m.theta)
    copy.deepcopy(m).reset_parameters()


# -- dtypes and devices ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_construction(dtype):
    m = GaborConv2d(2, 3, 5, dtype=dtype)
    assert all(t.dtype == dtype for t in m.state_dict().values())
    assert m.weight.dtype == dtype and m(X.to(dtype)).dtype == dtype


def test_default_dtype_is_respected():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert GaborConv2d(2, 3, 5).weight.dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_float32_and_float64_agree():
    m = GaborConv2d(2, 3, 5, padding=2)
    torch.testing.assert_close(m(X), fresh_copy(m, torch.float64)(X.double()).float(), rtol=1e-5, atol=1e-5)


def test_input_dtype_mismatch_fails_like_nn_conv2d():
    m = GaborConv2d(2, 3, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError) as ours:
        m(X)
    with pytest.raises(RuntimeError) as theirs:
        conv_twin(m)(X)
    assert str(ours.value) == str(theirs.value)


HALF_TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("how", ["convert", "construct"])
def test_half_precision_works_on_cpu(dtype, how):
    """Parameters in half precision; the bank is built in float32 and rounded, as a half Conv2d."""
    torch.manual_seed(0)
    m = GaborConv2d(2, 3, 5, padding=2).to(dtype) if how == "convert" else GaborConv2d(2, 3, 5, padding=2, dtype=dtype)
    assert all(t.dtype == dtype for t in m.state_dict().values())
    reference = fresh_copy(m, torch.float32)  # the same (rounded) parameters in float32
    exact(m.weight, reference.weight.to(dtype))
    y = m(X.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference(X.to(dtype).float()), rtol=0, atol=HALF_TOLERANCE[dtype])
    y.float().square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad.dtype == dtype and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_meta_device_then_to_empty_and_reset():
    """Deferred initialisation, as for nn.Conv2d: build on meta, materialise, reset."""
    m = GaborConv2d(2, 3, 5, device="meta", sigma=2.0)
    assert m.weight.device.type == "meta"
    m.to_empty(device="cpu")
    torch.manual_seed(0)
    m.reset_parameters()
    torch.manual_seed(0)
    expected = GaborConv2d(2, 3, 5, sigma=2.0)
    for key, value in expected.state_dict().items():
        exact(m.state_dict()[key], value)


# -- repr ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(stride=2, padding=1, bias=False),
    dict(padding="same", dilation=(2, 1), padding_mode="reflect"),
    dict(padding="valid", groups=2, padding_mode="circular"),
    dict(kernel_size=(3, 5), stride=(1, 2), padding=(0, 2)),
])
def test_extra_repr_reads_like_conv2d(kwargs):
    kwargs = {"kernel_size": 3, **kwargs}
    ours = GaborConv2d(4, 6, **kwargs).extra_repr()
    assert ours == nn.Conv2d(4, 6, **kwargs).extra_repr()


def test_extra_repr_names_the_gabor_options():
    m = GaborConv2d(4, 6, 3, learn=("theta",), zero_mean=True, backend="reference")
    assert repr(m) == ("GaborConv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), learn=('theta',), "
                       "zero_mean=True, backend='reference')")


# -- errors ----------------------------------------------------------------------------------
ERRORS = [
    (dict(in_channels=0), ValueError, r"in_channels must be a positive int, got 0"),
    (dict(out_channels=-2), ValueError, r"out_channels must be a positive int, got -2"),
    (dict(in_channels=2.0), TypeError, r"in_channels must be an int, got 2.0"),
    (dict(kernel_size=0), ValueError, r"kernel_size must be >= 1 in every dimension, got 0"),
    (dict(kernel_size=(3, -1)), ValueError, r"kernel_size must be >= 1 in every dimension, got \(3, -1\)"),
    (dict(kernel_size=(3,)), TypeError, r"kernel_size must be an int or a pair of ints, got \(3,\)"),
    (dict(stride=0), ValueError, r"stride must be >= 1 in every dimension, got 0"),
    (dict(dilation=(1, 0)), ValueError, r"dilation must be >= 1 in every dimension, got \(1, 0\)"),
    (dict(padding=-1), ValueError, r"padding must be >= 0 in every dimension, got -1"),
    (dict(padding="full"), ValueError, r"padding must be 'same', 'valid' or non-negative ints, got 'full'"),
    (dict(padding="same", stride=(1, 2)), ValueError, r"padding='same' needs stride=1, got stride=\(1, 2\)"),
    (dict(groups=0), ValueError, r"groups must be a positive int, got 0"),
    (dict(groups=4), ValueError, r"in_channels \(2\) and out_channels \(4\) must both be divisible by groups \(4\)"),
    (dict(in_channels=4, out_channels=3, groups=2), ValueError, r"out_channels \(3\) must both be divisible"),
    (dict(padding_mode="mirror"), ValueError, r"padding_mode must be one of \('zeros', .*\), got 'mirror'"),
    (dict(dtype=torch.int64), TypeError, r"dtype must be a floating-point dtype, got torch.int64"),
    (dict(sigma=0.0), ValueError, r"sigma must be > 0.0, got 0.0"),
    (dict(sigma=torch.tensor([[1.0], [2.0], [-1.0], [1.0]])), ValueError, r"sigma must be > 0.0, got -1.0"),
    (dict(gamma=-0.5), ValueError, r"gamma must be > 0.0, got -0.5"),
    (dict(lambd=2.0), ValueError, r"lambd must be > 2.0, got 2.0"),
    (dict(lambd=1.5), ValueError, r"lambd must be > 2.0, got 1.5"),
    (dict(theta=math.nan), ValueError, r"theta must be finite, got nan"),
    (dict(psi=torch.full((4, 2), math.inf)), ValueError, r"psi must be finite, got inf"),
    (dict(sigma=torch.ones(5, 3)), ValueError,
     r"sigma must be broadcastable to \(out_channels, in_channels // groups\) = \(4, 2\), got shape \(5, 3\)"),
    (dict(theta=torch.zeros(4, 2, dtype=torch.int64)), TypeError,
     r"theta must be a floating-point tensor, got dtype torch.int64"),
    (dict(gamma="1"), TypeError, r"gamma must be a float or a floating-point tensor, got str"),
    (dict(learn=("theta", "alpha")), ValueError, r"learn must name parameters among .* got \['alpha'\]"),
    (dict(learn=None), TypeError, r"learn must be 'all', 'none', a parameter name .* got None"),
    (dict(backend="cuda"), ValueError, r"backend must be one of \('auto', .*\), got 'cuda'"),
    (dict(amplitude=math.inf), ValueError, r"amplitude must be finite, got inf"),
    (dict(amplitude="big"), TypeError, r"amplitude must be a float or a floating-point tensor, got str"),
    (dict(learn=("amplitude",)), ValueError, r"learn must name parameters among \('theta', 'sigma', 'lambd', "
     r"'gamma', 'psi'\) .* got \['amplitude'\]"),
]


@pytest.mark.parametrize("kwargs, error, match", ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    kwargs = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        GaborConv2d(**kwargs)


def test_module_to_integer_dtype_is_refused():
    with pytest.raises(TypeError, match="floating point or complex"):
        GaborConv2d(2, 3, 5).to(torch.int32)


# -- docstring and torch.compile -------------------------------------------------------------
def test_docstring_example_runs():
    tests = doctest.DocTestFinder().find(GaborConv2d, globs=vars(modules).copy())
    assert sum(len(t.examples) for t in tests) >= 2
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside torch
@pytest.mark.parametrize("cls, kernel_size, input_shape",
                         [(GaborConv2d, 5, (1, 2, 8, 8)), (GaborConv1d, 9, (2, 2, 40))], ids=["2d", "1d"])
def test_torch_compile_fullgraph_matches_eager(cls, kernel_size, input_shape):
    torch.manual_seed(0)
    m = cls(2, 3, kernel_size, padding="same", padding_mode="reflect", zero_mean=True, dtype=torch.float64)
    x = torch.randn(input_shape, dtype=torch.float64)
    compiled = torch.compile(m, fullgraph=True)
    compiled(x).square().sum().backward()
    compiled_grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        torch.testing.assert_close(compiled_grads[name], p.grad, msg=name)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
