"""Projective blur: the renderer against the uniform path, local kernels against the renderer."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from scipy.ndimage import gaussian_filter
from scipy.signal import convolve2d

from blursynth.blur import blur
from blursynth.camera import Camera
from blursynth.kernel import kernels, rasterize
from blursynth.nonuniform import (densify, exposure_weights, grid_points, kernels_at, render_nonuniform,
                                  _probe_points)
from blursynth.trajectory import Trajectory


def _smooth_image(h, w, seed=0, sigma=1.5):
    rs = np.random.RandomState(seed)
    img = np.stack([gaussian_filter(rs.rand(h, w), sigma) for _ in range(3)])
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img).float()[None]


def _shake(yaw, pitch, roll, steps=9, exposure=0.1):
    """A smooth rotation over the exposure ending at (pitch, yaw, roll) radians, with a bend."""
    s = torch.linspace(0, 1, steps)
    bend = torch.sin(math.pi * s)
    rot = torch.stack([pitch * s + 0.3 * yaw * bend, yaw * s ** 2, roll * s], dim=-1)
    return Trajectory(t=(s * exposure)[None], rotation=rot[None])


def _conv(image, kernel):
    """Reference: per-channel true convolution by scipy, 'same' size."""
    k = kernel.numpy()
    return np.stack([convolve2d(c, k, mode="same", boundary="symm") for c in image[0].numpy()])


# The renderer sums warps at poses max_step_px apart; the rasteriser splats the continuous path.
# The quadrature error falls with the step (measured worst case over a grid of shakes on this image:
# 1.4e-2 at 0.5 px, 4.2e-3 at 0.25 px, 1.5e-3 at 0.125 px), so both the default and a fine step are checked.
@pytest.mark.parametrize("step, tol", [(0.5, 2e-2), (0.125, 3e-3)])
@given(yaw=st.floats(-4e-3, 4e-3), pitch=st.floats(-4e-3, 4e-3))
@settings(max_examples=6, deadline=None)
def test_distant_scene_without_roll_matches_uniform_blur(step, tol, yaw, pitch):
    # A long lens and a small frame: rotation without roll is a translation of the whole frame.
    cam = Camera(2000.0, 48, 40)
    traj = _shake(yaw, pitch, 0.0)
    img = _smooth_image(40, 48)
    out = render_nonuniform(img, traj, cam, max_step_px=step)[0].numpy()
    kernel = kernels(traj, cam, 21)[0]
    m = 11  # compare away from the border, where padding differs
    for ref in (_conv(img, kernel), blur(img, kernel, boundary="reflect")[0].numpy()):  # (the package's own path)
        assert np.abs(out[:, m:-m, m:-m] - ref[:, m:-m, m:-m]).max() < tol


def test_small_in_plane_translation_path_matches_uniform_blur():
    path = torch.tensor([[[0.0, 0.0], [3.0, 1.0], [4.5, -2.0], [6.0, 0.5]]])
    traj = Trajectory(t=torch.tensor([[0.0, 0.01, 0.03, 0.04]]), path_px=path)
    img = _smooth_image(40, 40, seed=1)
    out = render_nonuniform(img, traj, Camera(500.0, 40, 40))[0].numpy()
    ref = _conv(img, rasterize(path, 15, t=traj.t)[0])
    assert np.abs(out[:, 8:-8, 8:-8] - ref[:, 8:-8, 8:-8]).max() < 3e-3


@pytest.mark.parametrize("where", [(4.0, 5.0), (40.0, 30.0), (24.0, 18.0)])
def test_local_kernel_reproduces_rendered_blur_near_its_pixel(where):
    cam = Camera(300.0, 48, 36, cx=60.0, cy=-10.0)  # a crop whose photo centre lies outside it
    traj = _shake(2e-3, -1.5e-3, 0.03)
    img = _smooth_image(36, 48, seed=2)
    out = render_nonuniform(img, traj, cam, padding_mode="border")[0].numpy()
    k = kernels_at(torch.tensor([where]), traj, cam, 25)[0, 0]
    assert abs(float(k.sum()) - 1) < 1e-5
    # Blur with the local kernel; compare on a 3x3 neighbourhood of the pixel.
    pad = torch.nn.functional.pad(img, (12, 12, 12, 12), mode="replicate")[0].numpy()
    ref = np.stack([convolve2d(c, k.numpy(), mode="valid") for c in pad])
    x, y = int(where[0]), int(where[1])
    near = (slice(None), slice(y - 1, y + 2), slice(x - 1, x + 2))
    assert np.abs(out[near] - ref[near]).max() < 6e-3  # the centre kernel misses by > 2e-2


def _spread(k):
    """Root mean squared distance of a kernel's mass from its centre of mass, pixels."""
    h, w = k.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    my, mx = (k * yy).sum(), (k * xx).sum()
    return float(((k * ((yy - my) ** 2 + (xx - mx) ** 2)).sum()).sqrt())


def test_roll_blurs_corners_more_than_the_centre():
    cam = Camera(400.0, 64, 64)
    traj = _shake(0.0, 0.0, 0.06)
    centre, corner = kernels_at(torch.tensor([[31.5, 31.5], [2.0, 2.0]]), traj, cam, 31)[0]
    assert _spread(centre) < 0.1 and _spread(corner) > 0.5
    # The rendered image changes more at the corners than at the centre.
    img = _smooth_image(64, 64, seed=3, sigma=1.0)
    diff = (render_nonuniform(img, traj, cam) - img).abs()[0].mean(0)
    assert float(diff[24:40, 24:40].mean()) * 3 < float(diff[:12, :12].mean())


def test_centre_kernel_equals_the_centred_uniform_kernel():
    cam = Camera(800.0, 64, 48)
    traj = _shake(3e-3, 2e-3, 0.02)
    pp = torch.tensor([cam.principal_point])
    local = kernels_at(pp, traj, cam, 21)[0, 0]
    uniform = kernels(traj, cam, 21)[0]
    assert (local - uniform).abs().max() < 2e-3


@given(roll=st.floats(-0.05, 0.05), yaw=st.floats(-0.01, 0.01), steps=st.integers(2, 12))
@settings(max_examples=25, deadline=None)
def test_densified_samples_move_no_point_more_than_half_a_pixel(roll, yaw, steps):
    cam = Camera(600.0, 80, 60)
    traj = _shake(yaw, 0.0, roll, steps=steps)
    dense = densify(traj, cam)
    pos = cam.project(dense, _probe_points(cam, "cpu"))
    assert float((pos[:, 1:] - pos[:, :-1]).norm(dim=-1).max()) <= 0.5 + 1e-4
    # The original samples are kept (they are the segment ends).
    assert torch.isin(traj.t, dense.t).all()


def test_densify_ends_for_a_step_size_not_exact_in_float32():
    """A segment a hair over 0.05 px once looped forever (its float32 ratio to 0.05 rounded to 1)."""
    cam = Camera(700.0, 64, 48, cx=10.0, cy=40.0)
    traj = _shake(-0.015666790748886026, 0.017669501617582396, 0.017669501617582396, steps=7)
    dense = densify(traj, cam, max_step_px=0.05)
    pos = cam.project(dense, _probe_points(cam, "cpu"))
    assert float((pos[:, 1:] - pos[:, :-1]).norm(dim=-1).max()) <= 0.05 * (1 + 1e-6)


@given(t=st.lists(st.floats(0, 1), min_size=2, max_size=20))
@example(t=[0.0, 1.1754943508222875e-38])  # a total exposure under 1e-30 s once summed to 1e-8
@settings(max_examples=50, deadline=None)
def test_exposure_weights_sum_to_one_and_follow_time(t):
    times = torch.tensor(sorted(t))[None]
    w = exposure_weights(times)
    assert abs(float(w.sum()) - 1) < 1e-5 and bool((w >= 0).all())
    if float(times[0, -1] - times[0, 0]) > 1e-3:
        # The weighted mean time is the midpoint of a uniform motion's time span.
        mid = float((w * times).sum())
        ref = float(((times[0, 1:] ** 2 - times[0, :-1] ** 2) / 2).sum() / (times[0, -1] - times[0, 0]))
        assert abs(mid - ref) < 1e-4


