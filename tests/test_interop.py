"""A Gabor layer inside someone else's model and tools: the eval cache under every optimizer and
under threads, writes to ``.weight``, ``replace_conv2d``, mode switches with bad values, warnings
that point at the caller, and the tools PyTorch users run on conv layers (batch-norm fusion, fx,
jit, pruning, fuse_modules). Each test here failed on the code before the fix it checks."""
from __future__ import annotations

import logging
import math
import threading
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune

import gaborlayer
from gaborlayer import GaborConv1d, GaborConv2d, GaborTruncationWarning, replace_conv2d
from gaborlayer.convert import FUSER_METHODS, GaborFitWarning

X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def fresh_output(m, x):
    """The layer's output computed without the cache (train mode builds the bank anew)."""
    mode = m.training
    with torch.no_grad():
        y = m.train()(x)
    m.train(mode)
    return y


# -- the eval cache ---------------------------------------------------------------------------
def _optimizers():
    """Every optimizer of torch.optim that takes dense parameters, in each implementation it offers."""
    names = ["SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop", "Rprop",
             "ASGD", "Adafactor", "LBFGS"]
    for name in names:
        cls = getattr(torch.optim, name, None)
        if cls is None:
            continue
        yield name, cls, {}
        for flag in ("foreach", "fused"):
            yield f"{name}({flag})", cls, {flag: True}


def test_eval_cache_follows_every_optimizer_step():
    covered = []
    for label, cls, flags in _optimizers():
        torch.manual_seed(0)
        m = GaborConv2d(3, 4, 5, padding=2, amplitude=True).eval()
        try:
            opt = cls(m.parameters(), lr=0.05, **flags)
        except (RuntimeError, ValueError, TypeError):  # this implementation is not offered for CPU tensors
            continue
        with torch.no_grad():
            before = m(X)  # cached

        def closure(m=m, opt=opt):
            opt.zero_grad()
            loss = m(X).square().mean()  # eval mode, grad enabled: the training step of a frozen-BN model
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            after = m(X)
        assert not torch.equal(after, before), label
        torch.testing.assert_close(after, fresh_output(m, X), rtol=0, atol=0, msg=label)
        covered.append(label)
    assert {"Adam", "Adam(foreach)", "Adam(fused)", "SGD(fused)", "AdamW(fused)", "LBFGS"} <= set(covered), covered


def test_eval_cache_after_a_write_through_data():
    m = GaborConv2d(3, 4, 5).eval()
    with torch.no_grad():
        before = m(X)
    m.theta.data.add_(0.5)  # bypasses autograd's version counter
    with torch.no_grad():
        after = m(X)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, fresh_output(m, X), rtol=0, atol=0)


def test_threads_serving_while_modes_switch():
    m = GaborConv2d(3, 6, 5, padding=2).eval()
    expected = fresh_output(m, X)
    errors, stop = [], threading.Event()

    def serve():
        try:
            while not stop.is_set():
                with torch.no_grad():
                    torch.testing.assert_close(m(X), expected, rtol=0, atol=0)
        except Exception as exc:  # noqa: BLE001 - any error is the failure
            errors.append(exc)

    def switch():
        try:
            for _ in range(300):
                m.eval()
                m.train(False)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(4)] + [threading.Thread(target=switch)]
    for t in threads:
        t.start()
    threads[-1].join()
    stop.set()
    for t in threads[:-1]:
        t.join()
    assert not errors, errors[0]


# -- writes to .weight ------------------------------------------------------------------------
@pytest.mark.parametrize("write", [lambda w: nn.init.kaiming_normal_(w), lambda w: w.mul_(0)])
@pytest.mark.parametrize("training", [True, False])
def test_in_place_write_to_weight_raises_and_changes_nothing(write, training):
    m = GaborConv2d(3, 4, 5).train(training)
    expected = fresh_output(m, X)
    with torch.no_grad():
        m(X)  # (eval: fills the cache)
        write(m.weight)
    with pytest.raises(RuntimeError, match=r"GaborConv2d.weight is built from its Gabor parameters .* written "
                                           r"in place .* to_conv2d\(\)"):
        m(X)
    with torch.no_grad():  # the write reached nothing the layer computes with
        torch.testing.assert_close(m(X), expected, rtol=0, atol=0)


