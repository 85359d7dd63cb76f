"""The evidence benchmark (benchmarks/dropin_models.py): its metrics and loss, the pairing of the
variants, determinism per seed, the --quick run with its figures, and the page's tables coming from
the results file."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import dropin_models as D  # noqa: E402

RESULTS = os.path.join(ROOT, "docs", "data", "evidence.json")


def test_matching_metrics_perfect_and_chance():
    """Descriptors equal to the pixels: identical pairs are found first (mAP 1, FPR95 0); pairs whose
    partners are shuffled are found at about chance."""
    torch.manual_seed(0)
    a = torch.rand(64, 1, 32, 32)
    b64 = torch.nn.functional.pad(a, (16, 16, 16, 16))  # the 64 x 64 neighbourhood: the patch in its centre
    data = {"test": (a, b64), "size": 32}
    perfect = D.evaluate("tfeat", nn.Flatten(), data)
    assert perfect == {"map": 1.0, "fpr95": 0.0}
    shuffled = D.evaluate("tfeat", nn.Flatten(), data, test_b=b64[torch.randperm(64)])
    assert shuffled["map"] < 0.3 and shuffled["fpr95"] > 0.5


def test_hardest_triplet_loss():
    """Zero when every partner is the nearest by more than the margin; the margin when all
    descriptors coincide; finite gradients."""
    apart = torch.eye(8) * 10
    assert D.hardest_triplet_loss(apart, apart).item() == pytest.approx(0.0, abs=1e-5)
    same = torch.ones(8, 4, requires_grad=True)
    loss = D.hardest_triplet_loss(same, same)
    assert loss.item() == pytest.approx(1.0, abs=1e-5)
    loss.backward()
    assert torch.isfinite(same.grad).all()


def test_paired_difference_and_test():
    d, p = D.paired([0.9, 0.8, 0.85], [0.8, 0.7, 0.80])
    assert d == pytest.approx(0.0833333, abs=1e-6) and 0 < p < 0.1
    d, p = D.paired([0.9, 0.8], [0.8, 0.7])  # the same difference for every seed: no t-test
    assert d == pytest.approx(0.1) and p != p


@pytest.mark.parametrize("task", ["digits", "hardnet"])
def test_variants_share_everything_but_the_first_layer(task):
    """The paired comparison: for one seed every variant has the same body; the first layer is the
    variant's (a GaborConv2d with the right options, same kernel and padding as the conv it replaces)."""
    from gaborlayer import GaborConv2d

    data = D.task_data(task, True)
    models = {v: D.make_model(task, v, 3, data) for v in D.VARIANTS}
    first = D.first_layer_name(models["conv"])
    body = {k: t for k, t in models["conv"].state_dict().items() if not k.startswith(first + ".")}
    conv = models["conv"].get_submodule(first)
    for variant, model in models.items():
        layer = model.get_submodule(first)
        assert D.first_layer_name(model) == first
        assert isinstance(layer, GaborConv2d) == (variant != "conv")
        assert (layer.kernel_size, layer.padding, layer.out_channels) == (conv.kernel_size, conv.padding,
                                                                           conv.out_channels)
        state = model.state_dict()
        assert all(torch.equal(state[k], t) for k, t in body.items()), variant
    assert models["magnitude"].get_submodule(first).output == "magnitude"
    assert "theta" not in dict(models["fixed_theta"].get_submodule(first).named_parameters())
    assert "theta" in dict(models["gabor"].get_submodule(first).named_parameters())


def test_a_cell_is_deterministic_and_converts_exactly():
    one = D.run_cell("texture", "gabor", 1.0, 1, True)
    two = D.run_cell("texture", "gabor", 1.0, 1, True)
    assert one["clean"] == two["clean"] and one["robustness"] == two["robustness"]
    assert one["final_loss"] == two["final_loss"]
    assert one["to_conv2d"]["max_rel_diff"] < 1e-6
    assert one["first_params"] == 16 * 5 + 16 and one["model_params"] < 15_046  # nn.Conv2d's model: 15,046