def test_still_camera_is_the_identity_and_grid_points_cover_the_frame():
    cam = Camera(500.0, 30, 20)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3))
    img = _smooth_image(20, 30)
    assert torch.allclose(render_nonuniform(img, traj, cam), img, atol=1e-5)
    pts = grid_points(cam, 2, 3)
    assert pts.shape == (6, 2)
    assert torch.allclose(pts[0], torch.tensor([4.5, 4.5])) and torch.allclose(pts[-1], torch.tensor([24.5, 14.5]))


def test_bad_arguments_are_named():
    cam = Camera(500.0, 30, 20)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="camera is 30x20 but the image is 31x20"):
        render_nonuniform(torch.zeros(1, 3, 20, 31), traj, cam)
    with pytest.raises(ValueError, match="2 items for a batch of 3"):
        render_nonuniform(torch.zeros(3, 3, 20, 30), Trajectory.cat([traj, traj]), cam)
    # (a string or None failed in a comparison without a name; inf took 4 poses whatever the motion: ghosts)
    for bad in (-1.0, 0.0, math.nan, math.inf, "1", None):
        with pytest.raises(ValueError, match=rf"max_step_px must be a finite number > 0 \(pixels\), got {bad!r}$"):
            render_nonuniform(torch.zeros(1, 3, 20, 30), traj, cam, max_step_px=bad)
        with pytest.raises(ValueError, match=rf"max_step_px must be a finite number > 0 \(pixels\), got {bad!r}$"):
            kernels_at(torch.zeros(1, 2), traj, cam, 5, max_step_px=bad)
    # a one-element real tensor and NumPy's and torch's bools are taken, as they were before these checks
    image = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.tensor([[[0.0, 0.0, 0.0], [0.001, 0.0, 0.02]]]))
    ref = render_nonuniform(image, traj, cam, max_step_px=0.5, center=True)
    assert torch.equal(render_nonuniform(image, traj, cam, max_step_px=torch.tensor(0.5), center=np.bool_(True)), ref)
    assert torch.equal(render_nonuniform(image, traj, cam, center=torch.tensor(True)), ref)
    for bad in ("no", 1, None):  # ("no" is truthy: it centred)
        with pytest.raises(TypeError, match=rf"center must be True or False, got {bad!r}"):
            render_nonuniform(torch.zeros(1, 3, 20, 30), traj, cam, center=bad)
        with pytest.raises(TypeError, match=rf"center must be True or False, got {bad!r}"):
            kernels_at(torch.zeros(1, 2), traj, cam, 5, center=bad)


@given(roll=st.floats(-0.05, 0.05), yaw=st.floats(-0.02, 0.02), pitch=st.floats(-0.02, 0.02),
       steps=st.integers(2, 12))
@example(roll=0.0, yaw=0.000534069984172391, pitch=0.0, steps=3)  # 0.44 px of motion, bent by 0.11 px
@example(roll=0.0, yaw=-0.001953125, pitch=0.0008468174140329639, steps=6)  # 1.9 px, bending at ~1/px
@settings(max_examples=25, deadline=None)
def test_motion_samples_are_half_a_pixel_apart_and_keep_the_mean_motion(roll, yaw, pitch, steps):
    from blursynth.nonuniform import centering_shift, motion_samples
    cam = Camera(700.0, 64, 48, cx=10.0, cy=40.0)
    traj = _shake(yaw, pitch, roll, steps=steps)
    poses, weights = motion_samples(traj, cam)
    assert abs(float(weights.sum()) - 1) < 1e-5 and bool((weights >= 0).all())
    pos = cam.project(poses, _probe_points(cam, "cpu"))
    if pos.shape[1] > 1:  # a still camera is one pose
        assert float((pos[:, 1:] - pos[:, :-1]).norm(dim=-1).max()) <= 0.5 + 1e-3
    # The weighted mean principal-point displacement is the time average of the motion, up to how far
    # the path bends off the chords between poses (about curvature x step^2 / 8: 0.031 px seen on a
    # path bending at ~1/px; 0.056 for the motion under one step above, before MIN_INTERVALS).
    mean = (weights[..., None] * cam.center_path(poses)).sum(1)
    assert (mean - centering_shift(densify(traj, cam, max_step_px=0.05), cam)).abs().max() < 0.05


def test_motion_sample_weights_are_the_time_spent_near_each_pose():
    """Each pose's weight is the exposure time spent near it (a tent of one grid spacing around it), which
    motion_samples gets right by first cutting the path to a quarter of the step. Cut only to the step,
    the slow stretch here (80 % of the time within 0.25 px of 1.5 px) is one segment whose time is split
    between its two ends alone: weights up to 0.03 off the time spent near each pose."""
    from blursynth.nonuniform import motion_samples
    t = np.array([0.0, 0.1, 0.9, 1.0])
    x = np.array([0.0, 1.25, 1.75, 3.0])  # fast, slow (80 % of the time over 0.5 px), fast
    traj = Trajectory(t=torch.tensor(t, dtype=torch.float32)[None],
                      path_px=torch.tensor(np.stack([x, 0 * x], -1), dtype=torch.float32)[None])
    poses, weights = motion_samples(traj, Camera(500.0, 30, 20))
    at = poses.path_px[0, :, 0].double().numpy()
    spacing = np.diff(at)
    assert np.allclose(spacing, spacing[0], atol=1e-5) and spacing[0] <= 0.5 + 1e-6
    assert at[0] == 0 and abs(at[-1] - 3) < 1e-5 and np.all(poses.path_px[0, :, 1].numpy() == 0)
    # reference: the time average of each pose's tent, over a fine uniform sampling of the exposure
    time = (np.arange(200_000) + 0.5) / 200_000
    where = np.interp(time, t, x)
    expected = [np.clip(1 - np.abs(where - a) / spacing[0], 0, None).mean() for a in at]
    assert np.abs(weights[0].double().numpy() - expected).max() < 1e-4


def _random_sampling(b, k, seed):
    """``(b, k, 3, 3)`` maps from pixels to grid_sample coordinates of near-identity homographies."""
    g = torch.Generator().manual_seed(seed)
    hom = torch.eye(3) + 0.02 * torch.randn(b, k, 3, 3, generator=g) * torch.tensor([1.0, 1.0, 20.0])
    hom[..., 2, :2] *= 0.01  # mild perspective
    norm = torch.tensor([[2 / 29, 0.0, -1.0], [0.0, 2 / 19, -1.0], [0.0, 0.0, 1.0]])
    return norm @ torch.linalg.inv(hom)


@given(per_call=st.integers(2, 9), k=st.integers(1, 8), seed=st.integers(0, 99))
@settings(max_examples=20, deadline=None)
def test_warps_made_several_poses_per_call_give_the_same_bytes(per_call, k, seed):
    # Off the CPU the renderer warps several poses per call; that must change no value.
    from blursynth.nonuniform import _warp_sum
    img = _smooth_image(20, 30, seed=seed).expand(2, -1, -1, -1).contiguous()
    img[1] = img[1].flip(-1)
    sample = _random_sampling(2, k, seed)
    weights = torch.softmax(torch.randn(2, k, generator=torch.Generator().manual_seed(seed)), dim=1)
    one = _warp_sum(img, sample, weights, "reflection", 1)
    assert torch.equal(_warp_sum(img, sample, weights, "reflection", per_call), one)
    # against the sum written out: every pixel (x, y) reads the image at sample @ (x, y, 1)
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # (H, W, 3)
    ref = torch.zeros_like(img)
    for j in range(k):
        p = torch.einsum("bij,hwj->bhwi", sample[:, j], pix)
        warped = torch.nn.functional.grid_sample(img, p[..., :2] / p[..., 2:], padding_mode="reflection",
                                                 align_corners=True)
        ref += weights[:, j, None, None, None] * warped
    assert torch.allclose(one, ref, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_groups_poses_without_changing_bytes():
    from blursynth.nonuniform import _warp_sum
    cam = Camera(400.0, 64, 48)
    traj = _shake(0.004, -0.003, 0.05)
    img = _smooth_image(48, 64, seed=2)
    gpu = render_nonuniform(img.cuda(), traj, cam)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), render_nonuniform(img, traj, cam), atol=1e-5, rtol=0)
    sample = _random_sampling(1, 7, 0).cuda()
    weights = torch.full((1, 7), 1 / 7, device="cuda")
    x = torch.rand(1, 3, 20, 30, device="cuda")
    assert torch.equal(_warp_sum(x, sample, weights, "zeros", 7), _warp_sum(x, sample, weights, "zeros", 1))


