"""The demos answering our users' questions (demos/identity.py, demos/subpixel_shift.py) and the 1-D
demo (demos/signal_1d.py): they run, write their images to --out, and the pieces they rest on do what
they claim."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "demos"))

import identity  # noqa: E402
import subpixel_shift  # noqa: E402


@pytest.mark.parametrize("demo, names, marker", [
    ("identity.py", ("curves", "kernels", "deep"), "max abs(K-delta)"),
    ("subpixel_shift.py", ("curves", "filters", "scatter"), "phase corr."),
    ("signal_1d.py", ("periods",), "learned period"),
])
def test_user_demo_quick_writes_its_images(tmp_path, demo, names, marker):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "demos", demo), "--quick", "--out", str(tmp_path)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    prefix = demo.split("_")[0].removesuffix(".py")
    for name in names:
        path = tmp_path / f"{prefix}_{name}.png"
        assert path.exists() and 5_000 < path.stat().st_size < 400_000, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{prefix}_{name}.png" for name in names)


def test_signal_demo_plot_file_still_works(tmp_path):
    """``--plot FILE`` (the older option) writes the same figure to FILE as well as to --out."""
    extra = tmp_path / "extra.png"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "demos", "signal_1d.py"), "--quick", "--steps", "5",
                             "--out", str(tmp_path / "out"), "--plot", str(extra)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert extra.stat().st_size == (tmp_path / "out" / "signal_periods.png").stat().st_size > 5_000


# -- subpixel: no winner called within the seed-to-seed spread ---------------------------------------
def test_subpixel_verdict_needs_a_difference_beyond_the_seed_spread():
    def runs(gabor, conv):
        return {**{("Gabor", "corr", s): {"t": v} for s, v in enumerate(gabor)},
                **{("Conv2d", "corr", s): {"t": v} for s, v in enumerate(conv)}}

    one = subpixel_shift.verdict(runs([1.146], [1.149]), "corr", [0], 1.155, test="t")
    assert one.startswith("no difference measurable with one seed") and "wins" not in one
    close = subpixel_shift.verdict(runs([0.40, 0.44], [0.43, 0.45]), "corr", [0, 1], 1.155, test="t")
    assert close.startswith("no clear winner")
    clear = subpixel_shift.verdict(runs([0.303, 0.303], [0.418, 0.452]), "corr", [0, 1], 1.155, test="t")
    assert clear.startswith("Gabor front end wins by 0.132 px")
    other = subpixel_shift.verdict(runs([0.50, 0.52], [0.30, 0.31]), "corr", [0, 1], 1.155, test="t")
    assert other.startswith("Conv2d front end wins")


# -- identity ------------------------------------------------------------------------------------
def test_identity_quadratic_form_is_the_conv_loss():
    x = identity.patches(identity.load_gray("china.jpg"), 4, 16, seed=0)
    q = identity.quadratic_form(x)
    for kind in ("Conv2d", "Gabor classic", "Gabor random"):
        conv = identity.make_model(kind, 3)
        direct = ((conv(x) - x).square().sum() / x.square().sum()).item()
        assert identity.check_quadratic_form(conv, x, q) < 1e-12 * max(1.0, direct)
    delta = torch.nn.Conv2d(1, 1, identity.K, padding="same", dtype=torch.float64)
    with torch.no_grad():
        delta.weight.copy_(identity.delta()[None, None])
        delta.bias.zero_()
    assert identity.rel_loss(delta, q).item() < 1e-12


def test_identity_gabor_walks_to_the_delta():
    """A short Adam run from the classic bank: the distance to the delta kernel and the output error
    both fall by a large factor, sigma shrinks and psi stays at 0 (the centre tap stays 1)."""
    x = identity.patches(identity.load_gray("china.jpg"), 8, 24, seed=0)
    q = identity.quadratic_form(x)
    conv, curve, kerr = identity.train_single("Gabor classic", 0, "Adam", 0.1, 80, q, q)
    assert kerr[-1] < 0.05 * kerr[0] and kerr[-1] < 0.05
    assert curve[-1] < 0.05 * curve[0]
    assert conv.sigma.item() < 0.6 and abs(math.remainder(conv.psi.item(), 2 * math.pi)) < 0.05


# -- subpixel shift ------------------------------------------------------------------------------
def test_subpixel_generator_moves_content_by_the_requested_shift():
    """Shift a Gaussian blob by known amounts and measure its centroid back; then check the sign
    convention on real pairs (content moves by +dx to the right, +dy down)."""
    s = 44
    y, x = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    cx, cy = 21.3, 20.6
    blob = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.5**2))[None].repeat(4, 1, 1)
    dx = torch.tensor([0.37, -1.9, 1.25, 0.0], dtype=torch.float64)
    dy = torch.tensor([-0.8, 1.6, 0.0, -0.05], dtype=torch.float64)
    m = 8
    out = subpixel_shift.shift_crops(blob, dx, dy, m)
    xs, ys = x[m:s - m, m:s - m], y[m:s - m, m:s - m]
    mass = out.sum((-2, -1))
    torch.testing.assert_close((out * xs).sum((-2, -1)) / mass - cx, dx, atol=1e-4, rtol=0)
    torch.testing.assert_close((out * ys).sum((-2, -1)) / mass - cy, dy, atol=1e-4, rtol=0)

    ref, moved, d = subpixel_shift.make_pairs(subpixel_shift.load_gray("china.jpg"), 64, seed=0)
    assert ref.shape == moved.shape == (64, 1, subpixel_shift.PATCH, subpixel_shift.PATCH)
    assert d.abs().max() <= subpixel_shift.MAX_SHIFT
    # An integer shift of a real patch is a plain translation of its pixels.
    img = subpixel_shift.load_gray("china.jpg")[100:144, 200:244][None]
    one, minus_two = torch.tensor([1.0], dtype=img.dtype), torch.tensor([-2.0], dtype=img.dtype)
    moved2 = subpixel_shift.shift_crops(img, one, minus_two, m)
    torch.testing.assert_close(moved2[0], img[0, m + 2:s - m + 2, m - 1:s - m - 1], atol=1e-9, rtol=0)
    # Phase correlation, which knows nothing of the generator, reads the shifts back to a fraction of a pixel.
    err = (subpixel_shift.phase_correlation(ref, moved) - d).square().mean().sqrt()
    assert err < 0.2, err


def test_subpixel_quadrature_init_is_pairs():
    front = subpixel_shift.make_front("Gabor")
    w = front.weight.detach()[:, 0]
    assert w.shape[0] == subpixel_shift.CHANNELS
    even, odd = w[0::2], w[1::2]
    # psi = 0 members are even (symmetric under a 180-degree turn), psi = -pi/2 ones odd.
    torch.testing.assert_close(even, even.flip(-2, -1))
    torch.testing.assert_close(odd, -odd.flip(-2, -1))
    model = subpixel_shift.Regressor("Gabor", "corr", 0)
    ref, moved, _ = subpixel_shift.make_pairs(subpixel_shift.load_gray("flower.jpg"), 4, seed=0)
    assert model(ref, moved).shape == (4, 2)