def test_training_subsets_have_every_class_and_are_paired_and_nested():
    """1% of the digits has each of the 10 classes (a plain random 1%, 13 of 1,257, misses some);
    the subset depends on the seed only, and a smaller fraction's is part of a larger one's."""
    labels = D.task_data("digits", False)["train"][1]
    small = D.training_subset("digits", labels, 0.01, 0)
    assert sorted(labels[small].tolist()) == list(range(10))
    assert torch.equal(small, D.training_subset("digits", labels, 0.01, 0))
    assert not torch.equal(small, D.training_subset("digits", labels, 0.01, 1))
    for seed in range(3):
        sets = [set(D.training_subset("digits", labels, s, seed).tolist()) for s in (0.01, 0.05, 0.25, 1.0)]
        assert all(a < b for a, b in zip(sets, sets[1:])) and len(sets[-1]) == len(labels)
    pairs = torch.zeros(3000, dtype=torch.long)  # the descriptors: pairs, no classes
    assert len(D.training_subset("tfeat", pairs, 0.01, 0)) == 30
    assert len(D.training_subset("tfeat", pairs, 0.0001, 0)) == 2


def test_corruptions_change_the_input_and_keep_its_range():
    x = D.task_data("digits", True)["test"][0][:8]
    for kind, strengths in D.CORRUPTIONS.items():
        for s in strengths:
            y = D.corrupt(x, kind, s, seed=0)
            assert y.shape == x.shape and not torch.equal(y, x), (kind, s)
            assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6, (kind, s)
    assert torch.equal(D.corrupt(x, "noise", 0.1, seed=5), D.corrupt(x, "noise", 0.1, seed=5))
    with pytest.raises(ValueError, match="kind must be one of"):
        D.corrupt(x, "fog", 1.0, seed=0)


def test_quick_run_writes_results_figures_and_tables(tmp_path):
    path, images = tmp_path / "evidence.json", tmp_path / "images"
    script = os.path.join(ROOT, "benchmarks", "dropin_models.py")
    result = subprocess.run([sys.executable, script, "--quick", "--json", str(path)],  # ~40 s of CPU
                            check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = json.loads(path.read_text())["records"]
    assert len(records) == len(D.TASKS) * len(D.VARIANTS) * 2  # 2 seeds, all training items
    for r in records.values():
        assert set(r["robustness"]) == set(D.CORRUPTIONS)
        if r["variant"] in ("gabor", "fixed_theta", "groups"):
            assert r["to_conv2d"]["max_rel_diff"] < 1e-6
    result = subprocess.run([sys.executable, script, "--plot", "--json", str(path), "--images", str(images)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in images.iterdir()] == ["evidence_robustness.png"]  # one size: no size plot
    assert 10_000 < (images / "evidence_robustness.png").stat().st_size < 600_000
    for task in D.TASKS:
        assert f"**{task}**" in result.stdout


def test_fill_page_replaces_only_the_marked_tables():
    page = ("intro\n<!-- evidence:size -->\nold\n<!-- /evidence:size -->\nmiddle\n"
            "<!-- evidence:cost -->x<!-- /evidence:cost -->end")
    filled = D.fill_page(page, {"size": "| a |", "cost": "| b |", "robustness": "| c |"})
    assert filled == ("intro\n<!-- evidence:size -->\n\n| a |\n\n<!-- /evidence:size -->\nmiddle\n"
                      "<!-- evidence:cost -->\n\n| b |\n\n<!-- /evidence:cost -->end")
    assert D.fill_page(filled, {"size": "| a |", "cost": "| b |"}) == filled


@pytest.mark.skipif(not os.path.exists(RESULTS), reason="no published results")
def test_the_page_shows_the_results_file():
    """docs/evidence.md holds every table the results file gives, as ``--plot`` writes them."""
    with open(RESULTS) as f:
        parts = D.tables(json.load(f))
    with open(os.path.join(ROOT, "docs", "evidence.md")) as f:
        page = f.read()
    assert all(f"<!-- evidence:{name} -->" in page for name in parts)
    assert D.fill_page(page, parts) == page, "run python benchmarks/dropin_models.py --plot"


@pytest.mark.skipif(not os.path.exists(RESULTS), reason="no published results")
def test_the_published_figures_are_drawn(tmp_path):
    D.report(RESULTS, str(tmp_path), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence_robustness.png", "evidence_size.png"]
    assert all(20_000 < p.stat().st_size < 600_000 for p in tmp_path.iterdir())