def test_a_local_kernel_too_large_names_the_point_and_the_parameters():
    """A point far outside the frame used to get the CLI's '(--kernel-size) ... (--fit scale)' hint."""
    from blursynth.kernel import KernelFitError
    cam = Camera(500.0, 64, 64)
    traj = Trajectory.cat([_shake(0.0, 0.0, 0.0), _shake(0.0, 0.0, 0.02)])  # item 1 rolls
    pts = torch.tensor([[31.5, 31.5], [5000.0, 5000.0]])
    with pytest.raises(KernelFitError, match=r"pixel \(5000, 5000\) of item 1 .*kernel size at least \d+.*fit to 'scale'") as err:
        kernels_at(pts, traj, cam, 9)
    assert "--" not in str(err.value) and err.value.item == 1
    assert kernels_at(pts, traj, cam, 9, fit="scale").shape == (2, 2, 9, 9)


def test_integer_images_are_refused_before_any_work():
    """render_nonuniform(uint8) failed with a singular-matrix error from deep inside."""
    cam = Camera(500.0, 30, 20)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3))
    with pytest.raises(TypeError, match=r"image must be float32 or float64, got torch.uint8"):
        render_nonuniform(torch.zeros(1, 3, 20, 30, dtype=torch.uint8), traj, cam)


def test_an_item_renders_the_same_alone_as_in_any_batch():
    # its pose grid follows its own motion, not the batch's fastest (a convention: results do not
    # depend on the batch); a still item beside a moving one shows it most
    from blursynth.trajectory import CameraShake
    cam = Camera.from_35mm(35.0, 48, 40)
    shakes = CameraShake().sample(3, seed=0)
    image = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    depth = torch.tensor([0.5, 2.0, math.inf])
    for d in (math.inf, depth):
        both = render_nonuniform(image, shakes, cam, depth_m=d)
        for i in range(3):
            alone = render_nonuniform(image[i:i + 1], shakes[i], cam,
                                      depth_m=d[i:i + 1] if torch.is_tensor(d) else d)
            assert torch.equal(both[i:i + 1], alone), (d, i)


def test_points_px_of_the_wrong_shape_are_refused_not_reshaped():
    """A (2, 3) points_px was read as 3 points, a 1-D (x, y) as one point: both are refused."""
    cam = Camera(500.0, 30, 20)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3))
    for bad, shape in ((torch.zeros(2, 3), r"\(2, 3\)"), (torch.tensor([10.0, 10.0]), r"\(2,\)"),
                       (torch.zeros(1, 1, 2), r"\(1, 1, 2\)")):
        with pytest.raises(ValueError, match=rf"points_px must be \(P, 2\) .*got shape {shape}"):
            kernels_at(bad, traj, cam, 5)
    assert kernels_at(torch.tensor([[10.0, 10.0]]), traj, cam, 5).shape == (1, 1, 5, 5)
    assert kernels_at([[10.0, 10.0], [3.0, 4.0]], traj, cam, 5).shape == (1, 2, 5, 5)
    with pytest.raises(ValueError, match="points_px contains NaN"):  # (it blamed the internal path_px)
        kernels_at([[float("nan"), 10.0]], traj, cam, 5)


def test_padding_mode_and_depth_are_checked_against_what_the_user_passed():
    """padding_mode="reflect" got grid_sample's message; a (2,) depth_m for 3 images reported an
    internal shape (2, 1, 1), or (0, 1, 1)."""
    cam = Camera(500.0, 30, 20)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3), translation=torch.zeros(1, 2, 3))
    image = torch.zeros(3, 3, 20, 30)
    with pytest.raises(ValueError, match=r"padding_mode must be one of \('reflection', 'border', 'zeros'\), got 'reflect'"):
        render_nonuniform(image, traj, cam, padding_mode="reflect")
    for depth, shape in ((torch.tensor([1.0, 2.0]), r"\(2,\)"), (torch.ones(3, 1), r"\(3, 1\)"),
                         ([1.0, 2.0, 3.0, 4.0], r"\(4,\)"), (torch.ones(4), r"\(4,\)")):  # 4 for 3 was cut to 3
        with pytest.raises(ValueError, match=rf"depth_m must be a float or a \(3,\) tensor, one depth per image "
                                             rf"of the batch of 3; got shape {shape}$"):
            render_nonuniform(image, traj, cam, depth_m=depth)
    with pytest.raises(ValueError, match=r"batch of 1; got shape \(2,\)"):
        render_nonuniform(image[:1], traj, cam, depth_m=torch.tensor([1.0, 2.0]))
    assert render_nonuniform(image, traj, cam, depth_m=[1.0, 2.0, 3.0]).shape == image.shape


@pytest.mark.parametrize("per_call", [1, 3])  # 1: the CPU's one pose per call; 3: several, as off the CPU
def test_gradients_reach_the_image(per_call, monkeypatch):
    """Backward through render_nonuniform raised 'one of the variables needed for gradient computation
    has been modified by an inplace operation': every warp's sampling grid was written into one reused
    buffer, which grid_sample keeps for its backward pass. The render is linear in the image, so its
    gradient is checked numerically, and the forward values must not change under autograd."""
    import blursynth.nonuniform as nu
    real = nu._warp_sum
    monkeypatch.setattr(nu, "_warp_sum", lambda image, sample, weights, mode, _: real(image, sample, weights,
                                                                                      mode, per_call))
    cam = Camera(20.0, 8, 6)
    traj = _shake(0.02, -0.015, 0.1)
    x = torch.rand(2, 2, 6, 8, dtype=torch.float64, requires_grad=True)
    out = render_nonuniform(x, traj, cam)
    with torch.no_grad():
        assert torch.equal(out, render_nonuniform(x, traj, cam))
    assert torch.autograd.gradcheck(lambda a: render_nonuniform(a, traj, cam), (x,))


def test_grid_points_refuses_counts_that_are_not_positive_integers():
    """grid_points(cam, 1.5, 3) returned 6 points (two rows, placed for 1.5), cols=-1 failed inside
    torch.arange and rows=0 gave no points; they are now refused, naming both counts."""
    cam = Camera(500.0, 30, 20)
    for rows, cols in ((1.5, 3), (2, -1), (0, 3), (True, 3)):
        with pytest.raises(ValueError, match="rows and cols as integers >= 1"):
            grid_points(cam, rows, cols)
    assert torch.equal(grid_points(cam, np.int64(2), 3), grid_points(cam, 2, 3))


def test_the_public_pose_helpers_name_a_missing_camera_or_trajectory_and_bad_points():
    """densify, motion_samples, centering_shift, local_paths and grid_points are public (kernels_at's docstring
    sends readers to local_paths), but a camera of None or a tensor of poses for the trajectory failed deep
    inside as "'NoneType' object has no attribute 'width'", and local_paths' points as torch's "new(): invalid
    data type 'str'" or "shape '[-1, 2]' is invalid for input of size 3"; render_nonuniform and kernels_at
    name them."""
    from blursynth.nonuniform import centering_shift, local_paths, motion_samples
    from blursynth.trajectory import CameraShake
    cam = Camera(500.0, 30, 20)
    traj = CameraShake().sample(1, seed=0)
    calls = {"densify": lambda tr, c: densify(tr, c), "motion_samples": lambda tr, c: motion_samples(tr, c),
             "centering_shift": lambda tr, c: centering_shift(tr, c),
             "local_paths": lambda tr, c: local_paths([[1.0, 2.0]], tr, c)}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=r"^camera must be a blursynth.camera.Camera"):
            call(traj, None)
        with pytest.raises(TypeError, match=r"^trajectory must be a blursynth.trajectory.Trajectory"):
            call(traj.rotation, cam)
        call(traj, cam)  # (and the right arguments still go through)
    with pytest.raises(TypeError, match=r"^camera must be a blursynth.camera.Camera"):
        grid_points(None, 2, 3)
    for bad in ("ab", [1.0, 2.0, 3.0], [[1.0, math.nan]]):
        with pytest.raises(ValueError, match=r"^points_px "):
            local_paths(bad, traj, cam)
    # one point given as a flat (x, y) pair is read as before
    assert torch.equal(local_paths([1.0, 2.0], traj, cam)[0], local_paths([[1.0, 2.0]], traj, cam)[0])