@pytest.mark.parametrize("training", [True, False])
def test_writes_through_data_reach_nothing(training):
    # .data writes bypass autograd's version counter, so no error; but they change only the copy read
    m = GaborConv2d(3, 4, 5).train(training)
    expected = fresh_output(m, X)
    with torch.no_grad():
        m(X)
    m.weight.data.fill_(1.0)
    with torch.no_grad():
        torch.testing.assert_close(m(X), expected, rtol=0, atol=0)
    assert not torch.equal(m.weight, torch.ones_like(m.weight))


def test_assigning_weight_raises_clearly():
    m = GaborConv1d(1, 2, 5)
    with pytest.raises(AttributeError, match=r"GaborConv1d.weight is built .* cannot be assigned .* to_conv1d"):
        m.weight = nn.Parameter(torch.zeros(2, 1, 5))


# -- replace_conv2d ---------------------------------------------------------------------------
def test_replace_conv2d_defaults_to_the_classic_bank_and_keeps_ties():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), shared, nn.ReLU(), shared)
    swapped = replace_conv2d(model, ["0", "2"])  # fit=False by default: instant
    assert isinstance(model[2], GaborConv2d) and model[2] is model[4] is swapped["2"]
    torch.testing.assert_close(model[0].weight, GaborConv2d(3, 4, 5).weight, rtol=0, atol=0)
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})
    by_alias = nn.Sequential(shared, shared)
    replace_conv2d(by_alias, "1")  # named by its second place: both places swapped
    assert isinstance(by_alias[0], GaborConv2d) and by_alias[0] is by_alias[1]


class StandardizedConv2d(nn.Conv2d):
    def forward(self, x):
        w = self.weight
        return self._conv_forward(x, (w - w.mean()) / w.std(), self.bias)


def test_replace_conv2d_refuses_subclasses_and_lazy_layers():
    model = nn.Sequential(StandardizedConv2d(3, 4, 3))
    with pytest.raises(TypeError, match=r"layer '0' is a .*StandardizedConv2d, a subclass of nn.Conv2d .* "
                                        r"allow_subclasses=True"):
        replace_conv2d(model, "0")
    replace_conv2d(model, "0", allow_subclasses=True)
    assert type(model[0]) is GaborConv2d
    with pytest.raises(ValueError, match=r"layer '0' is a lazy nn.Conv2d whose weight is not initialised"):
        replace_conv2d(nn.Sequential(nn.LazyConv2d(4, 3)), "0")


def test_replace_conv2d_fit_reports_the_energy_explained(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 5))  # random weights: poorly explained
    with caplog.at_level(logging.INFO, logger="gaborlayer"), \
            pytest.warns(GaborFitWarning, match=r"layer '0' explain a median .*% of its weights' energy"):
        swapped, fits = replace_conv2d(model, "0", fit=True, return_fit=True)
    assert "replace_conv2d: '0' fitted" in caplog.text and fits["0"].loss.shape == (2,)
    assert swapped["0"] is model[0]


# -- mode switches, load_state_dict and warnings ----------------------------------------------
def test_non_finite_parameters_warn_once_naming_the_parameter():
    model = nn.Sequential(GaborConv2d(1, 2, 9))
    state = model.state_dict()
    state["0.log_gamma"] = torch.tensor([[math.nan], [0.0]])
    with pytest.warns(GaborTruncationWarning, match=r"GaborConv2d: 1 of 2 filters have a non-finite parameter, "
                                                     r"e.g. filter \[0, 0\] with gamma=nan"):
        model.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per layer: switching modes does not warn again
        model.eval()
        model.train()


