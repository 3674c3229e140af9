"""The counter-based RNG: item i depends only on (seed, i), bits match a pure-Python reference."""

import contextlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth import rng


def _reference_word(seed: int, index: int, stream: int, element: int) -> int:
    """The generator's definition written with Python ints, independently of the torch code."""
    mask = (1 << 64) - 1
    golden = 0x9E3779B97F4A7C15
    mix = rng._python_mix
    key = mix(mix(seed) ^ mix(((stream + 1) * golden) & mask))
    item = mix((index * golden + key) & mask)
    return mix((item + (element + 1) * golden) & mask)


@given(seed=st.integers(0, 2**63 - 1), index=st.integers(0, 2**40), stream=st.integers(0, 1000),
       element=st.integers(0, 20))
@settings(max_examples=50, deadline=None)
def test_bits_match_python_reference(seed, index, stream, element):
    words = rng.bits(seed, torch.tensor([index]), (21,), stream)
    got = int(words[0, element]) & ((1 << 64) - 1)
    assert got == _reference_word(seed, index, stream, element)


@given(seed=st.integers(0, 2**63 - 1), index=st.integers(0, 2**40), stream=st.integers(0, 1000),
       element=st.integers(0, 20))
@settings(max_examples=50, deadline=None)
def test_uniform_and_normal_draws_match_their_definition_in_python(seed, index, stream, element):
    """uniform is the word's top 24 bits over 2**24; normal is Box-Muller with the top 24 bits (+ 1/2)
    for the radius and the low 24 bits for an angle over the whole circle, written out with Python's
    math from the reference word. A Box-Muller whose angle covers half the circle draws the same
    distribution (the statistical tests pass it) but other values for every seed."""
    word = _reference_word(seed, index, stream, element)
    u = rng.uniform(seed, torch.tensor([index]), (21,), stream, dtype=torch.float64)[0, element]
    assert float(u) == (word >> 40) / 2 ** 24
    z = rng.normal(seed, torch.tensor([index]), (21,), stream, dtype=torch.float64)[0, element]
    radius = math.sqrt(-2.0 * math.log(((word >> 40) + 0.5) / 2 ** 24))
    expected = radius * math.cos(2.0 * math.pi * (word & 0xFFFFFF) / 2 ** 24)
    assert float(z) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(seed=st.integers(0, 10**9), start=st.integers(0, 1000), n=st.integers(1, 20))
@settings(max_examples=30, deadline=None)
def test_item_depends_only_on_seed_and_index(seed, start, n):
    whole = rng.normal(seed, rng.as_index(range(start + n)), (4, 3), stream=2)
    part = rng.normal(seed, rng.as_index(range(start, start + n)), (4, 3), stream=2)
    assert torch.equal(whole[start:], part)


def test_streams_and_seeds_differ():
    idx = rng.as_index(8)
    a = rng.uniform(1, idx, (16,), stream=0)
    assert not torch.equal(a, rng.uniform(1, idx, (16,), stream=1))
    assert not torch.equal(a, rng.uniform(2, idx, (16,), stream=0))


def test_distributions():
    idx = rng.as_index(200_000)
    u = rng.uniform(3, idx)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    z = rng.normal(3, idx)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    assert abs(float((z.abs() < 1).float().mean()) - math.erf(1 / math.sqrt(2))) < 0.005
    lu = torch.log(rng.log_uniform(3, idx, 1e-3, 1e-1))
    assert abs(float(lu.mean()) - (math.log(1e-3) + math.log(1e-1)) / 2) < 0.02
    r = rng.range_uniform(3, idx, -2.0, 5.0)
    assert float(r.min()) >= -2.0 and float(r.max()) < 5.0


def test_rejects_bad_arguments():
    import pytest
    with pytest.raises(ValueError, match="seed"):
        rng.uniform(-1, rng.as_index(3))
    with pytest.raises(ValueError, match="low <= high"):
        rng.range_uniform(0, rng.as_index(3), 2.0, 1.0)


def test_words_past_the_first_block_match_python_reference():
    # One item's words are made in blocks on the CPU; the counters must run on across blocks.
    numel = 2 * rng._BLOCK + 70
    words = rng.bits(5, torch.tensor([3]), (numel,), 4)
    for element in (0, rng._BLOCK - 1, rng._BLOCK, rng._BLOCK + 1, numel - 1):
        assert int(words[0, element]) & ((1 << 64) - 1) == _reference_word(5, 3, 4, element)


