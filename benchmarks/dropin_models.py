"""Evidence: when does a Gabor first layer help a real model? A multi-seed benchmark.

Five models, each trained from scratch with its first ``nn.Conv2d`` as it is and with that layer
swapped (by :func:`gaborlayer.replace_conv2d`, same arguments) for each Gabor variant:

- ``tfeat``, ``hardnet``, ``sosnet``: kornia.feature's TFeat, HardNet and SOSNet descriptors
  (``pretrained=False``), trained with HardNet's hardest-in-batch triplet loss on 32 x 32 patch
  pairs cut from bundled images; the second patch of each pair is the first one's 64 x 64
  neighbourhood after a known random transform (kornia.augmentation: rotation, scale, shift,
  brightness, contrast, noise), cropped back to 32 x 32. Evaluated on pairs from other images:
  FPR at 95% recall and mean average precision of retrieving each patch's partner;
- ``digits``: the small CNN of ``demos/dropin.py`` on scikit-learn's digits (24 x 24);
- ``texture``: the same CNN classifying 32 x 32 patches of six bundled images (brick, grass,
  gravel, moon, cell, hubble_deep_field; training patches from the top half of each image, test
  patches from the bottom half).

Variants of the first layer (``VARIANTS``): ``conv`` (the model as written), ``gabor`` (classic
init, all parameters learned, one learning rate), ``fixed_theta`` (theta frozen at the classic
bank's 8 orientations, as Perez et al. 2020), ``groups`` (Gabor parameters at 3x the learning
rate, :func:`gaborlayer.optim.param_groups`), ``magnitude`` (``output="magnitude"``: each
filter's quadrature-pair energy). After training, every real-output Gabor layer is converted with
``to_conv2d()`` and the converted model's outputs are compared with the trained one's; its
inference is timed against the Gabor model and the plain model.

Regimes: every cell is trained on a fraction of the training set (``FULL[task]["sizes"]``; for the
classification tasks the same fraction of every class, at least one image each) for the same number
of optimiser steps; the models trained on all of it are also tested on corrupted test inputs
(Gaussian noise, Gaussian blur, rotation, contrast reduction, several strengths each).

No hyperparameter search for any variant: one setting per task (``FULL``: Adam, one-cycle schedule,
learning rates fixed before the first run; steps and batches sized for the time available), the
same for every variant; the ``groups`` variant's factor is the library default (3). Seeds 0..n-1
give every variant the same body initialisation, training subset, batches and corruptions, so the
comparison is paired.

Cells run in ``--jobs`` worker processes (one thread each, ``torch.use_deterministic_algorithms``);
a cell's result depends only on its settings and seed;
the results are written to ``--json`` (default ``docs/data/evidence.json``) after every cell, so
an interrupted run keeps what it finished and ``--resume`` continues it. Each record keeps the
cell's own wall and CPU seconds, split into training, evaluation (clean and 12 corrupted test sets)
and the ``to_conv2d()`` check, and the load average when it finished. ``--plot`` reads that
file and writes ``docs/images/evidence_*.png`` and the tables of ``docs/evidence.md``.

Run ``python benchmarks/dropin_models.py`` (the full run), ``--quick`` (CI, under a minute), and
``python benchmarks/dropin_models.py --plot``.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "demos"))

TASKS = ("digits", "texture", "tfeat", "hardnet", "sosnet")
MATCHING = ("tfeat", "hardnet", "sosnet")
VARIANTS = {  # name -> (GaborConv2d keyword arguments or None for the plain conv, Gabor learning-rate factor)
    "conv": (None, 1.0),
    "gabor": ({}, 1.0),
    "fixed_theta": ({"learn": ("sigma", "lambd", "gamma", "psi")}, 1.0),
    "groups": ({}, 3.0),  # gaborlayer.optim.GABOR_LR_SCALE, the library default
    "magnitude": ({"output": "magnitude"}, 1.0),
}
LABELS = {"conv": "nn.Conv2d", "gabor": "Gabor", "fixed_theta": "Gabor, theta fixed",
          "groups": "Gabor, param_groups x3", "magnitude": "Gabor magnitude"}
CORRUPTIONS = {"noise": (0.05, 0.1, 0.2), "blur": (0.75, 1.5, 3.0), "rotation": (15, 45, 90),
               "contrast": (0.5, 0.25, 0.1)}
UNITS = {"noise": "std (image range 0..1)", "blur": "sigma (px)", "rotation": "degrees", "contrast": "factor"}
# One setting per task, the same for every variant: optimiser steps, batch (images or pairs), Adam lr,
# and the training fractions swept. Sized for a shared 2-core CPU: HardNet and SOSNet cost ~10x TFeat
# per step, so they get fewer, smaller steps and two training fractions.
FULL = {"digits": dict(steps=100, batch=64, lr=3e-3, sizes=(0.01, 0.05, 0.25, 1.0)),
        "texture": dict(steps=100, batch=32, lr=3e-3, sizes=(0.01, 0.05, 0.25, 1.0)),
        "tfeat": dict(steps=60, batch=32, lr=1e-3, sizes=(0.01, 0.05, 0.25, 1.0)),
        "hardnet": dict(steps=30, batch=16, lr=1e-3, sizes=(0.05, 1.0)),
        "sosnet": dict(steps=30, batch=16, lr=1e-3, sizes=(0.05, 1.0))}
QUICK = {task: dict(cfg, steps=2, batch=8, sizes=(1.0,)) for task, cfg in FULL.items()}
SEEDS = 5
TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "hubble_deep_field")
MATCH_TRAIN = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "china.jpg")
MATCH_TEST = ("camera", "coins", "clock", "cell", "flower.jpg")


# -- data ------------------------------------------------------------------------------------------
def gray_image(name: str) -> torch.Tensor:
    """A bundled image as a float gray image ``(H, W)`` in [0, 1]: scikit-learn's for ``*.jpg``,
    scikit-image's otherwise."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image
        image = load_sample_image(name)
    else:
        import skimage.data
        image = getattr(skimage.data, name)()
    image = torch.tensor(np.asarray(image), dtype=torch.float32)
    image = image[..., :3].mean(-1) if image.ndim == 3 else image
    return image / 255


def crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` crop of ``(N, C, H, W)``."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def textured_regions(image: torch.Tensor, n: int, side: int, gen: torch.Generator, rows=None) -> torch.Tensor:
    """``n`` random ``side x side`` regions ``(n, 1, side, side)`` of ``image`` (within ``rows``, a
    slice), drawn among candidates whose variance is above the image's median (no flat sky)."""
    image = image[rows] if rows is not None else image
    h, w = image.shape
    top = torch.randint(0, h - side + 1, (8 * n,), generator=gen)
    left = torch.randint(0, w - side + 1, (8 * n,), generator=gen)
    regions = torch.stack([image[t:t + side, s:s + side] for t, s in zip(top.tolist(), left.tolist())])
    var = regions.var((-2, -1))
    keep = torch.nonzero(var > var.median()).flatten()[:n]
    return regions[keep, None]


def classification_data(task: str, quick: bool) -> dict:
    """Training images ``(N, 1, s, s)`` and test images ``(M, 1, s + 2 m, s + 2 m)`` (a margin ``m``
    that rotations fill), both in [0, 1], labels, ``size = s`` and the class count."""
    gen = torch.Generator().manual_seed(0)
    if task == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        digits = load_digits()
        x = F.interpolate(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16, size=(24, 24),
                          mode="bilinear", align_corners=False).clamp(0, 1)
        y = torch.tensor(digits.target)
        i_train, i_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=digits.target, random_state=0)
        if quick:
            i_train, i_test = i_train[:200], i_test[:100]
        return dict(train=(x[i_train], y[i_train]), test=(x[i_test], y[i_test]), size=24, classes=10)
    n_train, n_test = (20, 10) if quick else (300, 150)
    xs, ys, xt, yt = [], [], [], []
    for label, name in enumerate(TEXTURES):
        image = gray_image(name)
        image = ((image - image.mean()) / image.std() * 0.2 + 0.5).clamp(0, 1)  # no brightness cue
        half = image.shape[0] // 2
        xs.append(textured_regions(image, n_train, 32, gen, slice(0, half)))
        xt.append(textured_regions(image, n_test, 48, gen, slice(half, None)))
        ys += [label] * len(xs[-1])
        yt += [label] * len(xt[-1])
    return dict(train=(torch.cat(xs), torch.tensor(ys)), test=(torch.cat(xt), torch.tensor(yt)), size=32,
                classes=len(TEXTURES))


def pair_transform():
    """The known transform that makes a positive: a 64 x 64 neighbourhood, rotated, scaled,
    shifted, its brightness and contrast changed and noise added (kornia.augmentation)."""
    import kornia.augmentation as K
    return nn.Sequential(K.RandomAffine(degrees=20, translate=(0.03, 0.03), scale=(0.9, 1.1), p=1.0),
                         K.ColorJiggle(brightness=0.1, contrast=0.2, p=1.0),
                         K.RandomGaussianNoise(std=0.01, p=1.0))


def matching_data(quick: bool) -> dict:
    """Patch pairs: ``train = (A, B)`` of ``(N, 1, 32, 32)``; ``test = (A, B64)`` with ``B64`` the
    transformed 64 x 64 neighbourhoods ``(M, 1, 64, 64)`` (corrupted, then cropped, at test)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # kornia.augmentation draws from torch's global generator
    transform = pair_transform()
    per_image_train, per_image_test = (8, 8) if quick else (500, 60)

    def pairs(names, n):
        regions = torch.cat([textured_regions(gray_image(name), n, 64, gen) for name in names])
        with torch.no_grad():
            moved = transform(regions).clamp(0, 1)
        return crop(regions, 32).contiguous(), moved

    a, b = pairs(MATCH_TRAIN, per_image_train)
    at, bt = pairs(MATCH_TEST, per_image_test)
    return dict(train=(a, crop(b, 32).contiguous()), test=(at, bt), size=32)


@functools.lru_cache(maxsize=None)
def task_data(task: str, quick: bool) -> dict:
    return matching_data(quick) if task in MATCHING else classification_data(task, quick)


def corrupt(x: torch.Tensor, kind: str, strength: float, seed: int) -> torch.Tensor:
    """``x`` ``(N, 1, H, W)`` in [0, 1] corrupted by ``kind`` at ``strength`` (kornia); the same
    draw for every model (``seed``)."""
    import kornia.augmentation as K
    import kornia.enhance
    torch.manual_seed(seed)
    if kind == "noise":
        return (x + strength * torch.randn_like(x)).clamp(0, 1)
    if kind == "blur":
        k = 2 * math.ceil(3 * strength) + 1
        return K.RandomGaussianBlur((k, k), (strength, strength), p=1.0)(x)
    if kind == "rotation":
        return K.RandomRotation(degrees=(strength, strength), p=1.0)(x)
    if kind == "contrast":
        return kornia.enhance.adjust_contrast_with_mean_subtraction(x, strength)
    raise ValueError(f"kind must be one of {', '.join(CORRUPTIONS)}, got {kind!r}")


# -- models ----------------------------------------------------------------------------------------
class Standardize(nn.Module):
    """``(x - mean) / std`` with constants of the training set."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def first_layer_name(model: nn.Module) -> str:
    """The name of the first ``nn.Conv2d`` or GaborConv2d in ``model``."""
    from gaborlayer import GaborConv2d
    return next(name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, GaborConv2d)))


def make_model(task: str, variant: str, seed: int, data: dict) -> nn.Module:
    """The task's model drawn from ``seed``, its first ``nn.Conv2d`` swapped for the variant's
    GaborConv2d (the rest, drawn before the swap, is the same for every variant)."""
    import dropin
    import kornia.feature as KF

    from gaborlayer import replace_conv2d

    torch.manual_seed(seed)
    if task in MATCHING:
        model = {"tfeat": KF.TFeat, "hardnet": KF.HardNet, "sosnet": KF.SOSNet}[task](pretrained=False)
    else:
        x = data["train"][0]
        model = nn.Sequential(Standardize(float(x.mean()), float(x.std())),
                              dropin.make_model(data["classes"], "conv", seed))
    kwargs, _ = VARIANTS[variant]
    if kwargs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation at init (HardNet's 3 x 3): counted in training
            replace_conv2d(model, first_layer_name(model), **kwargs)
    return model


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- training and evaluation ----------------------------------------------------------------------
def hardest_triplet_loss(a: torch.Tensor, b: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """HardNet's loss: each positive pair against the closest non-matching descriptor in the batch."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    d = torch.cdist(a, b) + 1e-6
    eye = torch.eye(len(a), dtype=torch.bool)
    far = d.masked_fill(eye, 10.0)
    hardest = torch.minimum(far.min(0).values, far.min(1).values)
    return F.relu(margin + d.diagonal() - hardest).mean()


@torch.no_grad()
def evaluate_sets(task: str, model: nn.Module, data: dict, sets: dict) -> dict:
    """``{name: metrics}`` for each ``name: test_b`` of ``sets``, as :func:`evaluate`; the descriptors of
    the first patches (never corrupted) are computed once for all of them."""
    model.eval()
    size = data["size"]
    results = {}
    if task not in MATCHING:
        x, y = data["test"]
        for name, test_b in sets.items():
            xb = crop(x if test_b is None else test_b, size)
            pred = torch.cat([model(b).argmax(1) for b in xb.split(256)])
            results[name] = {"accuracy": float((pred == y).float().mean())}
        model.train()
        return results
    a, b_clean = data["test"]
    da = F.normalize(torch.cat([model(xb) for xb in a.split(256)]), dim=1)
    for name, test_b in sets.items():
        b = crop(b_clean if test_b is None else test_b, size)
        db = F.normalize(torch.cat([model(xb) for xb in b.split(256)]), dim=1)
        d = torch.cdist(da, db)
        positive = d.diagonal()
        rank = (d < positive[:, None]).sum(1) + 1  # 1 = the partner is the nearest
        negative = d.diagonal(offset=1)  # a_i against b_{i+1}: another place (of the same or another image)
        threshold = torch.quantile(positive, 0.95)
        results[name] = {"map": float((1.0 / rank).mean()), "fpr95": float((negative <= threshold).float().mean())}
    model.train()
    return results


def evaluate(task: str, model: nn.Module, data: dict, test_b: torch.Tensor | None = None) -> dict:
    """Classification: ``{"accuracy"}``; matching: ``{"map", "fpr95"}`` on the test pairs, with
    ``test_b`` (the second patches, corrupted) in place of the clean ones when given."""
    return evaluate_sets(task, model, data, {"": test_b})[""]


def train(task: str, model: nn.Module, data: dict, indices: torch.Tensor, cfg: dict, scale: float,
          seed: int) -> dict:
    """Adam with a one-cycle schedule for ``cfg["steps"]`` steps on the training items ``indices``;
    the seconds of each step (wall and process CPU)."""
    from gaborlayer.optim import param_groups

    gen = torch.Generator().manual_seed(seed)
    batch = min(cfg["batch"], len(indices))
    groups = param_groups(model, cfg["lr"], scale=scale)
    opt = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                   total_steps=cfg["steps"], pct_start=0.15)
    order, wall, cpu = torch.empty(0, dtype=torch.long), [], []
    x, y = data["train"]
    model.train()
    for _ in range(cfg["steps"]):
        if len(order) < batch:
            order = torch.cat([order, indices[torch.randperm(len(indices), generator=gen)]])
        idx, order = order[:batch], order[batch:]
        t0, c0 = time.perf_counter(), time.process_time()
        if task in MATCHING:
            out = model(torch.cat([x[idx], y[idx]]))
            loss = hardest_triplet_loss(out[:batch], out[batch:])
        else:
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{task}: the loss is {loss.item()}")
    return {"step_s": float(np.median(wall)), "step_cpu_s": float(np.median(cpu)), "final_loss": loss.item()}


def best_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def conversion_check(task: str, model: nn.Module, data: dict, seed: int, timing: bool, repeats: int = 3) -> dict:
    """``to_conv2d()`` of the trained Gabor layer in its place: the largest output difference on the
    test inputs (relative to the largest output), and with ``timing`` the inference time of a
    256-input batch (best of 3) of the Gabor model, the converted one and the plain model."""
    name = first_layer_name(model)
    converted = copy.deepcopy(model)
    parent, _, child = name.rpartition(".")
    setattr(converted.get_submodule(parent), child, model.get_submodule(name).to_conv2d())
    model.eval()
    converted.eval()
    x = crop(data["test"][0][:256], data["size"])
    y, yc = model(x), converted(x)
    result = {"max_rel_diff": float((y - yc).abs().max() / y.abs().max())}
    if timing:
        plain = make_model(task, "conv", seed, data).eval()
        model(x)  # builds and caches the eval bank
        result.update(gabor_s=best_time(lambda: model(x), repeats),
                      converted_s=best_time(lambda: converted(x), repeats), conv_s=best_time(lambda: plain(x), repeats))
    model.train()
    return result


def training_subset(task: str, labels: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """The indices of a ``size`` fraction of the training items, drawn from ``seed``: for the
    classification tasks ``round(size x class count)`` (at least 1) of every class, so that even 1%
    has every class; for the pairs ``round(size x pairs)`` (at least 2)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    if task in MATCHING:
        return torch.randperm(len(labels), generator=gen)[:max(2, round(size * len(labels)))]
    picks = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:max(1, round(size * len(members)))]])
    return torch.cat(picks)


@functools.lru_cache(maxsize=None)
def corrupted_tests(task: str, quick: bool) -> dict:
    """``{(kind, strength): corrupted test inputs}``: the same draws for every cell (computed once per
    worker process)."""
    x = task_data(task, quick)["test"][1 if task in MATCHING else 0]
    return {(kind, s): corrupt(x, kind, s, seed=1000 + i)
            for kind, strengths in CORRUPTIONS.items() for i, s in enumerate(strengths[:1] if quick else strengths)}


def run_cell(task: str, variant: str, size: float, seed: int, quick: bool) -> dict:
    """Train one (task, variant, training fraction, seed) and evaluate it; a JSON-ready record, with
    the cell's own seconds (wall and CPU; of which training, evaluation and the to_conv2d check)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from gaborlayer import GaborTruncationWarning

    t0, c0 = time.perf_counter(), time.process_time()
    data = task_data(task, quick)
    cfg = (QUICK if quick else FULL)[task]
    n_full = len(data["train"][1])
    indices = training_subset(task, data["train"][1], size, seed)
    model = make_model(task, variant, seed, data)
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always", GaborTruncationWarning)
        timing = train(task, model, data, indices, cfg, VARIANTS[variant][1], seed)
    c1 = time.process_time()
    sets = {"clean": None}
    if size == 1.0:
        sets.update({f"{kind}/{s}": x for (kind, s), x in corrupted_tests(task, quick).items()})
    results = evaluate_sets(task, model, data, sets)
    c2 = time.process_time()
    record = dict(task=task, variant=variant, size=size, seed=seed, n_train=len(indices), **timing,
                  epoch_s=timing["step_s"] * math.ceil(n_full / cfg["batch"]),
                  first_params=n_params(model.get_submodule(first_layer_name(model))),
                  model_params=n_params(model), truncation_warnings=len(raised), clean=results.pop("clean"))
    if size == 1.0:
        record["robustness"] = {kind: {} for kind in CORRUPTIONS}
        for name, value in results.items():
            kind, s = name.split("/")
            record["robustness"][kind][s] = value
        if variant != "conv" and VARIANTS[variant][0].get("output", "real") == "real":
            # inference timed for the first three seeds only: the seeds differ in weights, not in cost
            record["to_conv2d"] = conversion_check(task, model, data, seed, timing=variant == "gabor" and seed < 3,
                                                   repeats=1 if quick else 3)
    record.update(cell_s=time.perf_counter() - t0, cell_cpu_s=time.process_time() - c0, train_cpu_s=c1 - c0,
                  eval_cpu_s=c2 - c1, check_cpu_s=time.process_time() - c2, load1=os.getloadavg()[0])
    return record


# -- the report: tables and figures from the JSON ---------------------------------------------------
def metric_of(task: str) -> tuple[str, str]:
    """The headline metric's key and its label (both in percent, higher is better)."""
    return ("map", "mAP (%)") if task in MATCHING else ("accuracy", "accuracy (%)")


def grouped(records: dict) -> dict:
    """``{(task, variant, size): [record, ...]}`` sorted by seed."""
    groups: dict = {}
    for r in sorted(records.values(), key=lambda r: r["seed"]):
        groups.setdefault((r["task"], r["variant"], r["size"]), []).append(r)
    return groups


def paired(values: list[float], baseline: list[float]) -> tuple[float, float]:
    """The mean difference ``values - baseline`` (same seeds) and the paired t-test's two-sided p."""
    from scipy import stats

    diff = np.asarray(values) - np.asarray(baseline)
    if len(diff) < 2 or np.allclose(diff, diff[0], rtol=0, atol=1e-9):  # no spread: the t-test is undefined
        return float(diff.mean()), float("nan")
    return float(diff.mean()), float(stats.ttest_rel(values, baseline).pvalue)


def cell_text(values: list[float], baseline: list[float] | None, spread: bool = True) -> str:
    """``mean ± std`` (percent; the std with ``spread``), and against the baseline (the same seeds)
    ``(+d, p)``, in bold when p < 0.05."""
    v = 100 * np.asarray(values)
    text = f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if spread and len(v) > 1 else f"{v.mean():.1f}"
    if baseline is None:
        return text
    d, p = paired(v, 100 * np.asarray(baseline))
    mark = f"{d:+.1f}, p {p:.3f}" if p >= 0.001 else f"{d:+.1f}, p < 0.001" if math.isfinite(p) else f"{d:+.1f}"
    return f"{text} (**{mark}**)" if math.isfinite(p) and p < 0.05 else f"{text} ({mark})"


def common_seeds(rs: list[dict], base: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
    """``rs`` and ``base`` restricted to the seeds both have (``base`` ``None``: no comparison)."""
    if base is None:
        return rs, None
    both = set(seeds_of(rs)) & set(seeds_of(base))
    return [r for r in rs if r["seed"] in both], [r for r in base if r["seed"] in both]


def args_seeds(payload: dict) -> int:
    return payload["meta"]["seeds"]


def seeds_of(rs: list[dict]) -> list[int]:
    return [r["seed"] for r in rs]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def tables(payload: dict) -> dict[str, str]:
    """The page's tables, in Markdown, from the results file's contents: ``{"size", "cost",
    "conversion", "robustness"}`` -> one or more titled tables."""
    groups = grouped(payload["records"])
    tasks = [t for t in TASKS if any(k[0] == t for k in groups)]
    parts: dict[str, list[str]] = {"size": [], "cost": [], "conversion": [], "robustness": []}
    out = parts["size"]
    for task in tasks:
        key_, label = metric_of(task)
        sizes = sorted({k[2] for k in groups if k[0] == task})
        rows = []
        for variant in VARIANTS:
            row = [LABELS[variant]]
            for size in sizes:
                rs, base = groups.get((task, variant, size)), groups.get((task, "conv", size))
                if not rs:
                    row.append("not run")
                    continue
                rs, b = common_seeds(rs, None if variant == "conv" else base)
                text = cell_text([r["clean"][key_] for r in rs], None if b is None else [r["clean"][key_] for r in b])
                row.append(text + ("" if len(rs) == args_seeds(payload) else f" [{len(rs)} seeds]"))
            rows.append(row)
        n = {len(groups[k]) for k in groups if k[0] == task}
        out.append(f"**{task}**: test {label}, mean ± std over {'/'.join(map(str, sorted(n)))} seeds, by training "
                   f"fraction (training {'pairs' if task in MATCHING else 'images'}: "
                   + ", ".join(f"{100 * s:g}% = {groups[(task, 'conv', s)][0]['n_train']}"
                                                    for s in sizes if (task, 'conv', s) in groups) + ")\n\n"
                   + table(["first layer"] + [f"{100 * s:g}%" for s in sizes], rows))
        if task in MATCHING:
            rows = []
            for v in VARIANTS:
                if (task, v, 1.0) in groups:
                    rs, b = common_seeds(groups[(task, v, 1.0)], None if v == "conv" else groups[(task, "conv", 1.0)])
                    rows.append([LABELS[v], cell_text([r["clean"]["fpr95"] for r in rs],
                                                      None if b is None else [r["clean"]["fpr95"] for r in b])])
            out.append(f"**{task}**: FPR at 95% recall (%, lower is better), all training pairs\n\n"
                       + table(["first layer", "FPR95"], rows))
    out = parts["cost"]
    rows = []
    for task in tasks:
        base = groups.get((task, "conv", 1.0))
        for variant in VARIANTS:
            rs = groups.get((task, variant, 1.0))
            if not rs:
                continue
            step = np.median([r["step_cpu_s"] for r in rs])
            ratio = step / np.median([r["step_cpu_s"] for r in base]) if base else float("nan")
            rows.append([task, LABELS[variant], f"{rs[0]['first_params']:,}", f"{rs[0]['model_params']:,}",
                         f"{np.median([r['epoch_s'] for r in rs]):.2f}", f"{ratio:.2f}"])
    out.append("**Cost** (all training items; median over seeds): trainable parameters, wall time per epoch, "
               "CPU time per training step relative to nn.Conv2d\n\n"
               + table(["task", "first layer", "first-layer params", "model params", "s / epoch",
                        "CPU / step vs conv"], rows))
    timed = [r for r in payload["records"].values() if "cell_cpu_s" in r]
    if timed:
        rows = []
        for task in tasks:
            for size in sorted({k[2] for k in groups if k[0] == task}):
                rs = [r for r in timed if r["task"] == task and r["size"] == size]
                if rs:
                    rows.append([task, f"{100 * size:g}%", str(len(rs))]
                                + [f"{np.mean([r[k] for r in rs]):.1f}" for k in ("cell_cpu_s", "train_cpu_s",
                                                                                  "eval_cpu_s", "check_cpu_s")]
                                + [f"{sum(r['cell_cpu_s'] for r in rs):.0f}"])
        total = sum(r["cell_cpu_s"] for r in timed)
        out.append(f"**Where the run's time goes**: CPU seconds per cell (mean over its variants and seeds) and "
                   f"in all, {total:,.0f} s over {len(timed)} cells (each cell's own process CPU time; process "
                   "start-up not included; training counts from the cell's start, so it holds the model's set-up and, "
                   "in a worker's first cell of a task, the task's data preparation)\n\n"
                   + table(["task", "fraction", "cells", "CPU s / cell", "training", "evaluation", "to_conv2d check",
                            "CPU s, all cells"], rows))
    out = parts["conversion"]
    rows = []
    for task in tasks:
        for variant in VARIANTS:
            rs = [r for r in groups.get((task, variant, 1.0), []) if "to_conv2d" in r]
            if not rs:
                continue
            timed = [r["to_conv2d"] for r in rs if "gabor_s" in r["to_conv2d"]]
            row = [task, LABELS[variant], f"{max(r['to_conv2d']['max_rel_diff'] for r in rs):.1e}"]
            if timed:
                row += [f"{np.median([t['gabor_s'] / t['conv_s'] for t in timed]):.2f}",
                        f"{np.median([t['converted_s'] / t['conv_s'] for t in timed]):.2f}"]
            else:
                row += ["", ""]
            rows.append(row)
    out.append("**to_conv2d() after training**: largest output difference (relative to the largest output) over "
               "the seeds; inference time of a 256-input batch relative to the plain model (median over seeds)\n\n"
               + table(["task", "first layer", "max rel. difference", "Gabor model / conv", "converted / conv"], rows))
    out = parts["robustness"]
    for task in tasks:
        key_, label = metric_of(task)
        base = groups.get((task, "conv", 1.0))
        if not base or "robustness" not in base[0]:
            continue
        present = [v for v in VARIANTS if (task, v, 1.0) in groups]
        rows = []
        for kind, strength in [("clean", None)] + [(k, s) for k, ss in CORRUPTIONS.items() for s in ss
                                                   if str(s) in base[0]["robustness"][k]]:
            def value(r, kind=kind, strength=strength, key_=key_):
                return r["clean"][key_] if kind == "clean" else r["robustness"][kind][str(strength)][key_]
            row = ["clean" if kind == "clean" else f"{kind} {strength:g}"]
            for variant in present:
                rs, b = common_seeds(groups[(task, variant, 1.0)], None if variant == "conv" else base)
                row.append(cell_text([value(r) for r in rs], None if b is None else [value(r) for r in b],
                                     spread=variant == "conv"))
            rows.append(row)
        out.append(f"**{task}**: test {label} under corruption, models trained on all training items (nn.Conv2d: "
                   "mean ± std; Gabor variants: mean, difference from nn.Conv2d and p)\n\n"
                   + table(["corruption"] + [LABELS[v] for v in present], rows))
    return {part: "\n\n".join(blocks) for part, blocks in parts.items()}


def fill_page(page: str, parts: dict[str, str]) -> str:
    """``page`` with the text between ``<!-- evidence:NAME -->`` and ``<!-- /evidence:NAME -->``
    replaced by ``parts[NAME]``."""
    for name, text in parts.items():
        start, end = f"<!-- evidence:{name} -->", f"<!-- /evidence:{name} -->"
        if start in page:
            head, rest = page.split(start, 1)
            page = head + start + "\n\n" + text + "\n\n" + end + rest.split(end, 1)[1]
    return page


STYLE = {"conv": ("tab:blue", "s"), "gabor": ("tab:red", "o"), "fixed_theta": ("tab:orange", "^"),
         "groups": ("tab:green", "v"), "magnitude": ("tab:purple", "D")}


def draw(ax, xs, series: list[list[float]], variant: str, offset: float) -> None:
    """One variant's line: at each x the mean of its values (seeds) in percent, bars one standard
    deviation (a partial run may have fewer seeds at some points); x scaled by ``offset``."""
    points = [100 * np.asarray(v) for v in series]
    mean = [p.mean() for p in points]
    std = [p.std(ddof=1) if len(p) > 1 else 0.0 for p in points]
    color, marker = STYLE[variant]
    ax.errorbar(np.asarray(xs) * offset, mean, std, color=color, marker=marker, ms=4, lw=1.2, capsize=2,
                label=LABELS[variant])


def plot_sizes(plt, groups: dict, swept: list[str], images: str) -> str:
    """``evidence_size.png``: the headline metric against the training fraction, one panel per task
    (three to a row; the legend in a spare panel, or below)."""
    import matplotlib

    ncols = min(3, len(swept) + 1)
    nrows = math.ceil(len(swept) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows + 0.4), squeeze=False)
    for ax, task in zip(axes.flat, swept):
        key_, label = metric_of(task)
        sizes = sorted({k[2] for k in groups if k[0] == task})
        for i, variant in enumerate(VARIANTS):
            have = [s for s in sizes if (task, variant, s) in groups]
            if have:
                draw(ax, have, [[r["clean"][key_] for r in groups[(task, variant, s)]] for s in have], variant,
                     1.08 ** (i - 2))  # side by side, so that the bars do not hide each other
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{100 * s:g}%" for s in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(xlabel="training fraction", ylabel=f"test {label}", title=task)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    spare = list(axes.flat)[len(swept):]
    for ax in spare:
        ax.axis("off")
    if spare:
        spare[0].legend(handles, labels, loc="center", fontsize=9, frameon=False)
        fig.tight_layout()
    else:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.16 / nrows, 1, 1))
    fig.savefig(os.path.join(images, "evidence_size.png"), dpi=80)
    plt.close(fig)
    return "evidence_size.png"


def plot(payload: dict, images: str) -> list[str]:
    """``evidence_size.png`` (metric against training fraction, when a task has several) and
    ``evidence_robustness.png`` (metric against corruption strength); the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(payload["records"])
    tasks = [t for t in TASKS if any(k[0] == t for k in groups)]
    os.makedirs(images, exist_ok=True)
    written = []

    swept = [t for t in tasks if len({k[2] for k in groups if k[0] == t}) > 1]  # a size sweep to draw
    if swept:
        written.append(plot_sizes(plt, groups, swept, images))
    robust = [t for t in tasks if (t, "conv", 1.0) in groups and "robustness" in groups[(t, "conv", 1.0)][0]]
    if robust:
        fig, axes = plt.subplots(len(robust), len(CORRUPTIONS), figsize=(3.0 * len(CORRUPTIONS), 2.4 * len(robust)),
                                 squeeze=False)
        for row, task in zip(axes, robust):
            key_, label = metric_of(task)
            for ax, kind in zip(row, CORRUPTIONS):
                for variant in VARIANTS:
                    rs = groups.get((task, variant, 1.0))
                    if not rs:
                        continue
                    strengths = [s for s in CORRUPTIONS[kind] if str(s) in rs[0]["robustness"][kind]]
                    xs = list(range(len(strengths) + 1))
                    series = [[r["clean"][key_] for r in rs]] + [[r["robustness"][kind][str(s)][key_] for r in rs]
                                                                  for s in strengths]
                    draw(ax, xs, series, variant, 1.0)
                    ax.set_xticks(xs, ["clean"] + [f"{s:g}" for s in strengths])
                ax.set_title(f"{task}: {kind}", fontsize=9)
                ax.set_xlabel(UNITS[kind], fontsize=8)
                if kind == next(iter(CORRUPTIONS)):
                    ax.set_ylabel(label, fontsize=8)
                ax.grid(alpha=0.3)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.04 if len(robust) > 2 else 0.1, 1, 1))
        fig.savefig(os.path.join(images, "evidence_robustness.png"), dpi=72)
        plt.close(fig)
        written.append("evidence_robustness.png")
    return written


def report(path: str, images: str, page: str | None) -> str:
    """Read the results file, write the figures to ``images`` and the tables into ``page`` (between
    its markers, when given); return the tables (Markdown)."""
    with open(path) as f:
        payload = json.load(f)
    plot(payload, images)
    parts = tables(payload)
    if page is not None:
        with open(page) as f:
            text = f.read()
        with open(page, "w") as f:
            f.write(fill_page(text, parts))
    return "\n\n".join(parts.values()) + "\n"


# -- the run ---------------------------------------------------------------------------------------
def cells(tasks, settings: dict, seeds: int) -> list[tuple]:
    """Every cell, ordered so that an interrupted run has finished whole (task, size) groups: digits
    (cheap) first, then every other task with all its training items, then the smaller sizes, then
    SOSNet (the costliest, and HardNet's architecture with another normalisation)."""
    order = [(task, size) for task in tasks for size in sorted(settings[task]["sizes"], reverse=True)]
    order.sort(key=lambda ts: 0 if ts[0] == "digits" else 3 if ts[0] == "sosnet" else 1 if ts[1] == 1.0 else 2)
    return [(task, variant, size, seed) for task, size in order for seed in range(seeds) for variant in VARIANTS]


def key(task, variant, size, seed) -> str:
    return f"{task}/{variant}/{size:g}/{seed}"


def git_commit() -> str:
    import subprocess
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip()


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def _worker_init():
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*kornia.*")


def finished(todo: list[tuple], quick: bool, jobs: int):
    """``(cell, record)`` for every cell of ``todo`` as it finishes: in this process (``jobs=1``) or in
    ``jobs`` worker processes."""
    if jobs == 1:
        _worker_init()
        for cell in todo:
            yield cell, run_cell(*cell, quick)
        return
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(run_cell, *cell, quick): cell for cell in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run(args) -> dict:
    from tqdm import tqdm

    settings = QUICK if args.quick else FULL
    todo = cells(args.tasks, settings, args.seeds)
    payload = {"meta": {}, "records": {}}
    if args.resume and os.path.exists(args.json):
        with open(args.json) as f:
            payload = json.load(f)
    payload["meta"].update(
        quick=args.quick, tasks=args.tasks, seeds=args.seeds, variants=list(VARIANTS),
        corruptions=CORRUPTIONS, settings=settings, jobs=args.jobs, torch=torch.__version__,
        cpu=platform.processor() or platform.machine(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
        load_at_start=os.getloadavg()[0], commit=git_commit())
    todo = [c for c in todo if key(*c) not in payload["records"]]
    t0, before = time.perf_counter(), payload["meta"].get("wall_s", 0.0)
    with tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr, smoothing=0.05) as bar:
        for cell, record in finished(todo, args.quick, args.jobs):
            payload["records"][key(*cell)] = record
            payload["meta"]["wall_s"] = before + time.perf_counter() - t0
            payload["meta"]["load_at_end"] = os.getloadavg()[0]
            write_json(args.json, payload)
            bar.set_postfix_str(key(*cell))
            bar.update()
    payload["meta"]["wall_s"] = before + time.perf_counter() - t0
    write_json(args.json, payload)
    return payload


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 steps, 2 seeds, 1 size (CI)")
    parser.add_argument("--plot", action="store_true", help="only read --json and write the figures and tables")
    parser.add_argument("--json", default=None, help="results file (default docs/data/evidence.json; "
                                                      "--quick: benchmarks/out/evidence_quick.json)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated among {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds 0..n-1 (default {SEEDS}, --quick 2)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes, one thread each (default 2; --quick 1: in this process)")
    parser.add_argument("--resume", action="store_true", help="keep the cells already in --json")
    parser.add_argument("--images", default=os.path.join(ROOT, "docs", "images"), help="where --plot writes PNGs")
    parser.add_argument("--page", default=None, help="the page whose marked tables --plot rewrites "
                                                     "(default docs/evidence.md with the default --json)")
    args = parser.parse_args(argv)
    if args.json is None and args.page is None and not args.quick:
        args.page = os.path.join(ROOT, "docs", "evidence.md")
    args.json = args.json or os.path.join(ROOT, *(("benchmarks", "out", "evidence_quick.json") if args.quick
                                                   else ("docs", "data", "evidence.json")))
    if args.plot:
        print(report(args.json, args.images, args.page))
        return
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks or any(t not in TASKS for t in args.tasks):
        parser.error(f"--tasks takes a comma-separated list of {', '.join(TASKS)}; got {args.tasks!r}")
    args.seeds = args.seeds if args.seeds is not None else (2 if args.quick else SEEDS)
    args.jobs = args.jobs if args.jobs is not None else (1 if args.quick else 2)
    if args.seeds < 2 or args.jobs < 1:
        parser.error("--seeds must be >= 2 (the paired test) and --jobs >= 1")
    payload = run(args)
    print(f"{len(payload['records'])} cells in {args.json}; {payload['meta']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