def test_an_items_local_kernels_are_the_same_alone_as_in_any_batch():
    """kernels_at densified the poses of the whole batch on one grid, fine enough for its fastest item:
    an item's local kernels then depended on the other items (1.7e-3 apart here) and were not the ones
    its render_nonuniform, which works item by item, used (a convention: results do not depend on the batch)."""
    from blursynth.trajectory import CameraShake
    cam = Camera.from_35mm(35.0, 480, 320)
    shakes = CameraShake(samples=8).sample(3, seed=0)
    pts = torch.tensor([[10.0, 10.0], [240.0, 160.0], [470.0, 300.0]])
    depth = torch.tensor([0.5, 2.0, math.inf])
    for d in (math.inf, depth):
        both = kernels_at(pts, shakes, cam, 31, depth_m=d, fit="scale")
        for i in range(3):
            alone = kernels_at(pts, shakes[i], cam, 31, depth_m=d[i:i + 1] if torch.is_tensor(d) else d, fit="scale")
            assert torch.equal(both[i:i + 1], alone), (d, i)


def test_a_zero_length_exposure_is_centred_as_its_uniform_kernel():
    """A zero-length exposure (times that do not advance) weighs its segments equally in kernel.rasterize,
    i.e. as if its samples were evenly spaced. exposure_weights gave it 1 / T per sample instead, so the
    centring shift (3 px for this path) was not its kernel's centre of mass (3.25 px), and densify's
    equal-time pieces weighed its segments by their length: the render and the local kernels were those
    of another motion (the render 0.17 off that of the evenly spaced samples, on a random image)."""
    path = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [5.0, 0.0]]])
    still = Trajectory(t=torch.zeros(1, 3), path_px=path)
    even = Trajectory(t=torch.tensor([[0.0, 0.5, 1.0]]), path_px=path)
    assert torch.equal(exposure_weights(still.t), exposure_weights(even.t))
    assert abs(float(exposure_weights(torch.zeros(1, 1)).sum()) - 1) < 1e-7
    cam = Camera(500.0, 30, 20)
    from blursynth.nonuniform import centering_shift
    assert torch.allclose(centering_shift(still, cam), torch.tensor([[3.25, 0.0]]))
    assert torch.equal(kernels(still, size=15), kernels(even, size=15))
    pts = [cam.principal_point, [3.0, 4.0]]
    assert torch.equal(kernels_at(pts, still, cam, 15), kernels_at(pts, even, cam, 15))
    img = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(render_nonuniform(img, still, cam), render_nonuniform(img, even, cam))


def test_a_camera_turned_to_face_away_is_refused():
    """Turning past 90 degrees from part of the scene made the render read mirrored pixels without a
    word (the blurred frame's side seeing past the sharp frame's cone), or ask for tens of gigabytes
    (sharp-frame points passing through infinity)."""
    from blursynth.camera import BehindCameraError
    rot = torch.zeros(1, 2, 3)
    rot[0, 1, 1] = math.pi / 4  # yaw, turning right
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot)
    # The principal point on the left edge: the frame spans 0 to 63 degrees right of the axis, so
    # every sharp-frame point stays in front, while the right edge then looks 108 degrees off it.
    cam = Camera(16.0, 32, 8, cx=0.0)
    assert torch.isfinite(kernels_at([[31.0, 4.0]], traj, cam, 63, center=False)).all()
    image = torch.rand(1, 1, 8, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(BehindCameraError, match=r"blurred frame's pixel \(31, 0\) is at or behind the camera"):
        render_nonuniform(image, traj, cam)
    rot[0, 1, 1] = 2.0  # sharp-frame points end behind the camera
    with pytest.raises(BehindCameraError, match=r"scene point of pixel \(0, 0\) is at or behind the camera"):
        render_nonuniform(image, Trajectory(t=traj.t, rotation=rot), cam)


def test_a_camera_facing_away_names_its_item_in_a_batch():
    """Each item is rendered (and its local paths worked out) alone, so the message said "item 0" or
    nothing whichever item it was."""
    from blursynth.camera import BehindCameraError
    rot = torch.zeros(3, 2, 3)
    rot[1, 1, 1] = 2.0  # item 1 turns 115 degrees
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]).repeat(3, 1), rotation=rot)
    cam = Camera(16.0, 32, 8)
    with pytest.raises(BehindCameraError, match=r"^item 1: .* is at or behind the camera at t = 0\.1 s: "):
        render_nonuniform(torch.rand(3, 1, 8, 32), traj, cam)
    with pytest.raises(BehindCameraError, match=r"^item 1: .* is at or behind the camera at t = 0\.1 s: "):
        kernels_at([[16.0, 4.0]], traj, cam, 15)


def test_a_camera_turned_to_a_hair_of_90_degrees_is_refused_not_densified():
    """Turned to 1e-4 rad short of 90 degrees from the frame's edge, the edge's image runs out towards
    infinity while staying in front: densifying its path to 0.125 px asked for gigabytes (killed for
    memory), rather than naming the motion."""
    cam = Camera(16.0, 32, 8)  # the right edge 15.5 px off the axis: atan(15.5 / 16) from it
    rot = torch.zeros(1, 2, 3)
    rot[0, 1, 1] = math.pi / 2 - math.atan(15.5 / 16) - 1e-4
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot)
    message = r"travels 1\.\d+e\+05 px during the exposure, more than 100000 px: the camera turns to within a hair of 90"
    with pytest.raises(ValueError, match=message):
        render_nonuniform(torch.rand(1, 1, 8, 32), traj, cam)
    with pytest.raises(ValueError, match=message):
        kernels_at([[31.0, 4.0]], traj, cam, 63)


def _render_poses(image, traj, cam, **kw):
    """The maps ``H'_j`` (blurred-frame pixel at pose j <- sharp pixel, centring included) of a render,
    recovered from the sampling maps it hands to the warps: ``sample_j = norm @ H'_j^-1``."""
    import blursynth.nonuniform as nu
    seen = []
    real = nu._warp_sum

    def spy(image, sample, weights, mode, per_call):
        seen.append(sample.double())
        return real(image, sample, weights, mode, per_call)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nu, "_warp_sum", spy)
        render_nonuniform(image, traj, cam, **kw)
    return torch.linalg.inv(seen[0][0].double())  # (K, 3, 3), up to the common factor norm^-1


@given(yaw=st.floats(-0.3, 0.3), pitch=st.floats(-0.3, 0.3), roll=st.floats(-0.3, 0.3),
       back=st.floats(-0.3, 0.3), side=st.floats(-0.05, 0.05), center=st.booleans())