@contextlib.contextmanager
def _block(size):
    saved, rng._BLOCK = rng._BLOCK, size
    try:
        yield
    finally:
        rng._BLOCK = saved


@given(n=st.integers(1, 7), numel=st.integers(1, 3000), block=st.sampled_from([64, 128, 1000, 4096]))
@settings(max_examples=25, deadline=None)
def test_blocks_do_not_change_the_draws(n, numel, block):
    """The block size only changes how much is computed per call, never a value (float64 too)."""
    idx = rng.as_index(range(10, 10 + n))
    with _block(1 << 40):  # everything in one block
        whole = rng.normal(2, idx, (numel,), 3, dtype=torch.float64)
    with _block(block):
        blocked = rng.normal(2, idx, (numel,), 3, dtype=torch.float64)
    assert torch.equal(whole, blocked)


def test_seeds_are_checked_in_one_place():
    """Seeds of 2**63 or more would alias smaller ones (the generator works modulo 2**64, component
    seeds keep 63 bits); floats and bools are not seeds. Integer NumPy and torch scalars are."""
    import numpy as np
    import pytest
    idx = rng.as_index(4)
    for big in (2**63, 2**64, 5 + 2**64):
        with pytest.raises(ValueError, match=r"seed.*\[0, 2\*\*63\)"):
            rng.uniform(big, idx)
    # (np.bool_ explicitly: NumPy 1.x still takes it as an index, with only a DeprecationWarning)
    for bad in (1.0, 0.5, "3", True, None, torch.tensor(1.0), torch.tensor([1, 2]), np.float64(2.0), np.bool_(True),
                torch.tensor(True)):
        with pytest.raises(TypeError, match="seed must be an integer"):
            rng.uniform(bad, idx)
    expected = rng.uniform(7, idx)
    for same in (np.int64(7), np.uint8(7), torch.tensor(7), torch.tensor([7], dtype=torch.int32)):
        assert torch.equal(rng.uniform(same, idx), expected)
    assert torch.equal(rng.bits(2**63 - 1, idx, (), 0), rng.bits(2**63 - 1, idx, (), 0))
    assert rng.check_seed(np.int32(3)) == 3 and type(rng.check_seed(np.int32(3))) is int
    with pytest.raises(ValueError, match="index_seed"):
        rng.check_seed(-1, "index_seed")


def test_item_indices_are_non_negative_integers():
    # A float index used to be truncated (0.7 -> item 0's draws) and a negative one drawn silently.
    assert rng.as_index(3).tolist() == rng.as_index(np.int64(3)).tolist() == [0, 1, 2]
    assert rng.as_index([4, 1]).tolist() == rng.as_index(np.array([4, 1], dtype=np.uint8)).tolist() == [4, 1]
    for bad, error in (([0.7], TypeError), (torch.tensor([1.0]), TypeError), ([True], TypeError),
                       ([2, -1], ValueError), (range(-2, 1), ValueError),
                       # (torch's words, naming nothing: "new(): invalid data type 'str'", "Could not infer dtype of
                       # NoneType", "Overflow when unpacking long long"; a uint64 2**63 wrapped round to -2**63)
                       ("12", TypeError), (None, TypeError), ([2**63], TypeError),
                       (np.array([2**63], dtype=np.uint64), ValueError)):
        with pytest.raises(error, match="item indices must be"):
            rng.as_index(bad)
    with pytest.raises(ValueError, match=r"^a number of items must be >= 0, got -3$"):  # (was no items)
        rng.as_index(-3)
    with pytest.raises(ValueError, match=r"item indices must be < 2\*\*63, got 9223372036854775808$"):
        rng.as_index(np.array([2**63], dtype=np.uint64))
    from blursynth.sensor import SensorModel, add_noise
    params = SensorModel().sample(1, seed=0)
    with pytest.raises(TypeError, match="item indices must be integers"):
        add_noise(torch.full((1, 3, 4, 4), 0.5), params, seed=0, index=[0.7])