def test_warnings_point_at_the_callers_line():
    with pytest.warns(GaborTruncationWarning) as record:
        GaborConv2d(1, 1, 3, sigma=4.0)
    assert record[0].filename == __file__
    model = nn.Sequential(nn.Sequential(GaborConv2d(1, 1, 9, sigma=1.0)))
    with torch.no_grad():
        model[0][0].log_sigma.fill_(math.log(4.0))
    with pytest.warns(GaborTruncationWarning) as record:
        model.eval()
    assert record[0].filename == __file__


# -- tools ------------------------------------------------------------------------------------
def test_to_conv2d_keeps_mode_device_and_dtype():
    for training in (True, False):
        m = GaborConv2d(3, 4, 3, dtype=torch.float64).train(training)
        conv = m.to_conv2d()
        assert conv.training == training and conv.weight.dtype == torch.float64
        assert conv.weight.device == m.theta.device


def test_batch_norm_fusion_through_to_conv2d():
    torch.manual_seed(1)
    m = GaborConv2d(3, 4, 5, padding=2)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model = nn.Sequential(m, bn).eval()
    fused = torch.nn.utils.fuse_conv_bn_eval(m.to_conv2d(), bn)  # the documented two-line recipe
    with torch.no_grad():
        torch.testing.assert_close(fused(X), model(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(AttributeError, match=r"fuse_conv_bn_eval\(layer.to_conv2d\(\), bn\)"):
        torch.nn.utils.fuse_conv_bn_eval(m.eval(), bn)


@pytest.mark.parametrize("training", [True, False])
def test_fx_symbolic_trace(training):
    model = nn.Sequential(GaborConv2d(3, 4, 5, padding=2, output="magnitude"), nn.ReLU(),
                          GaborConv2d(4, 2, 3, amplitude=True)).train(training)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(X), model(X), rtol=0, atol=0)
    traced(X).sum().backward()  # the parameters are the model's: gradients reach them
    assert model[0].theta.grad is not None


def test_jit_trace_in_eval_mode_with_its_check():
    model = nn.Sequential(GaborConv2d(3, 4, 5), nn.ReLU()).eval()
    traced = torch.jit.trace(model, X, check_trace=True)
    # (the trace records the PyTorch formula; eagerly the bank is the compiled loop's: equal to rounding)
    torch.testing.assert_close(traced(X), model(X), rtol=1e-5, atol=1e-6)


def test_jit_script_says_what_to_use_instead():
    with pytest.raises(RuntimeError, match=r"torch.jit.script.*torch.jit.trace.*torch.compile.*torch.export"):
        torch.jit.script(nn.Sequential(GaborConv2d(3, 4, 5)))


def test_pruning_says_what_to_do_instead():
    m = GaborConv2d(3, 4, 5)
    with pytest.raises(RuntimeError, match=r"cannot be pruned .* prune the plain conv of to_conv2d\(\)"):
        torch.nn.utils.prune.l1_unstructured(m, "weight", amount=0.3)
    pruned = torch.nn.utils.prune.l1_unstructured(m.to_conv2d(), "weight", amount=0.3)
    assert float((pruned.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.01)


def test_fuse_modules_with_the_fuser_methods():
    torch.manual_seed(2)
    model = nn.Sequential(GaborConv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    model[1].running_var.uniform_(0.5, 2)
    config = {"additional_fuser_method_mapping": FUSER_METHODS}
    for fused in (torch.ao.quantization.fuse_modules(model, [["0", "1"]]),  # registered as a default
                  torch.ao.quantization.fuse_modules(model, [["0", "1"]], fuse_custom_config_dict=config)):
        assert type(fused[0]) is nn.Conv2d and type(fused[1]) is nn.Identity
        with torch.no_grad():
            torch.testing.assert_close(fused(X), model(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError, match="needs both in eval mode"):
        torch.ao.quantization.fuse_modules(model.train(), [["0", "1"]], fuse_custom_config_dict=config)


def test_public_names():
    assert gaborlayer.replace_conv2d is replace_conv2d
