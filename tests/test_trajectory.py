"""Trajectory models: shapes, reproducibility, and the physics their parameters promise."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth.trajectory import CameraShake, RandomWalk2D, Trajectory

SETTINGS = settings(max_examples=15, deadline=None)
SMALL_WALK = RandomWalk2D(steps=200, samples=200)


@pytest.mark.parametrize("model", [CameraShake(), SMALL_WALK])
def test_shapes_times_and_params(model):
    traj = model.sample(9, seed=1)
    assert isinstance(traj, Trajectory) and len(traj) == 9
    steps = model.n_samples
    assert traj.t.shape == (9, steps) and (traj.t[:, 0] == 0).all()
    assert (traj.t[:, 1:] >= traj.t[:, :-1]).all()
    for value in traj.params.values():
        assert value.shape == (9,) and torch.isfinite(value).all()
    if traj.is_2d:
        assert traj.path_px.shape == (9, steps, 2) and (traj.path_px[:, 0] == 0).all()
    else:
        assert traj.rotation.shape == traj.translation.shape == (9, steps, 3)
        assert (traj.rotation[:, 0] == 0).all() and (traj.translation[:, 0] == 0).all()
        lo, hi = model.exposure_s
        assert ((traj.exposure_s >= lo * (1 - 1e-6)) & (traj.exposure_s <= hi * (1 + 1e-6))).all()
        assert torch.allclose(traj.exposure_s, traj.params["exposure_s"])


@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**6), n=st.integers(1, 9), pick=st.integers(0, 8))
@SETTINGS
def test_item_depends_only_on_seed_and_index(seed, start, n, pick):
    pick = pick % n
    for model in (CameraShake(), RandomWalk2D(steps=30, samples=20)):
        batch = model.sample(n, seed=seed, start=start)
        alone = model.sample(1, seed=seed, start=start + pick)
        for name in ("t", "rotation", "translation", "path_px"):
            a, b = getattr(batch, name), getattr(alone, name)
            assert (a is None and b is None) or torch.equal(a[pick:pick + 1], b)
        for key, value in batch.params.items():
            assert torch.equal(value[pick:pick + 1], alone.params[key])


def test_long_random_walk_item_does_not_depend_on_its_batch():
    """The 2000-step walk magnifies a last-bit difference into ~1e-7 px: with complex arithmetic
    (whose vectorised and scalar code round differently) item 149 of seed 0 at this length came out
    differently drawn in a batch of 300 and alone, or in the windows that hold it."""
    model = RandomWalk2D(length_px=(60.9375, 60.9375))  # the CLI's walk at --kernel-size 65
    whole = model.sample(300, seed=0).path_px
    for start, n in [(s, 1) for s in range(145, 153)] + [(147, 3), (148, 2)]:
        assert torch.equal(model.sample(n, seed=0, start=start).path_px, whole[start:start + n]), (start, n)


def test_automatic_sample_count_resolves_the_tremor():
    assert CameraShake().n_samples == 32
    assert CameraShake(exposure_s=(0.1, 1.0)).n_samples == 121  # 10 per 12 Hz cycle over 1 s
    assert CameraShake(samples=7).sample(2).t.shape == (2, 7)


def test_seeds_differ():
    a, b = CameraShake().sample(4, seed=0), CameraShake().sample(4, seed=1)
    assert not torch.equal(a.rotation, b.rotation)


def test_default_shake_matches_the_one_over_f_rule():
    """Median RMS angular speed ~0.03 rad/s; at 1/50 s a 50 mm lens blurs about the 0.03 mm CoC."""
    traj = CameraShake().sample(4000, seed=0)
    speed = traj.params["rms_angular_speed_rad_s"].median()
    assert 0.02 < float(speed) < 0.045
    at_rule = CameraShake(exposure_s=(1 / 50, 1 / 50)).sample(4000, seed=0)
    angles = at_rule.rotation[..., :2]  # pitch and yaw move the image; roll does not at the centre
    extent_rad = (angles[:, :, None] - angles[:, None]).norm(dim=-1).amax((1, 2))
    blur_mm = extent_rad.median() * 50.0  # angle times focal length on the sensor
    assert 0.3 * 0.03 < float(blur_mm) < 3 * 0.03


def test_rotation_dominates_translation_for_normal_scenes():
    """At 2 m, the translation's image motion is much smaller than the rotation's (Whyte et al. 2012)."""
    traj = CameraShake().sample(500, seed=3)
    rot_px = traj.rotation[..., :2].norm(dim=-1).amax(1)  # radians ~ pixels / focal
    trans_px = (traj.translation[..., :2].norm(dim=-1) / 2.0).amax(1)  # metres / depth ~ pixels / focal
    assert float((trans_px / rot_px).median()) < 0.5


def test_tremor_oscillates_at_its_frequency():
    model = CameraShake(drift_rad_s=(1e-9, 1e-9), jerk_rad_s=(0, 0), tremor_hz=(10, 10), exposure_s=(1, 1),
                        samples=2001)
    traj = model.sample(8, seed=4)
    velocity = (traj.rotation[:, 1:, 1] - traj.rotation[:, :-1, 1]) / (traj.t[:, 1:] - traj.t[:, :-1])
    crossings = ((velocity[:, 1:] * velocity[:, :-1]) < 0).sum(1)
    assert ((crossings >= 19) & (crossings <= 21)).all()  # 10 Hz over 1 s: 20 sign changes


def test_camera_shake_starts_at_positive_zero():
    """Every sinusoid's integral is 0 at t = 0, and a sum of them must be +0.0 there, as a sum over the
    sinusoids (torch's, from +0) gave before they were laid out time-innermost: a -0.0 changed the
    bytes of the rotation and translation that ``blursynth generate`` writes to kernels.npz."""
    traj = CameraShake().sample(500, seed=3)
    for pose in (traj.rotation, traj.translation):
        assert torch.equal(pose[:, 0], torch.zeros_like(pose[:, 0]))
        assert not bool(torch.signbit(pose[:, 0]).any())


def test_drift_amplitude_is_its_rms_speed():
    model = CameraShake(drift_rad_s=(0.02, 0.02), tremor_rad_s=(1e-9, 1e-9), jerk_rad_s=(0, 0),
                        exposure_s=(20, 20), samples=4000)
    traj = model.sample(16, seed=5)
    ratio = traj.params["rms_angular_speed_rad_s"] / 0.02
    assert 0.85 < float(ratio.median()) < 1.15


def test_shutter_jerk_is_mostly_pitch():
    model = CameraShake(drift_rad_s=(1e-9, 1e-9), tremor_rad_s=(1e-9, 1e-9), jerk_rad_s=(0.05, 0.05),
                        exposure_s=(0.2, 0.2), samples=2001)
    traj = model.sample(200, seed=6)
    pitch = traj.rotation[..., 0].abs().amax(1)
    yaw = traj.rotation[..., 1].abs().amax(1)
    assert float((pitch > yaw).float().mean()) > 0.8
    # Peak angular speed at the shutter opening equals jerk_rad_s.
    v0 = (traj.rotation[:, 1] - traj.rotation[:, 0]).norm(dim=-1) / traj.t[:, 1]
    assert torch.allclose(v0, torch.full_like(v0, 0.05), rtol=0.02)


@given(length=st.floats(5, 80), seed=st.integers(0, 10**6))
@SETTINGS
def test_random_walk_has_the_requested_length(length, seed):
    model = RandomWalk2D(length_px=(length, length), steps=300, samples=300)
    traj = model.sample(4, seed=seed)
    travelled = (traj.path_px[:, 1:] - traj.path_px[:, :-1]).norm(dim=-1).sum(1)
    assert torch.allclose(travelled, torch.full_like(travelled, length), rtol=1e-3)


def test_random_walk_without_anxiety_is_a_straight_line():
    traj = RandomWalk2D(length_px=(30, 30), anxiety=(0, 0), steps=100, samples=50).sample(5, seed=2)
    end = traj.path_px[:, -1]
    assert torch.allclose(end.norm(dim=-1), torch.full((5,), 30.0), rtol=1e-4)
    assert (traj.params["big_shakes"] == 0).all()


def test_random_walk_partial_exposure_keeps_the_start_of_the_walk():
    full = RandomWalk2D(steps=400, samples=401).sample(6, seed=8)
    half = RandomWalk2D(steps=400, samples=201, exposure_fractions=(0.5,)).sample(6, seed=8)
    assert torch.allclose(half.path_px, full.path_px[:, :201], atol=1e-4)
    assert torch.allclose(half.exposure_s, torch.full((6,), 0.5))
    mixed = RandomWalk2D(steps=400, exposure_fractions=(0.01, 0.1, 0.5, 1.0)).sample(200, seed=1)
    assert torch.equal(mixed.params["exposure_fraction"].unique(), torch.tensor([0.01, 0.1, 0.5, 1.0]))


def test_random_walk_counts_the_impulsive_shakes_of_the_exposure_it_keeps():
    """big_shakes is "the number of impulsive shakes that happened": it counted those of the whole walk, the
    part a partial exposure discards too (a 1% exposure of 2000 steps keeps 20 steps, and was said to hold
    about 40). With no Gaussian kick and no pull the velocity changes only at a shake, which turns it by
    180 +- 29 degrees: the path's reversals are its shakes."""
    steps = 401
    walk = dict(length_px=(100.0, 100.0), anxiety=(0.1, 0.1), big_shake_probability=(0.2, 0.2),
                gaussian_shake=(0.0, 0.0), centripetal=(0.0, 0.0), steps=steps)
    full = RandomWalk2D(samples=steps, **walk).sample(8, seed=3)
    half = RandomWalk2D(samples=201, exposure_fractions=(0.5,), **walk).sample(8, seed=3)  # the first 200 moves

    def reversals(path):
        move = path[:, 1:] - path[:, :-1]
        return ((move[:, 1:] * move[:, :-1]).sum(-1) < 0).sum(1)
    for traj in (full, half):
        unseen = traj.params["big_shakes"] - reversals(traj.path_px.double())
        # (a shake at the very first step turns the initial velocity, which the path cannot show)
        assert ((unseen == 0) | (unseen == 1)).all(), traj.params["big_shakes"]
    assert (half.params["big_shakes"] < full.params["big_shakes"]).any()


def test_random_walk_impulsive_shakes_follow_their_probability():
    never = RandomWalk2D(big_shake_probability=(0, 0), steps=300).sample(10, seed=1)
    often = RandomWalk2D(big_shake_probability=(0.2, 0.2), anxiety=(0.1, 0.1), steps=1000).sample(50, seed=1)
    assert (never.params["big_shakes"] == 0).all()
    assert abs(float(often.params["big_shakes"].mean()) - 0.02 * 999) < 4


@pytest.mark.parametrize("bad, match", [
    (dict(exposure_s=(0.1, 0.01)), "CameraShake.exposure_s"),
    (dict(exposure_s=(0.0, 0.1)), "CameraShake.exposure_s"),
    (dict(drift_rad_s=5), "CameraShake.drift_rad_s"),
    (dict(jerk_rad_s=(-1, 0)), "CameraShake.jerk_rad_s"),
    (dict(samples=1), "CameraShake.samples"),
    (dict(roll_ratio=-1.0), "CameraShake.roll_ratio"),
    (dict(roll_ratio=np.inf), "CameraShake.roll_ratio"),
    (dict(exposure_s=(0.01, np.inf)), "CameraShake.exposure_s"),
    (dict(drift_hz=(np.nan, 3.0)), "CameraShake.drift_hz"),
    (dict(translation_m_s=(0.0, 0.01)), "CameraShake.translation_m_s"),  # (log-uniform: 0 has no log)
    (dict(jerk_decay_s=(0.0, 0.1)), "CameraShake.jerk_decay_s"),  # (its rate is 1 / decay)
])
def test_camera_shake_rejects_bad_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        CameraShake(**bad)


@pytest.mark.parametrize("bad, match", [
    (dict(length_px=(0, 10)), "RandomWalk2D.length_px"),
    (dict(exposure_fractions=(0.0,)), "RandomWalk2D.exposure_fractions"),
    (dict(steps=1), "RandomWalk2D.steps"),
    (dict(length_px=(10.0, np.inf)), "RandomWalk2D.length_px"),
    (dict(exposure_s=0.0), "RandomWalk2D.exposure_s"),
    (dict(anxiety=(0.5, 2.0), big_shake_probability=(0.0, 0.9)), r"big_shake_probability \* anxiety must stay <= 1"),
])
def test_random_walk_rejects_bad_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        RandomWalk2D(**bad)


def test_sample_rejects_bad_counts():
    with pytest.raises(ValueError, match="positive integer"):
        CameraShake().sample(0)
    with pytest.raises(ValueError, match="start"):
        CameraShake().sample(2, start=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_matches_cpu():
    cpu = CameraShake().sample(32, seed=9)
    gpu = CameraShake().sample(32, seed=9, device="cuda")
    assert gpu.rotation.is_cuda
    assert torch.allclose(gpu.rotation.cpu(), cpu.rotation, atol=1e-7, rtol=1e-4)
    walk_cpu = RandomWalk2D(steps=100, samples=50).sample(8, seed=9)
    walk_gpu = RandomWalk2D(steps=100, samples=50).sample(8, seed=9, device="cuda")
    assert torch.allclose(walk_gpu.path_px.cpu(), walk_cpu.path_px, atol=1e-4)


@pytest.mark.parametrize("model", [CameraShake(), RandomWalk2D()])
def test_seeds_beyond_63_bits_and_floats_are_refused(model):
    """5 + 2**64 used to give the same trajectories as seed 5; a float seed an obscure '&=' error."""
    with pytest.raises(ValueError, match="seed"):
        model.sample(2, seed=5 + 2**64)
    with pytest.raises(TypeError, match="seed must be an integer"):
        model.sample(2, seed=5.0)


@pytest.mark.parametrize("model, kwargs, name", [
    (CameraShake, {"roll_ratio": "half"}, "roll_ratio"),
    (CameraShake, {"roll_ratio": None}, "roll_ratio"),
    (CameraShake, {"exposure_s": "12"}, "exposure_s"),  # two characters are not a pair of numbers
    (CameraShake, {"drift_hz": [1.0, "3"]}, "drift_hz"),
    (RandomWalk2D, {"exposure_s": "1"}, "exposure_s"),
    (RandomWalk2D, {"exposure_fractions": 0.5}, "exposure_fractions"),
    (RandomWalk2D, {"exposure_fractions": ["1"]}, "exposure_fractions"),
])
def test_wrong_types_are_named_when_built(model, kwargs, name):
    """A string used to pass or fail with "'>=' not supported between 'str' and 'int'"."""
    with pytest.raises(ValueError, match=rf"{model.__name__}\.{name} must be"):
        model(**kwargs)


def test_a_pose_count_that_could_not_fit_in_memory_is_refused_when_built():
    with pytest.raises(ValueError, match=r"CameraShake: 100000000 poses per item from samples; at most 4096"):
        CameraShake(samples=100_000_000)
    with pytest.raises(ValueError, match=r"poses per item from exposure_s and tremor_hz .*shorten exposure_s"):
        CameraShake(exposure_s=(1.0, 1e6))
    assert CameraShake(exposure_s=(1.0, 10.0)).n_samples <= 4096  # the longest exposure the CLI allows
    assert CameraShake(samples=4096).n_samples == 4096  # the limit itself is allowed
    with pytest.raises(ValueError, match=r"4097 poses per item from samples; at most 4096"):
        CameraShake(samples=4097)


def test_an_int_index_out_of_range_is_an_index_error():
    """traj[5] of 2 items (or traj[-3]) used to return an empty trajectory."""
    import numpy as np
    shake = CameraShake().sample(2, seed=0)
    for bad in (2, 5, -3, np.int64(5), torch.tensor(5)):
        with pytest.raises(IndexError, match=rf"index {int(bad)} is out of range for 2 items"):
            shake[bad]
    # (a 0-d tensor, as `for i in torch.arange(n)` gives, dropped the batch axis: "Trajectory.t must be (N, T)")
    for i, same in ((-1, 1), (-2, 0), (1, 1), (np.int64(0), 0), (torch.tensor(1), 1), (torch.tensor(-2), 0)):
        item = shake[i]
        assert len(item) == 1 and torch.equal(item.rotation, shake.rotation[same:same + 1])
        assert torch.equal(item.params["exposure_s"], shake.params["exposure_s"][same:same + 1])
    assert len(shake[5:]) == 0  # slices keep Python's slicing


def test_cat_says_what_differs():
    """cat of a 6-DoF and a 2-D trajectory failed with KeyError 'exposure_s', of different T with a torch size error."""
    shake = CameraShake().sample(2, seed=0)
    with pytest.raises(ValueError, match=r"items\[1\] holds \['path_px'\] but items\[0\] holds \['rotation', 'translation'\]"):
        Trajectory.cat([shake, RandomWalk2D().sample(1)])
    with pytest.raises(ValueError, match=r"items\[1\] has 40 samples per motion but items\[0\] has 32"):
        Trajectory.cat([shake, CameraShake(samples=40).sample(1)])
    plain = Trajectory(t=shake.t[:1], rotation=shake.rotation[:1], translation=shake.translation[:1])
    with pytest.raises(ValueError, match=r"items\[1\] has params \[\] but items\[0\] has \['drift_hz'"):
        Trajectory.cat([shake, plain])
    with pytest.raises(TypeError, match="non-empty list of Trajectory"):
        Trajectory.cat([])
    both = Trajectory.cat([shake, CameraShake().sample(1, seed=0, start=2)])
    whole = CameraShake().sample(3, seed=0)
    assert torch.equal(both.rotation, whole.rotation)
    assert both.params.keys() == whole.params.keys()  # (params kept only items[0]'s went unseen)
    assert all(torch.equal(both.params[k], whole.params[k]) for k in whole.params)


@pytest.mark.parametrize("model", [CameraShake(), RandomWalk2D(steps=50, samples=16)])
def test_sample_takes_numpy_integers_and_refuses_bools(model):
    """sample(np.int64(2)) said 'number of trajectories must be a positive integer, got np.int64(2)'
    (seeds and kernel sizes already took NumPy integers); sample(True) drew one item."""
    a = model.sample(np.int64(2), seed=np.int64(1), start=np.int32(3))
    b = model.sample(2, seed=1, start=3)
    assert torch.equal(a.t, b.t) and all(torch.equal(a.params[k], b.params[k]) for k in b.params)
    for n, start in ((True, 0), (2, False), (2.0, 0)):
        with pytest.raises(ValueError, match="integer"):
            model.sample(n, seed=0, start=start)


def test_models_take_numpy_integer_counts_and_refuse_bools():
    """RandomWalk2D(steps=np.int64(100)) said 'steps must be an integer >= 2, got np.int64(100)', and
    so did samples (also CameraShake's), while the models' sample() and kernel.generate take NumPy
    integers; they now do too, stored as Python ints, and a bool is still refused."""
    walk = RandomWalk2D(steps=np.int64(100), samples=np.int32(16))
    assert (walk.steps, walk.samples) == (100, 16) and type(walk.steps) is int and type(walk.samples) is int
    assert torch.equal(walk.sample(2).path_px, RandomWalk2D(steps=100, samples=16).sample(2).path_px)
    shake = CameraShake(samples=np.int64(40))
    assert shake.samples == 40 and type(shake.samples) is int and shake.sample(1).t.shape == (1, 40)
    for kwargs in ({"steps": True}, {"samples": 16.0}):
        with pytest.raises(ValueError, match="must be an integer from 2 to"):
            RandomWalk2D(**kwargs)
    with pytest.raises(ValueError, match="must be an integer >= 2 or None"):
        CameraShake(samples=True)


def test_a_random_walk_of_too_many_steps_or_samples_is_refused():
    # (steps = 10000000, a typo, ran for hours and asked for terabytes: every step's position is held)
    RandomWalk2D(steps=20_000, samples=4096)
    for kwargs, match in (({"steps": 20_001}, "RandomWalk2D.steps must be an integer from 2 to 20000, got 20001"),
                          ({"samples": 4097}, "RandomWalk2D.samples must be an integer from 2 to 4096, got 4097"),
                          ({"steps": 1}, "steps must be an integer from 2 to 20000, got 1")):
        with pytest.raises(ValueError, match=match):
            RandomWalk2D(**kwargs)


def _boracchi_foi_walk(length, anxiety, centripetal, p_big, gauss, angle, u_big, u_turn, kick, steps):
    """One walk transcribed from Boracchi & Foi's createTrajectory (as ported in DeblurGAN's
    motion_blur.py), written out step by step with complex NumPy numbers; the random draws are
    passed in. Returns the ``steps`` positions and the number of abrupt shakes."""
    step_len = length / (steps - 1)
    v0 = np.cos(angle) + 1j * np.sin(angle)
    v = v0 * step_len
    if anxiety > 0:
        v = v0 * anxiety
    x = np.zeros(steps, dtype=complex)
    shakes = 0
    for t in range(steps - 1):
        if u_big[t] < p_big * anxiety:
            next_direction = 2 * v * np.exp(1j * (np.pi + (u_turn[t] - 0.5)))
            shakes += 1
        else:
            next_direction = 0
        dv = next_direction + anxiety * (gauss * kick[t] - centripetal * x[t]) * step_len
        v = v + dv
        v = v / abs(v) * step_len
        x[t + 1] = x[t] + v
    return x, shakes


@pytest.mark.parametrize("seed", [0, 7])
def test_random_walk_is_boracchi_and_fois_recurrence(seed):
    """The walk's kicks, centripetal pull and abrupt near-reversals, against a plain transcription of the
    published algorithm fed the same draws: before this test a sign flip of the pull, a dropped factor
    on the Gaussian kick, or abrupt shakes that never changed the path all passed every test."""
    from blursynth import rng
    steps = 120
    model = RandomWalk2D(length_px=(20.0, 60.0), anxiety=(0.05, 0.1), big_shake_probability=(0.1, 0.2),
                         steps=steps, samples=steps)
    traj = model.sample(6, seed=seed)
    idx = torch.arange(6)

    def draw(name, stream):
        return rng.range_uniform(seed, idx, *getattr(model, name), stream=stream).double().numpy()
    length, anxiety, centripetal = draw("length_px", 1), draw("anxiety", 2), draw("centripetal", 3)
    p_big, gauss = draw("big_shake_probability", 4), draw("gaussian_shake", 5)
    angle = 2 * np.pi * rng.uniform(seed, idx, (), stream=6, dtype=torch.float64).numpy()
    u_big = rng.uniform(seed, idx, (steps - 1,), stream=8, dtype=torch.float64).numpy()
    u_turn = rng.uniform(seed, idx, (steps - 1,), stream=9, dtype=torch.float64).numpy()
    kick = (rng.normal(seed, idx, (steps - 1,), stream=10, dtype=torch.float64).numpy()
            + 1j * rng.normal(seed, idx, (steps - 1,), stream=11, dtype=torch.float64).numpy())
    total = 0
    for i in range(6):
        x, shakes = _boracchi_foi_walk(length[i], anxiety[i], centripetal[i], p_big[i], gauss[i], angle[i],
                                       u_big[i], u_turn[i], kick[i], steps)
        np.testing.assert_allclose(traj.path_px[i].double().numpy(), np.stack([x.real, x.imag], -1), atol=1e-4)
        assert traj.params["big_shakes"][i] == shakes
        total += shakes
    assert total > 0  # the abrupt shakes are exercised


def test_roll_is_roll_ratio_of_pitch_and_yaw_and_the_jerk_tips_the_lens_down():
    """Two documented properties no test checked (a roll weight of 1, or a jerk tipping the lens up,
    passed them all): roll amplitudes are roll_ratio times pitch's and yaw's, and the shutter press
    starts with negative pitch, which tips the lens down (+z towards +y)."""
    quiet = dict(jerk_rad_s=(0, 0), exposure_s=(0.1, 0.1), samples=64)
    # (each item's amplitudes are drawn with these scales, then normalised together to its RMS speed,
    # which lifts the small roll's share a little: 0.59 for 0.5 here, against 1.0 with no roll weight)
    for ratio, lo, hi in ((0.0, 0.0, 0.0), (0.5, 0.45, 0.7)):
        traj = CameraShake(roll_ratio=ratio, **quiet).sample(2000, seed=1)
        speed = (traj.rotation[:, 1:] - traj.rotation[:, :-1]).pow(2).mean((0, 1)).sqrt()  # per axis
        assert lo <= float(speed[2] / speed[:2].mean()) <= hi
    jerk = CameraShake(drift_rad_s=(1e-9, 1e-9), tremor_rad_s=(1e-9, 1e-9), jerk_rad_s=(0.05, 0.05),
                       exposure_s=(0.2, 0.2), samples=201).sample(200, seed=6)
    assert bool((jerk.rotation[:, 1, 0] < 0).all())


def test_a_trajectory_of_the_wrong_shapes_is_refused():
    """A 1-D or 3-D t, or poses of the wrong width (2 rotation components, 3 path ones), were not
    refused by any test: they fail later, far from the cause, or are read wrongly."""
    t = torch.zeros(2, 4)
    for bad, match in ((dict(t=torch.zeros(4), rotation=torch.zeros(1, 4, 3)), r"Trajectory\.t must be \(N, T\)"),
                       (dict(t=torch.zeros(2, 4, 1), rotation=torch.zeros(2, 4, 3)), r"Trajectory\.t must be \(N, T\)"),
                       (dict(t=t, rotation=torch.zeros(2, 4, 2)), r"Trajectory\.rotation must be \(2, 4, 3\)"),
                       (dict(t=t, translation=torch.zeros(2, 4, 4)), r"Trajectory\.translation must be \(2, 4, 3\)"),
                       (dict(t=t, path_px=torch.zeros(2, 4, 3)), r"Trajectory\.path_px must be \(2, 4, 2\)"),
                       (dict(t=t, path_px=torch.zeros(2, 5, 2)), r"Trajectory\.path_px must be \(2, 4, 2\)"),
                       (dict(t=t), "needs path_px")):
        with pytest.raises(ValueError, match=match):
            Trajectory(**bad)


@pytest.mark.parametrize("kind", ["6-DoF", "2-D"])
def test_reversed_visits_the_poses_backwards_in_time(kind):
    """reversed() had no test here: the pose at time s of the reversed motion is the original's at
    exposure - s (checked by linear interpolation at uneven times, where leaving t or one pose array as
    it was shows), and it runs from 0 to the same exposure."""
    t = torch.tensor([[0.0, 0.01, 0.05, 0.06, 0.1]])
    g = torch.Generator().manual_seed(0)
    poses = {"rotation": torch.randn(1, 5, 3, generator=g), "translation": torch.randn(1, 5, 3, generator=g)} \
        if kind == "6-DoF" else {"path_px": torch.randn(1, 5, 2, generator=g)}
    traj = Trajectory(t=t, **poses)
    back = traj.reversed()
    assert float(back.t[0, 0]) == 0 and torch.allclose(back.exposure_s, traj.exposure_s)
    assert bool((back.t[:, 1:] >= back.t[:, :-1]).all())
    s = np.linspace(0, 0.1, 23)
    for name in poses:
        for d in range(poses[name].shape[-1]):
            there = np.interp(s, back.t[0].numpy(), getattr(back, name)[0, :, d].numpy())
            here = np.interp(0.1 - s, t[0].numpy(), poses[name][0, :, d].numpy())
            np.testing.assert_allclose(there, here, atol=1e-5)  # (float32 times)


def test_replace_items_puts_the_sub_items_in_place_with_their_times_and_params():
    """replace_items (kernel.generate's redraws) had no test: times or params left as they were passed."""
    full = CameraShake().sample(4, seed=0)
    sub = CameraShake(exposure_s=(0.2, 0.2)).sample(2, seed=5)  # other exposures (same T): t differs
    where = torch.tensor([3, 1])
    out = full.replace_items(where, sub)
    for i, j in ((3, 0), (1, 1)):
        assert torch.equal(out.t[i], sub.t[j]) and torch.equal(out.rotation[i], sub.rotation[j])
        assert torch.equal(out.translation[i], sub.translation[j])
        assert all(torch.equal(out.params[k][i], sub.params[k][j]) for k in full.params)
    for i in (0, 2):
        assert torch.equal(out.t[i], full.t[i]) and torch.equal(out.rotation[i], full.rotation[i])
        assert all(torch.equal(out.params[k][i], full.params[k][i]) for k in full.params)
    extra = Trajectory(t=full.t, rotation=full.rotation, translation=full.translation,
                       params={**full.params, "extra": torch.arange(4.0)})
    assert torch.equal(extra.replace_items(where, sub).params["extra"], torch.arange(4.0))  # kept as it is


def test_shutter_jerk_is_the_integral_of_a_damped_cosine_and_has_no_roll_without_roll_ratio():
    """The jerk's angular velocity is jerk_rad_s exp(-t / decay) cos(2 pi f t) along a unit direction, so
    the rotation vector's length is jerk_rad_s times that integral (SciPy's quad here). Only its start
    (the peak speed) and its mostly-pitch direction were checked: a decay rate of decay instead of
    1 / decay, or a jerk's roll not scaled by roll_ratio, passed."""
    from scipy.integrate import quad
    model = CameraShake(drift_rad_s=(1e-9, 1e-9), tremor_rad_s=(1e-9, 1e-9), jerk_rad_s=(0.05, 0.05),
                        jerk_hz=(2.0, 2.0), jerk_decay_s=(0.05, 0.05), exposure_s=(0.3, 0.3), samples=61,
                        roll_ratio=0.0)
    traj = model.sample(5, seed=2)
    t = traj.t[0].double().numpy()
    integral = np.array([quad(lambda s: np.exp(-s / 0.05) * np.cos(2 * np.pi * 2.0 * s), 0, ti)[0] for ti in t])
    length = traj.rotation.double().norm(dim=-1).numpy()  # (5, 61)
    np.testing.assert_allclose(length, np.broadcast_to(0.05 * np.abs(integral), length.shape), rtol=1e-4, atol=1e-8)
    assert float(traj.rotation[..., 2].abs().max()) == 0.0  # no roll at all with roll_ratio = 0


def test_translation_speed_is_translation_m_s_with_tremor_at_half_the_drifts_amplitude():
    """The camera centre's RMS speed is translation_m_s, made of drift (two sinusoids per axis, N(0, 1)
    amplitudes) and tremor (one per axis, 0.5 N(0, 1)) before the scaling. Only 'smaller than the
    rotation's image motion at 2 m' was checked: ten times the speed, or tremor at the drift's
    amplitude, passed. The tremor's share of the power is measured at its frequency (200 whole cycles)
    and compared with that model drawn here with NumPy."""
    model = CameraShake(translation_m_s=(0.005, 0.005), tremor_hz=(10.0, 10.0), exposure_s=(20.0, 20.0),
                        samples=4001, jerk_rad_s=(0.0, 0.0))
    traj = model.sample(1000, seed=3)
    t = traj.t[0].double()
    v = (traj.translation[:, 1:] - traj.translation[:, :-1]).double() / (t[1:] - t[:-1])[None, :, None]
    mid = (t[1:] + t[:-1]) / 2
    rms = v.pow(2).sum(-1).mean(1).sqrt()
    assert 0.9 < float(rms.median() / 0.005) < 1.1
    # tremor power (A_cos^2 + A_sin^2) / 2 per axis, as a share of translation_m_s ** 2
    share = sum((2 * (v * f(2 * np.pi * 10.0 * mid)[None, :, None]).mean(1)) ** 2 / 2 for f in (torch.cos, torch.sin))
    share = share.sum(-1) / 0.005 ** 2
    rs = np.random.default_rng(0)
    tremor = 0.25 * (rs.standard_normal((200_000, 3)) ** 2).sum(1)
    drift = (rs.standard_normal((200_000, 6)) ** 2).sum(1)
    assert abs(float(share.mean()) - (tremor / (tremor + drift)).mean()) < 0.03  # (0.13; 0.33 at equal amplitudes)


@pytest.mark.parametrize("model", [CameraShake(), RandomWalk2D(steps=50, samples=16)])
def test_to_moves_every_tensor_params_included(model):
    """to(device) left params behind with no test to see it (only the CUDA test could have, and it does not
    look): the "meta" device shows it on any machine."""
    moved = model.sample(2, seed=0).to("meta")
    tensors = [moved.t, moved.rotation, moved.translation, moved.path_px, *moved.params.values()]
    assert all(x.device.type == "meta" for x in tensors if x is not None)


def test_recorded_rms_angular_speed_includes_the_shutter_jerk():
    """rms_angular_speed_rad_s is measured over the exposure on the whole motion: for a jerk alone it is
    the RMS of jerk_rad_s exp(-t / decay) cos(2 pi f t) over the exposure (SciPy's quad here). A value
    measured before the jerk was added passed every test (the default shake's median barely moves)."""
    from scipy.integrate import quad
    model = CameraShake(drift_rad_s=(1e-9, 1e-9), tremor_rad_s=(1e-9, 1e-9), jerk_rad_s=(0.05, 0.05),
                        jerk_hz=(2.0, 2.0), jerk_decay_s=(0.05, 0.05), exposure_s=(0.3, 0.3), samples=2001)
    speed = model.sample(3, seed=1).params["rms_angular_speed_rad_s"]
    mean_square = quad(lambda s: (0.05 * np.exp(-s / 0.05) * np.cos(2 * np.pi * 2.0 * s)) ** 2, 0, 0.3)[0] / 0.3
    assert torch.allclose(speed.double(), torch.full((3,), np.sqrt(mean_square), dtype=torch.float64), rtol=1e-3)


def test_camera_shake_draws_its_scalars_log_uniform_or_uniform_as_documented():
    """exposure_s, drift_rad_s, tremor_rad_s, translation_m_s and drift_hz are log-uniform, the rest uniform
    (the class docstring): only their ranges were checked, which a uniform draw keeps. Kolmogorov-Smirnov
    distances against the documented distributions (SciPy), and the mean of the recorded drift_hz (the
    mean of six log-uniform draws) against (hi - lo) / ln(hi / lo)."""
    from scipy import stats
    model = CameraShake()
    params = model.sample(4000, seed=11).params
    for name in ("exposure_s", "drift_rad_s", "tremor_rad_s", "translation_m_s"):
        lo, hi = np.log(getattr(model, name))
        assert stats.kstest(np.log(params[name].double().numpy()), stats.uniform(lo, hi - lo).cdf).statistic < 0.03, name
    for name in ("tremor_hz", "jerk_hz", "jerk_decay_s", "jerk_rad_s"):
        lo, hi = getattr(model, name)
        assert stats.kstest(params[name].double().numpy(), stats.uniform(lo, hi - lo).cdf).statistic < 0.03, name
    lo, hi = model.drift_hz
    assert abs(float(params["drift_hz"].double().mean()) / ((hi - lo) / np.log(hi / lo)) - 1) < 0.02


def test_a_trajectory_of_numpy_arrays_or_lists_is_refused_naming_the_field():
    """Trajectory(t=np...) was built, and failed later in render_nonuniform as "'numpy.ndarray' object has no
    attribute 'to'" (rasterize: "must be an (N, T, 2) tensor"); a list of times as "'list' object has no
    attribute 'ndim'"."""
    t = np.linspace(0, 0.1, 5)[None]
    with pytest.raises(TypeError, match=r"Trajectory\.t must be a torch\.Tensor, got ndarray; convert with torch\.as_tensor"):
        Trajectory(t=t, path_px=np.zeros((1, 5, 2)))
    with pytest.raises(TypeError, match=r"Trajectory\.t must be a torch\.Tensor, got list"):
        Trajectory(t=t.tolist(), rotation=torch.zeros(1, 5, 3))
    with pytest.raises(TypeError, match=r"Trajectory\.rotation must be a torch\.Tensor or None, got ndarray"):
        Trajectory(t=torch.from_numpy(t), rotation=np.zeros((1, 5, 3)))
    assert len(Trajectory(t=torch.from_numpy(t), path_px=torch.zeros(1, 5, 2))) == 1


@pytest.mark.parametrize("model, given, tuples", [
    (CameraShake, dict(exposure_s=[0.05, 0.5], drift_hz=np.array([0.5, 2.0]), jerk_rad_s=[0, 0.05],
                       roll_ratio=np.float32(0.25)),
     dict(exposure_s=(0.05, 0.5), drift_hz=(0.5, 2.0), jerk_rad_s=(0.0, 0.05), roll_ratio=0.25)),
    (RandomWalk2D, dict(length_px=[20, 40], anxiety=np.array([0.0, 0.1]), exposure_fractions=[0.5, 1],
                        exposure_s=np.float64(2.0), steps=100, samples=64),
     dict(length_px=(20.0, 40.0), anxiety=(0.0, 0.1), exposure_fractions=(0.5, 1.0), exposure_s=2.0, steps=100,
          samples=64)),
])
def test_a_model_given_lists_or_arrays_is_the_model_given_tuples(model, given, tuples):
    """A recipe's TOML gives the models lists: kept as given, the model was unhashable (a frozen dataclass),
    unequal to the same model given tuples, and with a NumPy array == raised "The truth value of an array
    with more than one element is ambiguous". The options are kept as tuples of floats, as SensorModel's
    and DeadLeaves' are, and draw the same motions."""
    a, b = model(**given), model(**tuples)
    assert a == b and hash(a) == hash(b) and a == model(**given)
    assert all(type(getattr(a, k)) is type(getattr(b, k)) for k in given)
    x, y = a.sample(3, seed=1), b.sample(3, seed=1)
    assert all(torch.equal(getattr(x, k), getattr(y, k)) for k in ("t", "rotation", "translation", "path_px")
               if getattr(x, k) is not None)


def test_replace_items_names_a_sub_of_another_kind_or_length():
    """replace_items takes items "of the same T and kind": a 2-D sub for a 6-DoF batch failed in torch as
    "index_put(): argument 'values' (position 2) must be Tensor, not NoneType", and other T as a shape
    mismatch of torch's internals."""
    traj = CameraShake().sample(3, seed=0)
    where = torch.tensor([1])
    for sub in (RandomWalk2D(steps=50, samples=32).sample(1), CameraShake(samples=40).sample(1)):
        with pytest.raises(ValueError, match=r"^Trajectory.replace_items: sub holds .* samples per\s+motion but this"):
            traj.replace_items(where, sub)
    with pytest.raises(TypeError, match=r"^Trajectory.replace_items: sub must be a Trajectory"):
        traj.replace_items(where, CameraShake().sample(1).rotation)
    new = CameraShake().sample(1, seed=9)
    assert torch.equal(traj.replace_items(where, new).rotation[1], new.rotation[0])


def test_params_must_hold_one_value_per_item():
    """params is documented as a dict of (N,) tensors, one per item, but a float, a list or a tensor of
    another length was taken, and selecting, moving or joining items then failed with "'float' object is
    not subscriptable" or "'list' object has no attribute 'to'", or kept the wrong values."""
    t, path = torch.zeros(2, 3), torch.zeros(2, 3, 2)
    for params in ({"exposure_s": 0.1}, {"exposure_s": [0.1, 0.2]}, {"exposure_s": torch.zeros(3)},
                   {"exposure_s": torch.tensor(0.1)}, [("exposure_s", torch.zeros(2))]):
        with pytest.raises(ValueError, match=r"^Trajectory.params must be a dict of \(2,\) tensors"):
            Trajectory(t=t, path_px=path, params=params)
    traj = Trajectory(t=t, path_px=path, params={"exposure_s": torch.tensor([0.1, 0.2])})
    assert torch.equal(traj[1].params["exposure_s"], torch.tensor([0.2]))


@pytest.mark.parametrize("model, field, value", [
    (CameraShake, "drift_rad_s", (1e20, 1e20)), (CameraShake, "drift_hz", (1e38, 1e38)),
    (CameraShake, "jerk_rad_s", (0.0, 1e30)), (CameraShake, "translation_m_s", (1e30, 1e30)),
    (CameraShake, "roll_ratio", 1e40), (RandomWalk2D, "gaussian_shake", (1e300, 1e300)),
    (RandomWalk2D, "big_shake_probability", (0.0, 2.0)), (RandomWalk2D, "length_px", (1e38, 1e38)),
])
def test_absurd_ranges_are_refused_naming_the_field(model, field, value):
    # (they gave NaN poses, refused later as "path_px contains NaN or infinite values", naming no field)
    with pytest.raises(ValueError, match=rf"{model.__name__}\.{field} must be "):
        model(**{field: value})


def test_a_recipe_with_an_absurd_range_names_its_key(tmp_path):
    from blursynth.recipe import RECIPE_DIR, RecipeError, load_recipe
    text = (RECIPE_DIR / "default.toml").read_text().replace("[trajectory]\n", "[trajectory]\ndrift_hz = [1e38, 1e38]\n")
    (tmp_path / "x.toml").write_text(text.replace('name = "default"', 'name = "x"'))
    with pytest.raises(RecipeError, match=r"trajectory\.drift_hz: .*drift_hz must be a finite range .*<= 10000"):
        load_recipe(tmp_path / "x.toml")
