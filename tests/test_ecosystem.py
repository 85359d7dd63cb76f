"""GaborConv2d where PyTorch users expect it to work: DistributedDataParallel, autocast,
channels_last, torch.compile of a whole model, checkpoints and torch.export.

Every check compares with an oracle that does not go through the feature under test: training in
one process, float32, contiguous tensors, eager mode, or nn.Conv2d holding the same weight.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from gaborlayer import GaborConv2d

PARAM_NAMES = ("theta", "log_sigma", "log_lambd_excess", "log_gamma", "psi")  # as stored
DATA = Path(__file__).parent / "data"
CL = torch.channels_last


def close64(actual, expected, msg=None):
    """Equal up to float64 rounding (a different summation order, not a different computation)."""
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12, msg=msg)


def swap_gabor_for_conv2d(model: nn.Module) -> nn.Module:
    """Replace every GaborConv2d in ``model`` (at any depth) by its ``to_conv2d()``, in place."""
    for name, child in model.named_children():
        if isinstance(child, GaborConv2d):
            setattr(model, name, child.to_conv2d())
        else:
            swap_gabor_for_conv2d(child)
    return model


def bank_grads(gabor: GaborConv2d, weight_grad: torch.Tensor) -> list[torch.Tensor]:
    """The Gabor parameters' gradients given the gradient of the loss w.r.t. the bank."""
    with torch.enable_grad():  # the bank is then built with its graph, never taken from the cache
        return list(torch.autograd.grad(gabor.weight, [getattr(gabor, n) for n in PARAM_NAMES], weight_grad))


# -- DistributedDataParallel -------------------------------------------------------------------
DDP_STEPS = 3


def ddp_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(GaborConv2d(2, 4, 5, padding=2, dtype=torch.float64), nn.Tanh(),
                         nn.Conv2d(4, 2, 3, stride=2, dtype=torch.float64), nn.Flatten(),
                         nn.Linear(2 * 3 * 3, 3, dtype=torch.float64))


def ddp_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 2, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(8, 3, generator=g, dtype=torch.float64))


