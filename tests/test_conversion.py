"""Bringing GaborConv2d into an existing model: the optional amplitude, ``from_conv2d`` (and
``GaborConv1d.from_conv1d``) and ``replace_conv2d``.

``from_conv2d`` and ``from_conv1d`` are checked where the answer is known (conv weights that are scaled Gabor filters
come back exactly, with the same output) and where it is not (random weights: a valid module whose
bank is the fit, with an honest explained fraction in [0, 1]).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from gaborlayer import GaborConv1d, GaborConv2d, gabor_kernel1d, gabor_kernel2d, replace_conv2d
from gaborlayer.testing import sample_params


def gabor_conv(in_c, out_c, k, seed, groups=1, **kwargs) -> tuple[nn.Conv2d, torch.Tensor]:
    """An nn.Conv2d whose every slice is a Gabor filter times a random gain of random sign."""
    g = torch.Generator().manual_seed(seed)
    n = out_c * (in_c // groups)
    kh, kw = (k, k) if isinstance(k, int) else k
    truth = sample_params(n, max(kh, kw, 6), g)
    gain = (torch.rand(n, generator=g, dtype=torch.float64) + 0.05) * torch.where(
        torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    conv = nn.Conv2d(in_c, out_c, k, groups=groups, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        conv.weight.copy_((gain[:, None, None] * gabor_kernel2d(**truth, size=(kh, kw))).reshape(conv.weight.shape))
    return conv, gain


# -- the amplitude parameter -------------------------------------------------------------------
def test_amplitude_scales_each_filter():
    amp = torch.tensor([[0.5], [-2.0], [0.0]], dtype=torch.float64)
    plain = GaborConv2d(1, 3, 5, dtype=torch.float64)
    scaled = GaborConv2d(1, 3, 5, dtype=torch.float64, amplitude=amp)
    torch.testing.assert_close(scaled.weight, amp[..., None, None] * plain.weight, rtol=0, atol=0)
    assert "amplitude" in dict(scaled.named_parameters())
    assert "amplitude" not in dict(plain.named_parameters())
    assert GaborConv2d(1, 3, 5, amplitude=True).amplitude.eq(1).all()
    assert not GaborConv2d(1, 3, 5, amplitude=False).has_amplitude


def test_amplitude_learns_or_stays_a_buffer():
    m = GaborConv2d(2, 4, 3, amplitude=0.7)
    m(torch.randn(1, 2, 6, 6)).square().sum().backward()
    assert m.amplitude.grad is not None and m.amplitude.grad.abs().sum() > 0
    frozen = GaborConv2d(2, 4, 3, amplitude=0.7, learn=("theta",))
    assert "amplitude" in dict(frozen.named_buffers()) and "amplitude" in frozen.state_dict()
    assert frozen.learn == ("theta",)
    assert GaborConv2d(2, 4, 3, amplitude=0.7).learn[-1] == "amplitude"


def test_amplitude_in_repr_to_conv2d_and_state_dict():
    m = GaborConv2d(2, 4, 3, padding=1, amplitude=torch.linspace(-1, 1, 4)[:, None])
    assert repr(m) == "GaborConv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), amplitude=True)"
    x = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(m.to_conv2d()(x), m(x))
    twin = GaborConv2d(2, 4, 3, padding=1, amplitude=True)
    twin.load_state_dict(m.state_dict())
    torch.testing.assert_close(twin(x), m(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="amplitude"):
        GaborConv2d(2, 4, 3, padding=1).load_state_dict(m.state_dict())


def test_amplitude_in_half_precision():
    m = GaborConv2d(1, 2, 5, amplitude=torch.tensor([[3.0], [-0.5]]))
    half = GaborConv2d(1, 2, 5, amplitude=torch.tensor([[3.0], [-0.5]])).bfloat16()
    torch.testing.assert_close(half.weight.float(), m.weight, atol=2e-2, rtol=1e-2)


# -- from_conv2d -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, config", [
    (0, dict(in_c=1, out_c=4, k=7, padding=3)),
    (1, dict(in_c=3, out_c=2, k=5, stride=2, bias=False)),
    (2, dict(in_c=4, out_c=2, k=(5, 7), groups=2, padding="same", padding_mode="reflect", dilation=1)),
])
def test_from_conv2d_recovers_gabor_weights_exactly(seed, config):
    conv, gain = gabor_conv(config.pop("in_c"), config.pop("out_c"), config.pop("k"), seed, **config)
    gabor, fit = GaborConv2d.from_conv2d(conv, return_fit=True)
    assert fit.loss.max() < 1e-9
    torch.testing.assert_close(fit.amplitude, gain.abs(), rtol=1e-6, atol=1e-9)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(gabor, name) == getattr(conv, name), name
    assert (gabor.bias is None) == (conv.bias is None)
    assert gabor.theta.dtype == torch.float64
    torch.testing.assert_close(gabor.weight, conv.weight, rtol=0, atol=1e-6)
    x = torch.randn(2, conv.in_channels, 15, 17, dtype=torch.float64)
    torch.testing.assert_close(gabor(x), conv(x), rtol=0, atol=1e-5)


def test_from_conv2d_of_random_weights_is_the_fit():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 5)
    gabor, fit = GaborConv2d.from_conv2d(conv, return_fit=True, learn=("theta", "amplitude"))
    explained = 1 - fit.loss
    assert fit.loss.shape == (6,) and bool(((explained >= 0) & (explained <= 1)).all())
    assert explained.max() < 0.9  # random noise is not a Gabor filter; the report must say so
    bank = fit.kernel().reshape(conv.weight.shape).float()
    torch.testing.assert_close(gabor.weight, bank, rtol=0, atol=1e-6)
    # explained = 1 - ||A K - W||^2 / ||W||^2, recomputed from the weights
    residual = (bank - conv.weight).square().sum((-2, -1)) / conv.weight.square().sum((-2, -1))
    torch.testing.assert_close(1 - residual.reshape(-1).double(), explained, rtol=0, atol=1e-5)
    assert gabor.learn == ("theta", "amplitude") and gabor.theta.dtype == torch.float32
    torch.testing.assert_close(gabor.bias, conv.bias, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [1, 2])
def test_from_conv_zero_slices_and_no_amplitude(dims):
    make, convert = ((lambda: gabor_conv1d(2, 2, 11, seed=4)), GaborConv1d.from_conv1d) if dims == 1 else \
        ((lambda: gabor_conv(2, 2, 5, seed=3)), GaborConv2d.from_conv2d)
    conv, _ = make()
    unit = convert(conv, amplitude=False)  # no zero slice: fine without amplitude
    assert not unit.has_amplitude and "amplitude" not in unit.state_dict()
    with torch.no_grad():
        conv.weight[1, 0] = 0
    gabor, fit = convert(conv, return_fit=True)
    assert fit.amplitude[2] == 0 and fit.loss[2] == 0
    torch.testing.assert_close(gabor.weight, conv.weight, rtol=0, atol=1e-6)
    # one record per slice, in conv.weight's row-major order, the zero slice's included
    assert len(fit.history) == len(fit.starts) == 4
    assert fit.history[2]["origin"] == "zero" and fit.starts[2] == [fit.history[2]]
    for j in (0, 1, 3):
        assert fit.history[j]["origin"] != "zero"
        torch.testing.assert_close(fit.history[j]["loss"][-1], fit.loss[j], rtol=0, atol=1e-12)
    # without amplitude every filter peaks at 1: a zero slice cannot be kept, and is refused
    with pytest.raises(ValueError, match=r"conv.weight\[1, 0\] is all zeros .* use amplitude=True"):
        convert(conv, amplitude=False)


@pytest.mark.parametrize("conv, error, match", [
    (nn.Linear(3, 3), TypeError, r"conv must be an nn.Conv2d, got Linear"),
    (nn.Conv2d(1, 2, (3, 2)), ValueError, r"conv.kernel_size must be at least \(3, 3\) .* got \(3, 2\)"),
    (nn.LazyConv2d(4, 3), ValueError, r"conv is a lazy nn.Conv2d whose weight is not initialised"),
])
def test_from_conv2d_bad_input(conv, error, match):
    with pytest.raises(error, match=match):
        GaborConv2d.from_conv2d(conv)


def test_from_conv2d_non_finite_weights():
    conv = nn.Conv2d(1, 1, 3)
    with torch.no_grad():
        conv.weight[0, 0, 1, 1] = math.nan
    with pytest.raises(ValueError, match="conv.weight must be finite"):
        GaborConv2d.from_conv2d(conv)


# -- from_conv1d -------------------------------------------------------------------------------
def gabor_conv1d(in_c, out_c, k, seed, groups=1, **kwargs) -> tuple[nn.Conv1d, torch.Tensor]:
    """An nn.Conv1d whose every slice is a 1-D Gabor filter times a random gain of random sign."""
    g = torch.Generator().manual_seed(seed)
    n = out_c * (in_c // groups)
    truth = sample_params(n, max(k, 6), g)
    gain = (torch.rand(n, generator=g, dtype=torch.float64) + 0.05) * torch.where(
        torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    conv = nn.Conv1d(in_c, out_c, k, groups=groups, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        bank = gabor_kernel1d(truth["sigma"], truth["lambd"], truth["psi"], k)
        conv.weight.copy_((gain[:, None] * bank).reshape(conv.weight.shape))
    return conv, gain


@pytest.mark.parametrize("seed, config", [
    (0, dict(in_c=1, out_c=6, k=15, padding=7)),
    (1, dict(in_c=3, out_c=2, k=9, stride=2, bias=False)),
    (2, dict(in_c=4, out_c=2, k=12, groups=2, padding="same", padding_mode="circular", dilation=1)),
    (3, dict(in_c=2, out_c=3, k=5, dilation=2, padding_mode="reflect", padding=4)),
])
def test_from_conv1d_recovers_gabor_weights_exactly(seed, config):
    conv, gain = gabor_conv1d(config.pop("in_c"), config.pop("out_c"), config.pop("k"), seed, **config)
    gabor, fit = GaborConv1d.from_conv1d(conv, return_fit=True)
    assert fit.loss.max() < 1e-9
    torch.testing.assert_close(fit.amplitude, gain.abs(), rtol=1e-6, atol=1e-9)
    assert fit.size == (1, conv.kernel_size[0]) and bool((fit.theta == 0).all()) and bool((fit.gamma == 1).all())
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(gabor, name) == getattr(conv, name), name
    assert (gabor.bias is None) == (conv.bias is None)
    assert gabor.sigma.dtype == torch.float64
    torch.testing.assert_close(gabor.weight, conv.weight, rtol=0, atol=1e-6)
    x = torch.randn(2, conv.in_channels, 40, dtype=torch.float64)
    torch.testing.assert_close(gabor(x), conv(x), rtol=0, atol=1e-5)


def test_from_conv1d_of_random_weights_is_the_fit():
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 3, 9)
    gabor, fit = GaborConv1d.from_conv1d(conv, return_fit=True, learn=("psi", "amplitude"))
    explained = 1 - fit.loss
    assert fit.loss.shape == (6,) and bool(((explained >= 0) & (explained <= 1)).all())
    assert explained.max() < 0.95  # random noise is not a Gabor filter; the report must say so
    bank = (fit.amplitude[:, None] * gabor_kernel1d(fit.sigma, fit.lambd, fit.psi, 9)).reshape(conv.weight.shape)
    torch.testing.assert_close(gabor.weight, bank.float(), rtol=0, atol=1e-6)
    residual = (bank - conv.weight.double()).square().sum(-1) / conv.weight.double().square().sum(-1)
    torch.testing.assert_close(1 - residual.reshape(-1), explained, rtol=0, atol=1e-5)
    assert gabor.learn == ("psi", "amplitude") and gabor.sigma.dtype == torch.float32
    torch.testing.assert_close(gabor.bias, conv.bias, rtol=0, atol=0)


@pytest.mark.parametrize("conv, error, match", [
    (nn.Conv2d(1, 2, 3), TypeError, r"conv must be an nn.Conv1d, got Conv2d"),
    (nn.Conv1d(1, 2, 2), ValueError, r"conv.kernel_size must be at least \(3,\) .* got \(2,\)"),
    (nn.LazyConv1d(4, 3), ValueError, r"conv is a lazy nn.Conv1d whose weight is not initialised"),
])
def test_from_conv1d_bad_input(conv, error, match):
    with pytest.raises(error, match=match):
        GaborConv1d.from_conv1d(conv)


# -- replace_conv2d ----------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 5, padding=2, dtype=torch.float64)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, dtype=torch.float64), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_replace_by_name_keeps_the_output_of_gabor_weights():
    net = Net()
    net.stem = gabor_conv(1, 4, 5, seed=4, padding=2)[0]
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    before = net(x)
    swapped = replace_conv2d(net, "stem", fit=True)
    assert list(swapped) == ["stem"] and net.stem is swapped["stem"] and isinstance(net.stem, GaborConv2d)
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-5)
    assert isinstance(net.body[1], nn.Conv2d) and isinstance(net.head, nn.Conv2d)


def test_replace_by_list_and_predicate_fresh_bank():
    net = Net().eval()
    swapped = replace_conv2d(net, ["stem", "body.1"], fit=False, learn=("theta",))
    assert isinstance(net.body[1], GaborConv2d) and net.body[1].learn == ("theta",)
    assert not net.body[1].training  # the swapped layer keeps the old one's mode
    assert net.stem.padding == (2, 2) and net.stem.theta.dtype == torch.float64
    assert set(swapped) == {"stem", "body.1"}
    net = Net()
    swapped = replace_conv2d(net, lambda name, conv: conv.kernel_size[0] >= 3, fit=False)
    assert set(swapped) == {"stem", "body.1"} and isinstance(net.head, nn.Conv2d)
    net(torch.randn(1, 1, 8, 8, dtype=torch.float64)).sum().backward()
    assert net.stem.theta.grad is not None


@pytest.mark.parametrize("which, error, match", [
    ("tail", ValueError, r"which names \['tail'\], which are not nn.Conv2d layers .* \['stem', 'body.1', 'head'\]"),
    ("body", ValueError, r"which names \['body'\]"),
    (lambda name, conv: False, ValueError, r"which matched no nn.Conv2d of the model"),
    ([], TypeError, r"which must be a layer name, a non-empty list of names or a predicate"),
    (3, TypeError, r"which must be a layer name"),
])
def test_replace_bad_which(which, error, match):
    with pytest.raises(error, match=match):
        replace_conv2d(Net(), which)


def test_replace_the_model_itself_is_refused():
    with pytest.raises(ValueError, match="which names the model itself"):
        replace_conv2d(nn.Conv2d(1, 1, 3), "")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        replace_conv2d("net", "stem")


def test_from_conv2d_of_a_tiny_conv_keeps_every_slice():
    # The zero-slice test squared the weights, which underflows for a tiny (not zero) slice: such a
    # conv came back with amplitude 0 everywhere.
    conv, _ = gabor_conv(1, 2, 5, seed=3)
    with torch.no_grad():
        conv.weight.mul_(1e-200)
    gabor = GaborConv2d.from_conv2d(conv)
    assert bool((gabor.amplitude > 0).all())
    torch.testing.assert_close(gabor.weight / 1e-200, conv.weight / 1e-200, rtol=0, atol=1e-6)