@example(yaw=0.01, pitch=0.0, roll=0.0, back=-0.3, side=0.05, center=False)  # backing away: 0.77 px before
@example(yaw=0.2, pitch=0.2, roll=0.1, back=0.0, side=0.0, center=True)  # wide angle, off-centre: 0.57 px
@settings(max_examples=15, deadline=None)
def test_rendered_content_moves_at_most_the_step_between_poses_at_every_pixel(yaw, pitch, roll, back, side, center):
    """motion_samples spaced its poses by how far the sharp frame's points move; the render's copies are
    seen at the blurred frame's pixels, which under a large motion show points from outside the sharp
    frame that move faster (a camera backing away from a near plane, a wide lens turning): ghosts up
    to 0.77 px apart where the renderer promises 0.5. Measured here at every pixel, from the maps the
    renderer actually warps with."""
    cam = Camera(40.0, 32, 24, cx=5.0, cy=5.0)
    s = torch.linspace(0, 1, 9)
    rotation = _shake(yaw, pitch, roll).rotation
    traj = Trajectory(t=0.1 * s[None], rotation=rotation, translation=torch.stack([side * s, 0 * s, back * s], -1)[None])
    maps = _render_poses(torch.zeros(1, 1, 24, 32), traj, cam, depth_m=0.5, center=center)
    to_grid = torch.tensor([[2 / 31, 0.0, -1.0], [0.0, 2 / 23, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    pixel_maps = maps @ to_grid  # H'_j: sharp pixel -> blurred-frame pixel
    relative = pixel_maps[1:] @ torch.linalg.inv(pixel_maps[:-1])  # content at pose j's pixel -> pose j+1's
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")
    p = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3).double()
    q = torch.einsum("kij,pj->kpi", relative, p)
    step = (q[..., :2] / q[..., 2:] - p[:, :2]).norm(dim=-1)
    assert step.numel() == 0 or float(step.max()) <= 0.5 * (1 + 1e-3)  # (a still camera: one pose)


def test_times_that_go_back_and_poses_that_are_not_finite_are_refused():
    """render_nonuniform took sample times that go back (weighing poses negatively) or are NaN without
    a word, where kernels_at refused them; a NaN pose failed with 'cannot convert float NaN to integer',
    a trajectory of no samples with an IndexError."""
    cam = Camera(100.0, 32, 24)
    image = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    yaw = torch.tensor([0.0, 0.01, 0.02, 0.04])
    rotation = torch.stack([torch.zeros(4), yaw, torch.zeros(4)], -1)[None]
    for t in ([0.0, 0.08, 0.02, 0.1], [0.0, math.nan, 0.05, 0.1], [0.0, 0.02, 0.05, math.inf]):
        traj = Trajectory(t=torch.tensor([t]), rotation=rotation)
        for call in (lambda: render_nonuniform(image, traj, cam), lambda: kernels_at([[3.0, 4.0]], traj, cam, 15)):
            with pytest.raises(ValueError, match=r"trajectory\.t must be finite sample times in seconds, non-decreasing"):
                call()
    times = torch.tensor([[0.0, 0.02, 0.05, 0.1]])
    for name in ("rotation", "translation"):
        bad = rotation.clone()
        bad[0, 2, 1] = math.nan
        with pytest.raises(ValueError, match=rf"trajectory\.{name} contains NaN or infinite values"):
            render_nonuniform(image, Trajectory(t=times, **{name: bad}), cam, depth_m=1.0)
    with pytest.raises(ValueError, match=r"no samples \(T = 0\)"):
        render_nonuniform(image, Trajectory(t=torch.zeros(1, 0), rotation=torch.zeros(1, 0, 3)), cam)
    # a zero-length exposure (times that do not advance) is a valid motion
    assert render_nonuniform(image, Trajectory(t=torch.zeros(1, 4), rotation=rotation), cam).isfinite().all()


def test_kernels_at_checks_depth_m_against_its_items_as_the_renderer_does():
    """kernels_at ignored a depth_m of the wrong length for a rotation-only motion, and for one with
    translation reported an internal (1,) tensor and shape (3, 1, 1)."""
    from blursynth.trajectory import CameraShake
    cam = Camera(100.0, 32, 24)
    shakes = CameraShake().sample(2, seed=0)
    for traj in (shakes, Trajectory(t=shakes.t, rotation=shakes.rotation)):
        for depth, shape in ((torch.tensor([1.0, 2.0, 3.0]), r"\(3,\)"), (torch.ones(2, 1), r"\(2, 1\)")):
            with pytest.raises(ValueError, match=rf"depth_m must be a float or a \(2,\) tensor, one depth per item "
                                                 rf"of the trajectory of 2; got shape {shape}$"):
                kernels_at([[3.0, 4.0]], traj, cam, 15, depth_m=depth)
        two = kernels_at([[3.0, 4.0]], traj, cam, 15, depth_m=[1.0, 2.0])
        assert torch.equal(two[1:], kernels_at([[3.0, 4.0]], traj[1], cam, 15, depth_m=2.0))


def test_empty_batches_give_empty_results():
    """A batch of no images (and a trajectory of no items, which the models' sample_items draws)
    failed inside amax and torch.cat instead of giving an empty result, as blursynth.blur does."""
    from blursynth.trajectory import CameraShake
    cam = Camera(100.0, 32, 24)
    none = CameraShake().sample_items(torch.zeros(0, dtype=torch.long))
    for traj in (none, CameraShake().sample(1)):
        assert render_nonuniform(torch.zeros(0, 3, 24, 32), traj, cam).shape == (0, 3, 24, 32)
    assert kernels_at([[3.0, 4.0], [5.0, 6.0]], none, cam, (7, 9)).shape == (0, 2, 7, 9)


def _moving(yaw, pitch, roll, tx, ty, tz, steps=9):
    """:func:`_shake`'s rotation with a straight translation (metres) over the exposure."""
    shake = _shake(yaw, pitch, roll, steps=steps)
    s = torch.linspace(0, 1, steps)[:, None]
    return Trajectory(t=shake.t, rotation=shake.rotation, translation=(torch.tensor([tx, ty, tz]) * s)[None])


_motion = dict(yaw=st.floats(-0.05, 0.05), pitch=st.floats(-0.05, 0.05), roll=st.floats(-0.1, 0.1),
               tx=st.floats(-0.02, 0.02), ty=st.floats(-0.02, 0.02), tz=st.floats(-0.02, 0.02))


@given(**_motion, x=st.integers(12, 28), y=st.integers(12, 28), center=st.booleans())
@settings(max_examples=25, deadline=None)
def test_a_points_rendered_streak_is_its_local_kernel(yaw, pitch, roll, tx, ty, tz, x, y, center):
    """The light of one sharp pixel lands where its local kernel says: the render of an impulse at
    (x, y) is kernels_at's kernel there, placed on (x, y), in direction and shape (a sign or centring
    error in either moves the centre of mass by pixels; what is left is second order in the motion)."""
    cam = Camera(100.0, 41, 41, cx=14.0, cy=25.0)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    image = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    image[0, 0, y, x] = 1
    out = render_nonuniform(image, traj, cam, depth_m=1.0, center=center, padding_mode="zeros")[0, 0]
    kernel = kernels_at([[float(x), float(y)]], traj, cam, 23, depth_m=1.0, center=center)[0, 0].double()
    streak = out[y - 11:y + 12, x - 11:x + 12]
    assert abs(float(out.sum()) - float(streak.sum())) < 1e-9  # (all of it within the kernel's reach)
    streak = streak / streak.sum()  # (zoom and perspective change its mass by a few %: radiance is warped)
    yy, xx = torch.meshgrid(torch.arange(23.0, dtype=torch.float64), torch.arange(23.0, dtype=torch.float64),
                            indexing="ij")
    def centre(k):
        return torch.stack([(k * xx).sum(), (k * yy).sum()])
    assert float((centre(streak) - centre(kernel)).norm()) < 0.1
    assert float((streak - kernel).abs().sum()) < 0.15


@given(**_motion, center=st.booleans(), uneven=st.booleans())
@settings(max_examples=15, deadline=None)
def test_reversing_time_changes_neither_the_render_nor_the_local_kernels(yaw, pitch, roll, tx, ty, tz, center, uneven):
    cam = Camera(60.0, 32, 24, cx=20.0, cy=8.0)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    if uneven:  # (with evenly spaced times, a reversal that left the poses or the times as they were went unseen)
        traj = Trajectory(t=0.1 * torch.linspace(0, 1, traj.t.shape[1])[None] ** 2, rotation=traj.rotation,
                          translation=traj.translation)
    image = _smooth_image(24, 32, seed=4)
    back = traj.reversed()
    # (float32 rounding of the interpolated poses: 3e-5 seen; a pose grid chosen differently either
    # way, as a one-way step measure once did, is 1e-3 off)
    forward = render_nonuniform(image, traj, cam, depth_m=0.5, center=center)
    assert (forward - render_nonuniform(image, back, cam, depth_m=0.5, center=center)).abs().max() < 1e-4
    pts = [[0.0, 0.0], [31.0, 23.0], [12.0, 5.0]]
    here = kernels_at(pts, traj, cam, 31, depth_m=0.5, center=center)
    assert (here - kernels_at(pts, back, cam, 31, depth_m=0.5, center=center)).abs().max() < 1e-4


@given(**_motion)
@settings(max_examples=15, deadline=None)
def test_float64_agrees_with_float32_and_a_flat_image_stays_flat(yaw, pitch, roll, tx, ty, tz):
    cam = Camera(60.0, 32, 24)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    image = _smooth_image(24, 32, seed=5)
    single = render_nonuniform(image, traj, cam, depth_m=0.5)
    double = render_nonuniform(image.double(), traj, cam, depth_m=0.5)
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    assert (single.double() - double).abs().max() < 1e-5
    # The exposure weights sum to 1 and reflection padding keeps a flat image flat, to the border.
    flat = render_nonuniform(torch.full((1, 3, 24, 32), 0.3, dtype=torch.float64), traj, cam, depth_m=0.5)
    assert (flat - 0.3).abs().max() < 1e-6


# ---------------------------------------------------------------------------------------------
# The maths' standard for the projective path: the still camera, first moments of local kernels
# (against a projection written out here), agreement with the uniform path where the motion is uniform,
# and a quarter turn of the motion about the optical axis turning renders and local kernels.
# ---------------------------------------------------------------------------------------------


def _kernel_centre_of_mass(k):
    """``(..., 2)`` centre of mass (x, y) of kernels ``(..., h, w)`` relative to their centre pixel, float64."""
    h, w = k.shape[-2:]
    k = k.double() / k.double().sum((-2, -1), keepdim=True)
    xs = torch.arange(w, dtype=torch.float64) - w // 2
    ys = torch.arange(h, dtype=torch.float64) - h // 2
    return torch.stack([(k.sum(-2) * xs).sum(-1), (k.sum(-1) * ys).sum(-1)], -1)


def _rotation_matrices(r):
    """Rodrigues' formula: ``(..., 3, 3)`` rotation matrices of rotation vectors ``r`` ``(..., 3)``, float64."""
    r = r.double()
    angle = r.norm(dim=-1)[..., None, None]
    axis = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)
    return torch.eye(3, dtype=torch.float64) + torch.sin(angle) * skew + (1 - torch.cos(angle)) * skew @ skew


def _mean_image_of(point, traj, cam, depth, per_segment=400):
    """Exposure-time average ``(2,)`` of where pixel ``point`` of the frame at t = 0 is imaged, in pixels,
    written out here: the poses interpolated linearly ``per_segment`` times finer, the scene point
    ``X = d K^-1 p`` (the ray ``K^-1 p`` for a distant scene) seen at ``R(t)^T (X - c(t))``, averaged
    over time by the trapezoidal rule (one item, float64)."""
    t = traj.t[0].double()
    s = torch.linspace(0, 1, per_segment + 1, dtype=torch.float64)[:-1]

    def fine(v):  # (T, D) -> (per_segment * (T - 1) + 1, D)
        v = v.double()
        a, b = v[:-1], v[1:]
        return torch.cat([(a[:, None] + s[None, :, None] * (b - a)[:, None]).reshape(-1, v.shape[-1]), v[-1:]])
    times = fine(t[:, None])[:, 0]
    rot = _rotation_matrices(fine(traj.rotation[0])) if traj.rotation is not None else torch.eye(3, dtype=torch.float64)
    cx, cy = cam.principal_point
    ray = torch.tensor([(point[0] - cx) / cam.focal_px, (point[1] - cy) / cam.focal_px, 1.0], dtype=torch.float64)
    if math.isinf(depth) or traj.translation is None:
        scene = ray.expand(len(times), 3)
    else:
        scene = depth * ray - fine(traj.translation[0])
    seen = (rot.transpose(-1, -2) @ scene[..., None])[..., 0]
    image = cam.focal_px * seen[:, :2] / seen[:, 2:] + torch.tensor([cx, cy], dtype=torch.float64)
    dt = times[1:] - times[:-1]
    return ((image[1:] + image[:-1]) / 2 * dt[:, None]).sum(0) / dt.sum()


@given(**_motion, x=st.floats(-8.0, 40.0), y=st.floats(-8.0, 30.0), center=st.booleans(), uneven=st.booleans())
@settings(max_examples=20, deadline=None)
def test_a_local_kernels_centre_of_mass_is_the_time_average_of_its_points_image(yaw, pitch, roll, tx, ty, tz, x, y,
                                                                                 center, uneven):
    """First moments of kernels_at: the local kernel at p sums to 1 and its centre of mass is the
    exposure-time average of p's image less p, less (center=True) the same average for the principal
    point, which the render removes. The projection is written out here (Rodrigues, K, R^T (X - c)),
    with a principal point off the frame's centre, so a centring on the wrong point shows under roll."""
    cam = Camera(100.0, 32, 24, cx=14.0, cy=9.0)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    if uneven:  # the same poses at uneven times (slow at the start)
        traj = Trajectory(t=0.1 * torch.linspace(0, 1, traj.t.shape[1])[None] ** 2, rotation=traj.rotation,
                          translation=traj.translation)
    k = kernels_at([[x, y]], traj, cam, 41, depth_m=1.0, center=center)[0, 0]
    assert (k >= 0).all() and abs(float(k.sum()) - 1) < 1e-5
    want = _mean_image_of((x, y), traj, cam, 1.0) - torch.tensor([x, y], dtype=torch.float64)
    if center:
        want = want - (_mean_image_of(cam.principal_point, traj, cam, 1.0)
                       - torch.tensor(cam.principal_point, dtype=torch.float64))
    assert float((_kernel_centre_of_mass(k) - want).abs().max()) < 5e-3  # (2.3e-4 seen over 80 draws)


@given(steps=st.integers(1, 6), seed=st.integers(0, 1000), depth=st.floats(0.2, 50.0) | st.just(math.inf),
       kind=st.sampled_from(["6-DoF", "2-D"]), center=st.booleans(), cx=st.floats(-10.0, 40.0),
       cy=st.floats(-10.0, 30.0), focal=st.floats(20.0, 2000.0))
@settings(max_examples=20, deadline=None)
def test_a_still_camera_renders_the_identity_and_has_the_identity_kernel_everywhere(steps, seed, depth, kind, center,
                                                                                    cx, cy, focal):
    cam = Camera(focal, 24, 20, cx=cx, cy=cy)
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(1, steps, generator=g) * 0.1).sort(1).values
    if kind == "2-D":
        traj = Trajectory(t=t, path_px=torch.zeros(1, steps, 2))
    else:
        traj = Trajectory(t=t, rotation=torch.zeros(1, steps, 3), translation=torch.zeros(1, steps, 3))
    image = torch.rand(2, 3, 20, 24, generator=g)
    out = render_nonuniform(image, traj, cam, depth_m=depth, center=center)
    assert (out - image).abs().max() < 1e-5
    pts = torch.tensor([[0.0, 0.0], [23.0, 19.0], [cx, cy], [-50.0, 70.0]])
    k = kernels_at(pts, traj, cam, (5, 7), depth_m=depth, center=center)
    delta = torch.zeros(5, 7)
    delta[2, 3] = 1
    assert torch.equal(k * (1 - delta), torch.zeros_like(k))
    assert (k[..., 2, 3] - 1).abs().max() < 1e-6


