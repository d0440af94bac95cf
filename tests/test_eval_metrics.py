"""Improved precision/recall and the histogram-only prior baseline of `vqgen evaluate` (vqgen.eval.metrics)."""

from __future__ import annotations

import math

import pytest
import torch

from vqgen.eval.metrics import knn_radii, precision_recall
from vqgen.measures import histogram_bits_per_code


def blob(n: int, centre: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return centre + scale * torch.randn(n, centre.shape[0], generator=generator, dtype=torch.float64)


def test_identical_sets_have_precision_and_recall_one():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_well_separated_sets_have_precision_and_recall_zero():
    g = torch.Generator().manual_seed(1)
    real, fake = blob(200, torch.zeros(4), g), blob(200, torch.full((4,), 50.0), g)
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_samples_collapsed_onto_one_real_mode_are_precise_but_miss_the_others():
    g = torch.Generator().manual_seed(2)
    centres = 20 * torch.eye(5, 2 + 3, dtype=torch.float64)  # five modes far apart
    real = torch.cat([blob(100, c, g) for c in centres])
    fake = blob(300, centres[0], g)  # every sample from the first mode
    precision, recall = precision_recall(real, fake)
    assert precision > 0.8  # a fresh real set of all five modes gets about 0.9 here
    assert 0.1 < recall <= 0.2  # at most the first mode's share of the real points


def test_chunked_distances_give_the_same_answer():
    g = torch.Generator().manual_seed(3)
    real, fake = blob(150, torch.zeros(3), g), blob(120, torch.full((3,), 0.7), g)
    whole = precision_recall(real, fake, chunk=10_000)
    assert precision_recall(real, fake, chunk=7) == whole
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0  # partly overlapping sets
    direct = torch.cdist(real, real).sort(1).values[:, 3]  # the 3rd neighbour after the point itself
    assert torch.allclose(knn_radii(real, 3, chunk=16), direct)


def test_uniform_histogram_costs_log2_k_bits_per_code():
    k = 16
    train = torch.arange(k).repeat(5).reshape(10, 2, 4)  # every code 5 times, as (N, h, w) maps
    val = torch.randint(k, (7, 2, 4), generator=torch.Generator().manual_seed(4))
    assert histogram_bits_per_code(train, val, k) == pytest.approx(math.log2(k), rel=1e-12)


def test_histogram_baseline_matches_a_hand_computation():
    # counts [3, 1, 0], add-one: p = [4/7, 2/7, 1/7]; val codes 0 and 2
    got = histogram_bits_per_code(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 2]), 3)
    assert got == pytest.approx((math.log2(7 / 4) + math.log2(7)) / 2, rel=1e-12)


def test_reconstruction_coverage_is_the_floor_for_perfect_reconstructions_and_low_for_collapsed_ones():
    from vqgen.eval.sections import reconstruction_coverage

    g = torch.Generator().manual_seed(3)
    real = torch.cat([blob(100, torch.zeros(4), g), blob(100, torch.full((4,), 8.0), g)])
    perfect = reconstruction_coverage(real.clone(), real, seed=0)
    assert (perfect["precision"], perfect["recall"]) == (perfect["floor_precision"], perfect["floor_recall"])
    assert perfect["floor_recall"] > 0.8
    # every image decoded to (nearly) the first mode's centre: precise, but half the real images uncovered
    collapsed = reconstruction_coverage(blob(200, torch.zeros(4), g, scale=0.3), real, seed=0)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.5
    assert reconstruction_coverage(real.flip(0), real, seed=0) != reconstruction_coverage(real.flip(0), real, seed=1)