def test_no_item_indices_is_an_empty_batch():
    # [] is how a caller spells an empty batch (blur and deconvolution take one); torch makes it a
    # float32 tensor, which the integer check must not take for float indices
    for empty in ([], (), np.array([], dtype=np.int64), range(0)):
        idx = rng.as_index(empty)
        assert idx.dtype == torch.int64 and idx.shape == (0,)
    from blursynth.sensor import SensorModel, add_noise
    params = SensorModel().sample_at(torch.arange(0), 0)
    assert add_noise(torch.zeros(0, 3, 4, 4), params, seed=0, index=[]).shape == (0, 3, 4, 4)


def test_range_uniform_stays_below_high_after_rounding_to_float32(monkeypatch):
    # The largest draw, 1 - 2**-24, maps to 2 - 2**-24 on [1, 2), which float32 rounds to 2.0; and
    # 0.1 is not a float32: its nearest one lies above 0.1.
    top = 1.0 - 2.0 ** -24
    real_uniform = rng.uniform
    monkeypatch.setattr(rng, "uniform", lambda *a, **k: torch.full_like(real_uniform(*a, **k), top))
    idx = rng.as_index(2)
    for low, high in ((1.0, 2.0), (0.5, 1.5), (0.0, 3.0), (0.0, 0.1)):
        r = rng.range_uniform(0, idx, low, high)
        assert r.dtype == torch.float32 and float(r.max()) < high, (low, high, float(r.max()))
    monkeypatch.setattr(rng, "uniform", lambda *a, **k: torch.zeros_like(real_uniform(*a, **k)))
    r = rng.range_uniform(0, idx, 0.1, 0.2)  # float32(0.1) lies above 0.1, float32(2.6) below 2.6
    assert float(r.min()) >= 0.1
    assert float(rng.range_uniform(0, idx, 2.6, 3.0).min()) >= 2.6


def test_log_uniform_stays_inside_its_closed_range_after_rounding_to_float32(monkeypatch):
    # float32(1e-4) lies below 1e-4 and float32(0.012) above 0.012 (the default recipe's shot noise):
    # the draws at the ends of the range rounded past them.
    real_uniform = rng.uniform
    idx = rng.as_index(2)
    for u, low, high in ((0.0, 1e-4, 0.012), (1.0 - 2.0 ** -53, 1e-4, 0.012)):
        monkeypatch.setattr(rng, "uniform", lambda *a, u=u, **k: torch.full_like(real_uniform(*a, **k), u))
        r = rng.log_uniform(0, idx, low, high)
        assert r.dtype == torch.float32 and low <= float(r.min()) <= float(r.max()) <= high, (u, low, high, r)
    monkeypatch.setattr(rng, "uniform", real_uniform)
    assert float(rng.log_uniform(0, idx, 0.012, 0.012)[0]) == float(np.float32(0.012))  # one value: as rounded


def test_uniform_ranges_refuse_nan_and_infinite_bounds():
    import pytest
    idx = rng.as_index(3)
    for low, high in ((math.nan, 1.0), (0.0, math.nan), (0.0, math.inf), (-math.inf, 0.0)):
        with pytest.raises(ValueError, match="finite low <= high"):
            rng.range_uniform(0, idx, low, high)
    for low, high in ((1.0, math.inf), (math.nan, 1.0)):
        with pytest.raises(ValueError, match="low <= high"):
            rng.log_uniform(0, idx, low, high)


def test_ranges_reach_the_last_int64_item():
    # torch.arange refused the stop 2**63 that a range ending at the largest valid index has
    # ("value cannot be converted to type int64_t"), e.g. RandomWalk2D().sample(3, start=2**63 - 3)
    top = 2**63 - 1
    for r in (range(top - 2, top + 1), range(top, top - 3, -1), range(top - 4, top + 1, 2), range(top, top + 1)):
        assert rng.as_index(r).tolist() == list(r)
        assert torch.equal(rng.bits(1, rng.as_index(r), (2,), 0), rng.bits(1, torch.tensor(list(r)), (2,), 0))
    for r in (range(5), range(3, 10, 3), range(9, -1, -2), range(4, 4), range(0), range(7, 2), range(2, 3, 10)):
        assert rng.as_index(r).tolist() == list(r), r
    with pytest.raises(ValueError, match=r"item indices must be < 2\*\*63"):
        rng.as_index(range(top, top + 2))
    with pytest.raises(ValueError, match="item indices must be >= 0"):
        rng.as_index(range(3, -2, -1))


