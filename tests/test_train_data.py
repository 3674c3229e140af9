"""Training data: which item each step sees, crops, and the embedded synthetic pairs."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unpaired.data import ProceduralPairs, StepSampler, permuted, random_crop


@given(st.integers(0, 50), st.integers(1, 20), st.integers(1, 5), st.integers(1, 4))
def test_ranks_partition_the_single_process_positions(start, steps, batch, world):
    single = list(StepSampler(start, start + steps, batch * world))
    ranks = [list(StepSampler(start, start + steps, batch, r, world)) for r in range(world)]
    assert sorted(sum(ranks, [])) == single == list(range(start * batch * world, (start + steps) * batch * world))
    # resuming at any step continues the same sequence
    assert list(StepSampler(0, start + steps, batch)) [start * batch:] == list(StepSampler(start, start + steps, batch))


@given(st.integers(0, 1000), st.integers(1, 30), st.integers(0, 4))
def test_each_epoch_is_a_permutation(seed, n, epoch):
    items = [permuted(seed, n, epoch * n + k) for k in range(n)]
    assert sorted(items) == list(range(n))


def test_epochs_differ():
    assert [permuted(0, 20, k) for k in range(20)] != [permuted(0, 20, 20 + k) for k in range(20)]


@settings(max_examples=20)
@given(st.integers(0, 10 ** 6), st.integers(8, 40), st.integers(8, 40))
def test_crop_is_shared_and_in_bounds(p, h, w):
    a = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    ca, cb = random_crop([a, a * 2], 8, seed=3, p=p)
    assert ca.shape == (1, 8, 8) and torch.equal(cb, ca * 2)
    # the crop is a contiguous window of the source (possibly mirrored)
    flat = ca[0].flatten().long()
    rows = flat.view(8, 8) // w
    assert (rows == rows[:, :1]).all() and (rows[1:, 0] - rows[:-1, 0] == 1).all()


def test_synthetic_pairs_are_pure_functions_of_index():
    ds = ProceduralPairs(seed=5, size=24)
    a = [ds[i] for i in (3, 1, 3)]
    assert torch.equal(a[0]["blur"], a[2]["blur"]) and not torch.equal(a[0]["sharp"], a[1]["sharp"])
    assert torch.equal(ProceduralPairs(seed=5, size=24)[1]["blur"], a[1]["blur"])
    assert not torch.equal(ProceduralPairs(seed=6, size=24)[1]["sharp"], a[1]["sharp"])


def test_synthetic_pairs_shapes_ranges_and_kernel():
    ds = ProceduralPairs(seed=0, size=32)
    for i in range(4):
        item = ds[i]
        assert item["blur"].shape == item["sharp"].shape == (3, 32, 32)
        assert 0 <= item["blur"].min() and item["blur"].max() <= 1
        k = item["kernel"]
        assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
        # centred: the kernel's centre of mass is the centre pixel (no shift between blur and sharp)
        ys, xs = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
        assert abs(float((k * xs).sum()) - k.shape[1] // 2) < 0.05
        assert abs(float((k * ys).sum()) - k.shape[0] // 2) < 0.05
        assert not torch.equal(item["blur"], item["sharp"])