def _uniform_motion(kind, data):
    """A motion that moves every pixel of a frame alike, with a camera for it, and the scene depth:
    "translation" (in-plane, 6-DoF, a plane at a finite depth), "path" (a 2-D path) or "rotation"
    (small pitch and yaw of a long lens, distant scene: uniform to 1e-3 px over the frame)."""
    steps = data.draw(st.integers(2, 6), label="steps")
    gaps = data.draw(st.lists(st.floats(0.1, 1.0), min_size=steps - 1, max_size=steps - 1), label="gaps")
    t = torch.cat([torch.zeros(1), torch.tensor(gaps).cumsum(0)])[None] * 0.02
    def values(lo, hi):
        v = data.draw(st.lists(st.floats(lo, hi), min_size=2 * (steps - 1), max_size=2 * (steps - 1)), label=kind)
        return torch.cat([torch.zeros(1, 2), torch.tensor(v).reshape(steps - 1, 2)])[None]
    if kind == "translation":
        depth = data.draw(st.floats(0.5, 3.0), label="depth")
        move = values(-0.02, 0.02)
        traj = Trajectory(t=t, translation=torch.cat([move, torch.zeros(1, steps, 1)], -1))
        return traj, Camera(100.0, 40, 32, cx=25.0, cy=12.0), depth
    if kind == "path":
        return Trajectory(t=t, path_px=values(-4.0, 4.0)), Camera(100.0, 40, 32), math.inf
    turn = values(-2e-3, 2e-3)
    return Trajectory(t=t, rotation=torch.cat([turn, torch.zeros(1, steps, 1)], -1)), Camera(2000.0, 40, 32), math.inf


