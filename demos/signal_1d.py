"""A GaborConv1d bank finds the periodicities of real signals from a denoising objective.

Two datasets bundled with statsmodels (``pip install 'gaborlayer[demos]'``):

- ``co2``: weekly atmospheric CO2 at Mauna Loa, 1958-2001 (2284 weeks; the 59 missing weeks are
  interpolated). The slow rise is removed by subtracting a Gaussian smoothing of width 104 weeks
  (a generic high-pass that knows nothing of the year); what is left is dominated by the seasonal
  cycle, one year = 52.18 weeks (and its harmonic, 26 weeks).
- ``sunspots``: yearly sunspot numbers, 1700-2008 (309 years), mean removed; the solar cycle is
  about 11 years.

Each series is standardised. A ``GaborConv1d(1, 2, k, padding="same", padding_mode="reflect")``
with two filters (wavelengths initialised away from the answer) feeds a linear read-out; the
model is trained to recover the clean series from the series plus white noise of twice its
standard deviation (fresh noise each step; Adam, learning rate 0.05 decaying linearly to 0).
The read-out is solved exactly each step (least squares on the filter outputs, variable
projection), so Adam moves only the Gabor parameters.
The best linear denoiser passes the frequencies where the signal's power stands above the
noise, so a band-pass filter is pulled to the signal's spectral peak: the learned ``lambd`` of
the filter that carries the read-out is compared with the known period and with the peak of
the series' periodogram.

It prints the learned periods and writes ``signal_periods.png`` to ``--out`` (default
``demos/out/``): per series, the learned filters, their frequency responses over the series'
periodogram, and the first 300 samples noisy, clean and denoised. ``--plot FILE`` writes the same
figure to ``FILE`` as well.

Run ``python demos/signal_1d.py`` (a few seconds; under two minutes on a shared 2-core CPU) or
``--quick`` (CI).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from gaborlayer import GaborConv1d

# name: kernel length, initial lambd and sigma per filter, the known period, its unit
DATASETS = {
    "co2": dict(kernel=313, lambd=(35.0, 80.0), sigma=(20.0, 45.0), period=365.25 / 7, unit="weeks",
                known="one year"),
    "sunspots": dict(kernel=61, lambd=(6.0, 17.0), sigma=(4.0, 9.0), period=11.0, unit="years",
                     known="the solar cycle, about 11 years"),
}
NOISE = 2.0  # times the series' standard deviation
LR = 0.05


def load(name: str) -> np.ndarray:
    """The standardised series, as float64."""
    from statsmodels.datasets import co2, sunspots

    if name == "co2":
        from scipy.ndimage import gaussian_filter1d

        series = co2.load_pandas().data["co2"].interpolate().bfill().to_numpy()
        series = series - gaussian_filter1d(series, 104.0, mode="nearest")
    else:
        series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=float)
        series = series - series.mean()
    return series / series.std()


def periodogram_peak(series: np.ndarray, longest: float) -> float:
    """The period (in samples) of the largest periodogram value, among periods 2..longest."""
    n = 16 * len(series)  # zero-padded, for a finely sampled peak
    power = np.abs(np.fft.rfft(series - series.mean(), n=n)) ** 2
    freq = np.fft.rfftfreq(n)
    band = (freq > 1 / longest) & (freq < 0.5)
    return float(1 / freq[band][np.argmax(power[band])])


def readout(features: torch.Tensor, target: torch.Tensor):
    """Least-squares weights (and a constant) from features ``(C, L)`` to ``target (L,)``, and the fit."""
    design = torch.cat([features, torch.ones_like(features[:1])]).T  # (L, C + 1)
    weights = torch.linalg.solve(design.T @ design, design.T @ target)
    return weights, design @ weights


def train(name: str, steps: int, seed: int = 0):
    config = DATASETS[name]
    clean = torch.tensor(load(name))
    n = len(config["lambd"])
    bank = GaborConv1d(1, n, config["kernel"], padding="same", padding_mode="reflect", bias=False,
                       dtype=torch.float64, lambd=torch.tensor(config["lambd"])[:, None],
                       sigma=torch.tensor(config["sigma"])[:, None], psi=0.0)
    optimizer = torch.optim.Adam(bank.parameters(), lr=LR)
    # the noise makes every step's gradient noisy: decay the step to settle where the average pulls
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        noisy = clean + NOISE * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        _, fit = readout(bank(noisy[None]), clean)
        loss = F.mse_loss(fit, clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    # Evaluate on fresh noise: each filter's share of the read-out's output.
    with torch.no_grad():
        noisy = clean + NOISE * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        features = bank(noisy[None])
        weights, fit = readout(features, clean)
        share = (weights[:n, None] * features).std(dim=1)
        share = share / share.sum()
    return dict(bank=bank, losses=losses, share=share, clean=clean, noisy=noisy, fit=fit,
                input_mse=F.mse_loss(noisy, clean).item(), output_mse=F.mse_loss(fit, clean).item())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="80 steps instead of 300 (CI)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                        help="directory for the PNG (default demos/out/)")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="also write the figure to this file (kept for older command lines)")
    args = parser.parse_args(argv)
    steps = args.steps or (80 if args.quick else 300)
    torch.set_num_threads(1)  # small tensors: more threads only spin on a shared machine
    results = {}
    for name, config in DATASETS.items():
        start = time.perf_counter()
        result = train(name, steps, args.seed)
        bank = result["bank"]
        lambd, sigma = bank.lambd.detach().flatten(), bank.sigma.detach().flatten()
        main_filter = int(torch.argmax(result["share"]))
        peak = periodogram_peak(result["clean"].numpy(), len(result["clean"]) / 3)
        unit = config["unit"]
        print(f"{name}: {steps} steps in {time.perf_counter() - start:.1f} s; noisy input MSE "
              f"{result['input_mse']:.3f} -> denoised {result['output_mse']:.3f}")
        for i in range(len(lambd)):
            mark = "  <- carries the read-out" if i == main_filter else ""
            print(f"  filter {i}: lambd {config['lambd'][i]:6.2f} -> {lambd[i].item():6.2f} {unit}, "
                  f"sigma {config['sigma'][i]:5.1f} -> {sigma[i].item():6.1f}, share of output "
                  f"{result['share'][i].item():.2f}{mark}")
        learned = lambd[main_filter].item()
        print(f"  learned period {learned:.2f} {unit}; known: {config['known']} = {config['period']:.2f} {unit}; "
              f"periodogram peak {peak:.2f} {unit}")
        results[name] = dict(learned=learned, known=config["period"], peak=peak, **result)
    os.makedirs(args.out, exist_ok=True)
    paths = [os.path.join(args.out, "signal_periods.png")] + ([args.plot] if args.plot else [])
    plot(results, paths)
    print(f"\nwrote {', '.join(paths)}")
    return results


def plot(results: dict, paths: list[str]) -> None:
    """One row per series: the learned filters, their frequency responses over the periodogram, and
    the first 300 samples noisy, clean and denoised; saved to every path in ``paths``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.3 * len(results)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for row, (name, r) in zip(axes, results.items()):
        config = DATASETS[name]
        unit = config["unit"]
        bank = r["bank"]
        weight = bank.weight.detach()[:, 0].numpy()
        lambd = bank.lambd.detach().flatten().numpy()
        sigma = bank.sigma.detach().flatten().numpy()
        main = int(np.argmax(r["share"].numpy()))
        order = [i for i in range(len(weight)) if i != main] + [main]  # the filter that matters on top
        k = weight.shape[-1]
        x = np.arange(k) - (k - 1) / 2
        # Frequency responses against the clean series' periodogram, each scaled to a peak of 1.
        n_fft = 16 * max(k, len(r["clean"]))
        freq = np.fft.rfftfreq(n_fft)
        power = np.abs(np.fft.rfft(r["clean"].numpy(), n=n_fft)) ** 2
        # The periodogram on top, thin: its peaks are narrower than any filter's band.
        row[1].plot(freq, power / power.max(), color="0.3", lw=0.8, zorder=4, label="periodogram of the series")
        for i in order:
            style = dict(color="C3" if i == main else "C0", lw=1.6 if i == main else 1.0,
                         ls="-" if i == main else "--", zorder=3 if i == main else 2)
            label = f"filter {i}: lambd {lambd[i]:.1f}, sigma {sigma[i]:.1f}, share {r['share'][i].item():.2f}"
            row[0].plot(x, weight[i], label=label, **style)
            response = np.abs(np.fft.rfft(weight[i], n=n_fft))
            row[1].plot(freq, response / response.max(), **style)
        known = 1 / config["period"]
        row[1].plot([known], [1.12], "v", color="k", ms=7, label=f"known period, {config['period']:.2f} {unit}")
        row[0].set(title=f"{name}: learned filters (red: carries the output)", xlabel=f"tap ({unit})",
                   xlim=(x[0], x[-1]), ylim=(-1.75, 1.15))
        row[0].legend(fontsize=7, loc="lower center", framealpha=0.9)  # below the filters (peak 1, trough > -1)
        row[1].set(title=f"{name}: |frequency response| (peak 1)", xlabel=f"frequency (cycles / {unit[:-1]})",
                   xlim=(0, min(0.5, 5 * known)), ylim=(0, 1.25))
        row[1].legend(fontsize=7, loc="upper right", framealpha=0.9)
        t = np.arange(len(r["clean"]))[:300]
        row[2].plot(t, r["noisy"][:300], color="0.75", lw=0.6, label="noisy input")
        row[2].plot(t, r["clean"][:300], color="k", lw=1.0, label="clean")
        row[2].plot(t, r["fit"][:300], color="C3", lw=1.0, label="denoised")
        row[2].set(title=f"{name}: first {len(t)} samples (MSE {r['input_mse']:.2f} -> {r['output_mse']:.2f})",
                   xlabel=unit, xlim=(0, t[-1]))
        row[2].legend(fontsize=7, loc="upper right", ncol=3, framealpha=0.9)
        low, high = np.percentile(r["noisy"][:300].numpy(), [0.5, 99.5])
        row[2].set_ylim(low, high + 0.35 * (high - low))  # room for the legend above the traces
    for ax in axes.flat:
        ax.title.set_fontsize(10)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