def ddp_train(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(DDP_STEPS):
        opt.zero_grad()
        # A mean over the local batch: DDP averages the ranks' gradients, so equal halves give
        # the gradient of the mean over the whole batch.
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    # A timeout, so that a rank waiting on a dead peer fails instead of hanging the suite.
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        model = DistributedDataParallel(ddp_model())
        x, target = ddp_batch()
        part = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        ddp_train(model, x[part], target[part])
        torch.save(model.module.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process_training(tmp_path):
    world_size = 2
    context = mp.spawn(ddp_worker, args=(world_size, free_port(), str(tmp_path)), nprocs=world_size, join=False)
    try:
        single = ddp_model()  # the oracle, trained while the ranks start up
        initial = copy.deepcopy(single.state_dict())
        ddp_train(single, *ddp_batch())
        deadline = time.monotonic() + 120
        while not context.join(timeout=1):  # raises if a rank failed
            if time.monotonic() > deadline:
                raise TimeoutError("the DDP ranks did not finish within 120 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()

    expected = single.state_dict()
    assert not torch.allclose(expected["0.theta"], initial["0.theta"])  # the Gabor parameters did train
    for rank in range(world_size):
        trained = torch.load(tmp_path / f"rank{rank}.pt")
        assert trained.keys() == expected.keys()
        for key, value in expected.items():
            close64(trained[key], value, msg=f"rank {rank}: {key}")


# -- autocast ----------------------------------------------------------------------------------
# Relative error of output and gradients against float32, measured at 7e-3 (bf16) and 8e-4 (fp16).
AUTOCAST_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


def relative_error(actual, expected):
    return ((actual.float() - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(GaborConv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 2, 3))
    full = copy.deepcopy(model)
    twin = swap_gabor_for_conv2d(copy.deepcopy(model))
    x = torch.randn(2, 3, 12, 12)
    with torch.autocast("cpu", dtype=dtype):
        y = model(x)
        y_twin = twin(x)
        first = model[0](x)
    # As nn.Conv2d under autocast: the convolution runs in low precision on the same weight.
    assert first.dtype == dtype and y.dtype == dtype
    torch.testing.assert_close(y, y_twin, rtol=0, atol=0)
    y.float().square().mean().backward()
    y_twin.float().square().mean().backward()

    gabor = model[0]
    expected = bank_grads(copy.deepcopy(gabor), twin[0].weight.grad)
    for name, want in zip(PARAM_NAMES, expected):
        grad = getattr(gabor, name).grad
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(gabor.bias.grad, twin[0].bias.grad, rtol=1e-5, atol=1e-7)

    y_full = full(x)
    y_full.square().mean().backward()
    assert relative_error(y, y_full) < AUTOCAST_TOLERANCE[dtype]
    for (name, p), p_full in zip(model.named_parameters(), full.parameters()):
        assert relative_error(p.grad, p_full.grad) < AUTOCAST_TOLERANCE[dtype], name


# -- channels_last -----------------------------------------------------------------------------
def cl_setup():
    torch.manual_seed(0)
    gabor = GaborConv2d(3, 4, 5, padding=2, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    return gabor, x


def run_with_grads(module: nn.Module, x: torch.Tensor):
    """Output, input gradient and parameter gradients for one backward of a fixed loss."""
    module.zero_grad()
    x = x.detach().requires_grad_()
    y = module(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    return y, x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def test_channels_last_input_matches_contiguous_and_conv2d():
    gabor, x = cl_setup()
    twin = gabor.to_conv2d()
    x_cl = x.to(memory_format=CL)
    y, dx, grads = run_with_grads(gabor, x)
    y_cl, dx_cl, grads_cl = run_with_grads(gabor, x_cl)
    y_twin, dx_twin, grads_twin = run_with_grads(twin, x_cl)

    assert y_cl.is_contiguous(memory_format=CL) == y_twin.is_contiguous(memory_format=CL)
    assert dx_cl.is_contiguous(memory_format=CL) == dx_twin.is_contiguous(memory_format=CL)
    close64(y_cl, y)
    close64(y_cl, y_twin)
    close64(dx_cl, dx)
    close64(dx_cl, dx_twin)
    for name in grads:
        close64(grads_cl[name], grads[name], msg=name)
    close64(grads_cl["bias"], grads_twin["bias"])
    for name, want in zip(PARAM_NAMES, bank_grads(gabor, grads_twin["weight"])):
        close64(grads_cl[name], want, msg=name)


def cl_models():
    """A model with GaborConv2d and its nn.Conv2d twin, both converted to channels_last."""
    torch.manual_seed(0)
    model = nn.Sequential(GaborConv2d(3, 4, 5, padding=2, dtype=torch.float64), nn.ReLU(),
                          nn.Conv2d(4, 2, 3, dtype=torch.float64))
    twin = swap_gabor_for_conv2d(copy.deepcopy(model))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    return model, copy.deepcopy(model).to(memory_format=CL), twin.to(memory_format=CL), x


@pytest.mark.parametrize("layout", ["channels_last input", "contiguous input"])
def test_channels_last_model_matches_contiguous_and_conv2d(layout):
    model, model_cl, twin_cl, x = cl_models()
    x_in = x.to(memory_format=CL) if layout == "channels_last input" else x
    y, dx, grads = run_with_grads(model, x)
    y_cl, dx_cl, grads_cl = run_with_grads(model_cl, x_in)
    y_twin, dx_twin, grads_twin = run_with_grads(twin_cl, x_in)
    close64(y_cl, y)
    close64(y_cl, y_twin)
    close64(dx_cl, dx)
    close64(dx_cl, dx_twin)
    for name in grads:
        close64(grads_cl[name], grads[name], msg=name)
    close64(grads_cl["2.weight"], grads_twin["2.weight"])


def test_channels_last_model_output_layout_like_conv2d():
    """A Gabor layer holds no 4-D tensor for .to(memory_format=) to convert; it follows the call
    anyway (GaborConv2d._apply), so with a contiguous input its output is channels_last, as
    nn.Conv2d's is, until .to(memory_format=torch.contiguous_format) turns it back."""
    gabor, x = cl_setup()
    y = gabor(x)
    twin = gabor.to_conv2d().to(memory_format=CL)
    gabor = gabor.to(memory_format=CL)
    assert twin(x).is_contiguous(memory_format=CL)
    assert gabor(x).is_contiguous(memory_format=CL) and gabor.weight.is_contiguous(memory_format=CL)
    close64(gabor(x), y)
    # calls that name no layout keep it: dtype, deepcopy, the eval cache, to_conv2d
    gabor = gabor.to(torch.float64).to("cpu")
    assert gabor.weight.is_contiguous(memory_format=CL)
    assert copy.deepcopy(gabor).float().weight.is_contiguous(memory_format=CL)
    assert copy.deepcopy(gabor).weight.is_contiguous(memory_format=CL)
    gabor.eval()
    assert gabor.weight.is_contiguous(memory_format=CL) and gabor(x).is_contiguous(memory_format=CL)
    assert gabor.to_conv2d().weight.is_contiguous(memory_format=CL)
    assert list(gabor.state_dict()) == list(cl_setup()[0].state_dict())  # no new state
    gabor = gabor.to(memory_format=torch.contiguous_format)
    assert gabor.weight.is_contiguous() and gabor(x).is_contiguous()
    close64(gabor(x), y)


def test_channels_last_3d():
    from gaborlayer import GaborConv1d, GaborConv3d
    torch.manual_seed(0)
    gabor = GaborConv3d(2, 3, 3, padding=1, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)
    y = gabor(x)
    twin = gabor.to_conv3d().to(memory_format=torch.channels_last_3d)
    gabor = gabor.to(memory_format=torch.channels_last_3d)
    out = gabor(x)
    assert gabor.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert gabor.to_conv3d().weight.is_contiguous(memory_format=torch.channels_last_3d)
    # the output's layout is whatever F.conv3d makes of that weight, as for nn.Conv3d
    assert out.is_contiguous(memory_format=torch.channels_last_3d) == twin(x).is_contiguous(
        memory_format=torch.channels_last_3d)
    close64(out, y)
    one_d = GaborConv1d(2, 3, 5, dtype=torch.float64)  # nn.Module.to converts no 3-D tensor: nothing to follow
    assert one_d.to(memory_format=CL).weight.is_contiguous()


# -- torch.compile of a whole model --------------------------------------------------------------
def compile_model() -> nn.Sequential:
    torch.manual_seed(0)
    f64 = {"dtype": torch.float64}
    return nn.Sequential(GaborConv2d(2, 4, 5, padding=2, **f64), nn.BatchNorm2d(4, **f64), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, **f64), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3, **f64))


# inductor's first compile on CPU (C++ kernels, forward and backward) takes 15-30 s on a loaded
# 2-core machine; aot_eager checks the traced graphs in ~2 s. Both run: inductor only trains.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_whole_model_matches_eager(backend):
    model = compile_model()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(2, 2, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, eager)]
    # Two steps: the second must see the parameters the first step changed.
    for step in range(2):
        outputs = []
        for m, opt in zip((compiled, eager), optimizers):
            opt.zero_grad()
            y = m(x)
            y.square().mean().backward()
            outputs.append(y)
        close64(*outputs, msg=f"step {step}: output")
        for (name, p), p_eager in zip(model.named_parameters(), eager.parameters()):
            close64(p.grad, p_eager.grad, msg=f"step {step}: {name}")
        for opt in optimizers:
            opt.step()
    for (name, b), b_eager in zip(model.named_buffers(), eager.buffers()):
        close64(b, b_eager, msg=name)  # BatchNorm running statistics
    if backend == "aot_eager":
        # Eval mode: eager serves the bank from its cache, the compiled graph builds it.
        model.eval(), eager.eval()
        with torch.no_grad():
            close64(compiled(x), eager(x))


# -- checkpoints ---------------------------------------------------------------------------------
def test_state_dict_after_to_conv2d_loads_into_plain_conv2d_model():
    def build(conv):
        return nn.Sequential(conv(2, 4, 5, padding=2, dtype=torch.float64), nn.ReLU(),
                             nn.Sequential(conv(4, 4, 3, groups=2, bias=False, dtype=torch.float64), nn.Tanh()),
                             nn.Conv2d(4, 2, 1, dtype=torch.float64))

    torch.manual_seed(0)
    model = build(GaborConv2d)
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    state = swap_gabor_for_conv2d(model).state_dict()
    plain = build(nn.Conv2d)
    plain.load_state_dict(state)  # strict: the same keys and shapes as a model built with nn.Conv2d
    with torch.no_grad():
        close64(plain(x), expected)


def load_checkpoint_builder():
    spec = importlib.util.spec_from_file_location("make_checkpoint", DATA / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checkpoint_from_version_0_1_loads_and_reproduces_its_output():
    """Guards the state_dict layout (names, shapes, stored parameterisation) against changes."""
    checkpoint = torch.load(DATA / "gaborconv2d_v0_1.pt")
    assert checkpoint["version"] == "0.1.0"
    model = load_checkpoint_builder().build_model()
    model.load_state_dict(checkpoint["state_dict"])  # strict: every key present, none extra
    with torch.no_grad():
        close64(model(checkpoint["input"]), checkpoint["output"])
        close64(model.eval()(checkpoint["input"]), checkpoint["output"])


def test_torch_save_whole_model_round_trips():
    # pickle and deepcopy of a lone GaborConv2d are tested in test_modules.py; this is torch.save's
    # own pickler (storages saved apart) on a model, with the eval cache populated.
    torch.manual_seed(0)
    model = nn.Sequential(GaborConv2d(2, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    x = torch.randn(1, 2, 9, 9)
    with torch.no_grad():
        expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert repr(loaded) == repr(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


# -- torch.export --------------------------------------------------------------------------------
def test_torch_export_matches_eager_and_follows_new_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(GaborConv2d(2, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 3, 3)).eval()
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        model(x)  # populate the eval cache first: the export must not bake it in as a constant
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    reloaded = torch.export.load(buffer).module()
    exported = program.module()
    x5 = torch.randn(5, 2, 12, 12)
    with torch.no_grad():
        for run in (exported, reloaded):
            torch.testing.assert_close(run(x), model(x))
            torch.testing.assert_close(run(x5), model(x5))  # another batch size

    # The bank is built from the parameters inside the program: new parameters, new output.
    torch.manual_seed(1)
    state = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    exported.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x))