@given(kind=st.sampled_from(["translation", "path", "rotation"]), data=st.data())
@settings(max_examples=12, deadline=None)
def test_where_the_motion_is_uniform_the_render_is_the_uniform_blur_and_every_local_kernel_the_uniform_kernel(kind,
                                                                                                             data):
    """Uniform and projective agree where they must: an in-plane translation in front of a plane at any
    depth, a 2-D path, or a small pitch and yaw of a distant scene (uneven times, random polylines) renders
    as blursynth.blur with the principal point's kernel away from the border, and kernels_at gives that
    kernel at every point, in and out of the frame. (test_distant_scene_without_roll_matches_uniform_blur
    covers one family of smooth rotations; test_small_in_plane_translation_path_matches_uniform_blur one
    2-D path; neither compared local kernels away from the principal point.)"""
    traj, cam, depth = _uniform_motion(kind, data)
    k = kernels(traj, cam, 21, depth_m=depth)[0]
    img = _smooth_image(32, 40, seed=6)
    out = render_nonuniform(img, traj, cam, depth_m=depth, max_step_px=0.125)[0]
    ref = blur(img, k, boundary="reflect")[0]
    m = 11  # away from the border, where the padding differs
    assert float((out - ref)[:, m:-m, m:-m].abs().max()) < 3e-3
    pts = torch.cat([grid_points(cam, 3, 3), torch.tensor([[-30.0, 60.0], [cam.principal_point[0], cam.principal_point[1]]])])
    local = kernels_at(pts, traj, cam, 21, depth_m=depth)[0]
    # The same centre of mass everywhere: exactly (to float rounding) for a translation, to how far a
    # point's image path departs from the principal point's for the rotation: about theta * r**2 / f per
    # axis, with both axes at most 2 * 2e-3 * 50**2 / 2000 = 5e-3 px at (-30, 60), 50 px from the
    # principal point (2.4e-3 px seen for a still pose at theta = 1.95e-3 on both axes).
    com_tol = 5e-3 if kind == "rotation" else 1e-4
    assert float((_kernel_centre_of_mass(local) - _kernel_centre_of_mass(k)).abs().max()) < com_tol
    if kind != "rotation":  # every point's local path is the same: so is its kernel
        assert float((local - local[-1]).abs().max()) < 1e-5
    # The same kernel, up to its rasterisation: kernels_at rasterises the path cut at the densified poses,
    # and a segment cut in two gets other sub-steps (kernel._splat: 1e-2 on a 1 px segment).
    assert float((local - k).abs().max()) < 3e-2 and float((local - k).abs().sum((-2, -1)).max()) < 0.1


def _quarter_turn(traj):
    """The motion turned by 90 degrees about the optical axis: every rotation vector and translation
    mapped by R_z(90 degrees), (x, y, z) -> (-y, x, z); its image motion is the original's turned by 90
    degrees about the principal point, (dx, dy) -> (-dy, dx), clockwise on screen with y down."""
    def turn(v):
        return None if v is None else torch.stack([-v[..., 1], v[..., 0], v[..., 2]], -1)
    return Trajectory(t=traj.t, rotation=turn(traj.rotation), translation=turn(traj.translation))


@given(**_motion, x=st.integers(0, 23), y=st.integers(0, 23), center=st.booleans())
@settings(max_examples=12, deadline=None)
def test_a_quarter_turn_of_the_motion_about_the_optical_axis_turns_the_render_and_the_local_kernels(
        yaw, pitch, roll, tx, ty, tz, x, y, center):
    """Rotating the motion by 90 degrees about the optical axis, on a square frame whose principal point
    is its centre, turns everything by 90 degrees: the render of the turned image is the turned render,
    and the local kernel at the turned point is the turned kernel (np.rot90(., -1): (x, y) -> (-y, x)
    about the centre, x right and y down), up to float rounding. A transposed axis, a roll taken the other
    way, or a centre half a pixel off does not commute with the turn."""
    cam = Camera(60.0, 24, 24)  # principal point (11.5, 11.5)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    turned = _quarter_turn(traj)
    image = _smooth_image(24, 24, seed=7)
    out = render_nonuniform(image, traj, cam, depth_m=0.5, center=center)
    out_turned = render_nonuniform(torch.rot90(image, -1, (-2, -1)), turned, cam, depth_m=0.5, center=center)
    assert float((out_turned - torch.rot90(out, -1, (-2, -1))).abs().max()) < 1e-4
    pts = torch.tensor([[float(x), float(y)], [0.0, 0.0], [23.0, 5.0], [-7.0, 30.0]])
    turned_pts = torch.stack([23.0 - pts[:, 1], pts[:, 0]], -1)  # p -> c + R90 (p - c), c = (11.5, 11.5)
    k = kernels_at(pts, traj, cam, 31, depth_m=0.5, center=center)
    k_turned = kernels_at(turned_pts, turned, cam, 31, depth_m=0.5, center=center)
    assert float((k_turned - torch.rot90(k, -1, (-2, -1))).abs().max()) < 1e-4


@given(**{**_motion, "tz": st.floats(-0.06, 0.06)}, center=st.booleans())
@example(yaw=0.0335, pitch=-0.0294, roll=0.0186, tx=-0.0155, ty=-0.0139, tz=-0.0517, center=True)
@settings(max_examples=6, deadline=None)
def test_reversing_a_strong_zoom_renders_the_same(yaw, pitch, roll, tx, ty, tz, center):
    """Towards a near scene (tz = 5-12% of the depth) the image zooms, and a pose step measured one way
    only is shorter forwards than backwards: the two directions could then choose pose grids of
    different sizes and render differently (1e-3, against float32 rounding for one shared grid)."""
    cam = Camera(60.0, 32, 24, cx=20.0, cy=8.0)
    traj = _moving(yaw, pitch, roll, tx, ty, tz)
    image = _smooth_image(24, 32, seed=4)
    forward = render_nonuniform(image, traj, cam, depth_m=0.5, center=center)
    assert (forward - render_nonuniform(image, traj.reversed(), cam, depth_m=0.5, center=center)).abs().max() < 1e-4


def test_grid_points_are_row_major():
    """Row-major order (x varies fastest) was not checked: only the first and last point were, which a
    column-major order keeps."""
    cam = Camera(500.0, 30, 20)
    xs, ys = [4.5, 14.5, 24.5], [4.5, 14.5]  # cell centres: (i + 0.5) * size / count - 0.5
    assert torch.equal(grid_points(cam, 2, 3), torch.tensor([[x, y] for y in ys for x in xs]))


def test_a_camera_turned_towards_the_far_corner_is_refused_at_that_corner():
    """The homogeneous scale of a sampling map is affine in the pixel, so it is positive over the frame
    when it is at all four corners, but not when it is at three: a camera turned 0.4 rad towards the
    bottom-right, its principal point at the top-left corner, looks 93 degrees off its first axis at the
    bottom-right corner (rays 70 degrees off the axis there) and under 90 at the other three. Only a
    turn seen at the top-right corner was checked."""
    from blursynth.camera import BehindCameraError
    cam = Camera(16.0, 32, 32, cx=0.0, cy=0.0)
    rot = torch.zeros(1, 2, 3)
    rot[0, 1] = 0.4 * torch.tensor([-1.0, 1.0, 0.0]) / math.sqrt(2)  # turns +z towards (1, 1, 0): right and down
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot)
    assert torch.isfinite(kernels_at([[31.0, 31.0]], traj, cam, 63, center=False)).all()  # sharp points in front
    with pytest.raises(BehindCameraError, match=r"blurred frame's pixel \(31, 31\) is at or behind the camera"):
        render_nonuniform(torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)), traj, cam)


def test_a_path_longer_than_the_limit_in_many_short_steps_is_refused():
    """MAX_MOTION_PX bounds a point's whole path, the sum of its steps: a check of the largest single
    step passed the only test (one segment), and let 29 steps of 5,000 px through to be cut into 290,000
    poses."""
    path = torch.stack([torch.linspace(0, 145_000.0, 30), torch.zeros(30)], -1)[None]
    traj = Trajectory(t=torch.linspace(0, 0.1, 30)[None], path_px=path)
    with pytest.raises(ValueError, match=r"travels 1\.45e\+05 px during the exposure, more than 100000 px"):
        densify(traj, Camera(100.0, 32, 24))


def test_exposure_weights_of_a_zero_length_exposure_have_finite_gradients():
    """A zero-length exposure takes the equal weights; dividing by its zero total in the branch not taken
    still put NaN in the gradient with respect to the times (0 * inf), which the division by 1 there avoids."""
    for t in ([0.0, 0.0, 0.0], [0.02, 0.02]):
        times = torch.tensor([t], dtype=torch.float64, requires_grad=True)
        w = exposure_weights(times)
        (w * torch.arange(1.0, len(t) + 1, dtype=torch.float64)).sum().backward()
        assert torch.isfinite(times.grad).all() and abs(float(w.detach().sum()) - 1) < 1e-12