def test_draws_pass_statistical_tests():
    """KS tests, serial pairs, correlations between streams, seeds and items, unique words and
    balanced bits, with fixed seeds: each check fails on a generator broken in one way (the
    Box-Muller radius and angle from the same bits; the stream or the seed's high bits left out of
    the key; the item counter added to the element counter unmixed, which makes item i's element
    e + 1 item i + 1's element e; one round of the SplitMix64 finaliser instead of three)."""
    from scipy import stats
    idx = rng.as_index(range(1000, 1000 + 100_000))
    u = rng.uniform(123, idx, (4,), stream=2, dtype=torch.float64).numpy()
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-4
    z = rng.normal(123, idx, (4,), stream=3, dtype=torch.float64).numpy()
    assert np.isfinite(z).all() and stats.kstest(z.ravel(), "norm").pvalue > 1e-4
    # pairs of neighbouring elements and of neighbouring items fill the unit square evenly
    for name, a, b in (("elements", u[:, 0], u[:, 1]), ("items", u[:-1, 0], u[1:, 0])):
        counts = np.histogram2d(a, b, bins=16, range=[[0, 1], [0, 1]])[0]
        assert stats.chisquare(counts.ravel()).pvalue > 1e-4, name
    others = {"stream": rng.uniform(123, idx, (4,), stream=3, dtype=torch.float64),
              "seed": rng.uniform(124, idx, (4,), stream=2, dtype=torch.float64),
              "seed's high bits": rng.uniform(123 + 2**62, idx, (4,), stream=2, dtype=torch.float64),
              "item + 1 of seed + 1": rng.uniform(124, idx + 1, (4,), stream=2, dtype=torch.float64),
              "element + 1": rng.uniform(123, idx, (5,), stream=2, dtype=torch.float64)[:, 1:]}
    for name, v in others.items():  # 5 standard errors of a correlation of 400,000 pairs
        assert abs(np.corrcoef(u.ravel(), v.numpy().ravel())[0, 1]) < 5 / math.sqrt(u.size), name
    # no 64-bit word repeats across items, elements, streams and seeds (overlapping counters would)
    words = torch.cat([rng.bits(s, rng.as_index(2000), (64,), t).ravel() for s in (0, 1) for t in (0, 1)])
    assert len(torch.unique(words)) == len(words)
    # every bit of the words is balanced, and so is each bit of the XOR of neighbouring elements'
    # and neighbouring items' words (a weak mix of the counters leaves some biased)
    w = rng.bits(9, rng.as_index(4000), (64,), 5)
    for name, x in (("bits", w), ("elements", w[:, 1:] ^ w[:, :-1]), ("items", w[1:] ^ w[:-1])):
        ones = torch.stack([((x >> b) & 1).sum() for b in range(64)]).double()
        assert float(((ones - x.numel() / 2) / math.sqrt(x.numel() / 4)).abs().max()) < 5, name


def test_extreme_words_give_finite_draws_inside_their_ranges(monkeypatch):
    # The Box-Muller radius takes the word's top 24 bits + 0.5: a word of zeros must not give
    # log(0); all ones must give a uniform below 1 in float32 too. The tails end at
    # sqrt(2 * 25 * ln 2) = 5.89 standard deviations (P(|z| > 5.89) is 4e-9).
    words = torch.tensor([0, -1, 0xFFFFFF, (1 << 40) - 1, 1 << 40, -(1 << 40)], dtype=torch.int64)
    z = rng._box_muller(words.clone())
    assert torch.isfinite(z).all() and float(z.abs().max()) <= math.sqrt(50 * math.log(2)) + 1e-12
    assert float(z.abs().max()) > 5.8  # (the zero word is the far tail)
    monkeypatch.setattr(rng, "bits", lambda *a, **k: words.view(1, -1))
    for dtype in (torch.float32, torch.float64):
        u = rng.uniform(0, rng.as_index(1), dtype=dtype)
        assert float(u.min()) == 0.0 and float(u.max()) == 1 - 2.0 ** -24 and float(u.max()) < 1.0


def test_an_item_is_the_same_in_batches_of_any_size():
    # From 512 items up a block holds 64 of each item's elements and spans torch's parallel grain;
    # alone, an item's 130 elements are one block: the float64 Box-Muller values must not change.
    for n in (1, 3, 600, 1500):
        idx = rng.as_index(range(7, 7 + n))
        for draw in (rng.normal, rng.uniform):
            whole = draw(5, idx, (2, 65), 1, dtype=torch.float64)
            for k in sorted({0, n // 2, n - 1}):
                assert torch.equal(whole[k], draw(5, idx[k:k + 1], (2, 65), 1, dtype=torch.float64)[0]), (n, k)


@pytest.mark.parametrize("module", ["blursynth.scenes", "blursynth.sensor", "unpaired.data"])
def test_each_quantity_of_a_sampler_draws_its_own_stream(module):
    """A sampler names the stream of each quantity it draws by a module constant ``_S_NAME``; two names
    on one number would draw the same words, so the two quantities would move together (crops only
    along the diagonal, the defocus blur tied to the focus depth, read noise to shot noise)."""
    import importlib
    mod = importlib.import_module(module)
    streams = {name: value for name, value in vars(mod).items() if name.startswith("_S_") and rng.is_integer(value)}
    assert len(streams) >= 5
    shared = {v: [k for k in streams if streams[k] == v] for v in streams.values()}
    assert len(set(streams.values())) == len(streams), {v: k for v, k in shared.items() if len(k) > 1}


def test_plain_index_turns_only_a_0d_integer_tensor_into_an_int():
    """A 0-d integer tensor (``for i in torch.arange(n)``) selects one item as an int does; anything else is
    left as it is: a 0-d bool or float tensor is no item number (True is not item 1), and an index tensor
    of one or more items still selects those items."""
    for zero_d in (torch.tensor(3), torch.tensor(-1, dtype=torch.int32), torch.tensor(2, dtype=torch.uint8)):
        got = rng.plain_index(zero_d)
        assert type(got) is int and got == int(zero_d)
    for kept in (torch.tensor(True), torch.tensor(1.0), torch.tensor([1]), torch.tensor([2, 0]), 2, slice(1, None),
                 [0, 1]):
        assert rng.plain_index(kept) is kept
    from blursynth.trajectory import CameraShake
    shake = CameraShake().sample(3, seed=0)
    picked = shake[torch.tensor([2, 0])]
    assert len(picked) == 2 and torch.equal(picked.rotation, shake.rotation[[2, 0]])


def test_range_and_log_uniform_draw_on_the_stream_they_are_given():
    """``range_uniform`` and ``log_uniform`` map the ``uniform`` draws of their own stream: a range drawn
    on the words of stream 0 whatever stream it names would move together with every other quantity
    drawn on stream 0 (an exposure tied to a focal length)."""
    idx = rng.as_index(range(3, 40))
    for stream in (0, 3, 7):
        u = rng.uniform(4, idx, (5,), stream, dtype=torch.float64)
        # on [0, 1) the 24-bit uniform draws are float32 values already: nothing to round
        assert torch.equal(rng.range_uniform(4, idx, 0.0, 1.0, (5,), stream).double(), u), stream
        # log of a draw on [1, 4] over log 4 is the uniform draw, to float32 rounding
        lu = rng.log_uniform(4, idx, 1.0, 4.0, (5,), stream).double()
        assert torch.allclose(torch.log(lu) / math.log(4.0), u, atol=1e-6), stream
    assert not torch.equal(rng.normal(4, idx, (5,), 1), rng.normal(4, idx, (5,), 2))


def test_a_draw_at_the_lower_bound_stays_on_it(monkeypatch):
    """A bound float32 holds exactly is a value of the range ([low, high) and [low, high] both take
    low): the smallest draw must give it, not be moved one float32 step inside."""
    real_uniform = rng.uniform
    monkeypatch.setattr(rng, "uniform", lambda *a, **k: torch.zeros_like(real_uniform(*a, **k)))
    idx = rng.as_index(3)
    for low, high in ((1.0, 2.0), (-0.5, 0.25), (0.0, 3.0)):
        assert rng.range_uniform(0, idx, low, high).tolist() == [low] * 3, (low, high)
    for low, high in ((0.25, 4.0), (1.0, 8.0)):
        assert rng.log_uniform(0, idx, low, high).tolist() == [low] * 3, (low, high)