def test_a_step_finer_than_float32_positions_resolve_is_refused_not_cut_forever():
    """Below the float32 resolution of the probe positions (a unit is 1.2e-4 px at 1024-2048 px), steps
    of one or two units stayed over max_step_px however finely cut: each pass added poses, without end
    (max_step_px=5e-4 on a 1280x720 shake ran until killed). The cutting now stops after MAX_CUTS rounds."""
    rot = torch.tensor([[[0.0, 0.0, 0.0], [3e-4, 1e-3, 2e-4]]])
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot)
    with pytest.raises(ValueError, match=r"max_step_px: .* finer than float32 pixel positions resolve at "
                                         r"coordinates up to 2047 px; raise max_step_px"):
        densify(traj, Camera(1000.0, 2048, 1000), max_step_px=2e-4)
    # the same motion at a step they resolve, as before (not 1e-3: at 2047 px the float32 homographies' rounding
    # leaves steps that torch 2.6 measures over it after 8 rounds, and torch 2.14 does not)
    assert densify(traj, Camera(1000.0, 2048, 1000), max_step_px=5e-3).t.shape[1] > 500


def test_a_step_that_takes_more_poses_than_the_limit_is_refused_before_they_are_made():
    """max_step_px=1e-9 asked for billions of poses (the process was killed for its memory); the count
    is known before they are made."""
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), path_px=torch.tensor([[[0.0, 0.0], [150.0, 0.0]]]))
    cam = Camera(100.0, 64, 48)
    for step in (1e-4, 1e-9):
        with pytest.raises(ValueError, match=r"max_step_px: cutting this motion \(150 px along its worst path\) into "
                                             r"steps that short takes .* poses, more than 1,000,000"):
            densify(traj, cam, max_step_px=step)
    with pytest.raises(ValueError, match="more than 1,000,000"):
        render_nonuniform(torch.zeros(1, 3, 48, 64), traj, cam, max_step_px=1e-9)
    with pytest.raises(ValueError, match="more than 1,000,000"):
        kernels_at(torch.zeros(1, 2), traj, cam, 5, max_step_px=1e-9)


def test_a_camera_or_trajectory_that_is_not_one_is_named():
    """camera=None, or the Camera class itself, failed as "'NoneType' object has no attribute 'width'",
    and a tensor of poses passed as the trajectory as "trajectory has 32 items for a batch of 1 images"."""
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3))
    cam = Camera(100.0, 16, 12)
    image = torch.zeros(1, 3, 12, 16)
    for call in (lambda tr, c: render_nonuniform(image, tr, c), lambda tr, c: kernels_at([[0.0, 0.0]], tr, c, 5)):
        for bad, said in ((None, "got NoneType"), (Camera, "got the class Camera itself")):
            with pytest.raises(TypeError, match=r"camera must be a blursynth\.camera\.Camera of the frame, .*" + said):
                call(traj, bad)
        with pytest.raises(TypeError, match=r"trajectory must be a blursynth\.trajectory\.Trajectory, .*got Tensor$"):
            call(traj.rotation, cam)
        assert call(traj, cam).shape[0] == 1


def test_render_is_the_same_under_autocast():
    """render_nonuniform composed the centring shift with the homographies in a float32 matmul, which autocast
    (a mixed-precision training step) ran in bfloat16: the warps moved by pixels and the image came out 1.6e-2
    off. The poses are worked out in full precision whatever autocast says."""
    from blursynth.trajectory import CameraShake
    cam = Camera.from_35mm(35.0, 48, 40)
    traj = CameraShake(roll_ratio=2.0).sample(2, seed=0)
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    want = render_nonuniform(x, traj, cam, depth_m=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = render_nonuniform(x, traj, cam, depth_m=0.5)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_float64_as_torchs_default_dtype_changes_nothing():
    """torch.set_default_dtype(torch.float64), common in numerical notebooks, made render_nonuniform and
    rasterize (with t=None) fail with "expected scalar type Double but found Float" / "index_add_(): self
    (Float) and source (Double) must have the same scalar type", and CameraShake draw other poses, in float64,
    where float32 is documented: tensors made without a dtype followed the default. Every output is now the
    same as under the float32 default."""
    from blursynth import kernel as K
    from blursynth import sensor as S
    from blursynth.scenes import dead_leaves
    from blursynth.trajectory import CameraShake

    def outputs():
        cam = Camera.from_35mm(35.0, 24, 20)
        traj = CameraShake(roll_ratio=2.0).sample(2, seed=0)
        x = torch.rand(2, 3, 20, 24, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
        path = torch.tensor([[[0.0, 0.0], [3.0, 1.0], [4.0, -2.0]]], dtype=torch.float32)
        params = S.SensorModel(highlight_gain=None, shot_noise=None).sample(2, seed=0)
        still = Trajectory(t=torch.zeros(1, 3, dtype=torch.float32), rotation=torch.zeros(1, 3, 3, dtype=torch.float32))
        return {"rotation": traj.rotation, "t": traj.t, "params": traj.params["exposure_s"],
                "render": render_nonuniform(x, traj, cam, depth_m=0.5), "still": render_nonuniform(x[:1], still, cam),
                "kernels_at": kernels_at([[1.0, 2.0]], traj, cam, 9, depth_m=0.5),
                "rasterize": K.rasterize(path, 9), "center_path": cam.center_path(traj, 0.5),
                "kernels": torch.cat([c.kernels for c in K.generate(CameraShake(), 3, cam, 9, fit="scale")]),
                "threshold": params.highlight_threshold, "shot": params.shot_noise,
                "no leaves": dead_leaves(0, 8, seed=0), "leaves": dead_leaves(1, 8, seed=0)}
    want = outputs()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = outputs()
    finally:
        torch.set_default_dtype(default)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and torch.equal(got[name], value), name


def test_the_pose_helpers_take_a_trajectory_of_no_items():
    """kernels_at, render_nonuniform and centering_shift take a trajectory of no items, but densify, motion_samples
    and local_paths failed on one with torch's "amax(): Expected reduction dim 0 to have non-zero size"."""
    from blursynth.nonuniform import local_paths, motion_samples
    from blursynth.trajectory import CameraShake
    cam = Camera(500.0, 30, 20)
    none = CameraShake().sample_items(torch.zeros(0, dtype=torch.long))
    assert densify(none, cam).t.shape == (0, 32)
    poses, weights = motion_samples(none, cam)
    assert len(poses) == 0 and weights.shape == (0, 1)
    flat, t = local_paths([[1.0, 2.0], [3.0, 4.0]], none, cam)
    assert flat.shape == (0, 32, 2) and t.shape == (0, 32)


def test_integer_sample_times_are_taken():
    """Sample times may be integers (frame numbers: kernels and rasterize take them), but exposure_weights
    failed on them with "result type Float can't be cast to the desired output type Long", and so did
    render_nonuniform for a camera whose motion needed no extra poses (a still one)."""
    w = exposure_weights(torch.arange(5)[None])
    assert w.dtype == torch.float32 and torch.allclose(w, exposure_weights(torch.arange(5.0)[None]))
    cam = Camera(500.0, 16, 12)
    x = torch.rand(1, 3, 12, 16)
    for rotation in (torch.zeros(1, 4, 3), torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1e-3, 0.0], [0.0, 2e-3, 0.0],
                                                          [0.0, 3e-3, 0.0]]])):
        as_ints = Trajectory(t=torch.arange(4)[None], rotation=rotation)
        as_floats = Trajectory(t=torch.arange(4.0)[None], rotation=rotation)
        assert torch.equal(render_nonuniform(x, as_ints, cam), render_nonuniform(x, as_floats, cam))


def test_kernels_at_names_the_fits_it_takes():
    """fit="resample" went to rasterize, whose message sent the caller to blursynth.kernel.generate, which
    makes no local kernels; kernels_at now says what it takes."""
    from blursynth.trajectory import CameraShake
    traj = CameraShake().sample(1, seed=0)
    for fit in ("resample", "crop", None):
        with pytest.raises(ValueError, match=r"^fit must be 'error' or 'scale' for local kernels, got "):
            kernels_at([[1.0, 2.0]], traj, Camera(500.0, 30, 20), 9, fit=fit)
