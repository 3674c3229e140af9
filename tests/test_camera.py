"""Pinhole projection of camera motion."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth.camera import Camera, SceneReachedError
from blursynth.trajectory import Trajectory


def _still(n=2, steps=5):
    t = torch.linspace(0, 0.05, steps).repeat(n, 1)
    return Trajectory(t=t, rotation=torch.zeros(n, steps, 3), translation=torch.zeros(n, steps, 3))


def test_still_camera_gives_identity_homographies():
    cam = Camera(800.0, 64, 48)
    h = cam.homographies(_still(), depth_m=2.0)
    assert torch.allclose(h, torch.eye(3).expand_as(h), atol=1e-6)


@given(theta=st.floats(-0.02, 0.02), focal=st.floats(100, 5000), axis=st.sampled_from([0, 1]))
@settings(max_examples=40, deadline=None)
def test_pure_yaw_or_pitch_moves_principal_point_by_f_tan_theta(theta, focal, axis):
    cam = Camera(focal, 640, 480)
    rot = torch.zeros(1, 2, 3)
    rot[0, 1, axis] = theta
    path = cam.center_path(Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot))
    # Rotation about y (yaw) moves the image along x, about x (pitch) along y.
    moved = path[0, 1, 1 - axis]
    assert abs(abs(float(moved)) - focal * math.tan(abs(theta))) <= 1e-3 * max(1.0, focal * abs(theta))
    assert abs(float(path[0, 1, axis])) < 1e-3


def test_sign_conventions():
    cam = Camera(1000.0, 640, 480)
    # Camera turns right (yaw about +y turns +z towards +x): scene content moves left.
    rot = torch.zeros(1, 2, 3)
    rot[0, 1, 1] = 0.01
    assert float(cam.center_path(Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot))[0, 1, 0]) < 0
    # Camera steps 1 cm right in front of a plane 1 m away: content moves left by f * 0.01 px.
    tr = torch.zeros(1, 2, 3)
    tr[0, 1, 0] = 0.01
    shift = cam.center_path(Trajectory(t=torch.tensor([[0.0, 0.1]]), translation=tr), depth_m=1.0)
    assert torch.allclose(shift[0, 1], torch.tensor([-10.0, 0.0]), atol=1e-4)
    # A distant scene ignores translation.
    assert torch.allclose(cam.center_path(Trajectory(t=torch.tensor([[0.0, 0.1]]), translation=tr)), torch.zeros(1, 2, 2))


def test_roll_moves_corners_not_centre():
    cam = Camera(500.0, 101, 101)
    rot = torch.zeros(1, 2, 3)
    rot[0, 1, 2] = 0.02
    pts = torch.tensor([[50.0, 50.0], [0.0, 0.0]])
    paths = cam.project(Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=rot), pts)
    moved = (paths[0, 1] - pts).norm(dim=-1)
    assert float(moved[0]) < 1e-4
    assert abs(float(moved[1]) - 0.02 * math.hypot(50, 50)) < 0.05


def test_35mm_equivalent_and_bad_values():
    cam = Camera.from_35mm(50.0, 3600, 2400)
    assert abs(cam.focal_px - 5000.0) < 1e-6  # 36 mm frame mapped to 3600 px: 100 px/mm
    with pytest.raises(ValueError, match="focal"):
        Camera(-1.0, 10, 10)
    for focal in (0, 0.0, math.inf, math.nan, "50", True):  # (0 px would put every scene point on the principal point)
        with pytest.raises(ValueError, match="focal length must be a positive number of pixels"):
            Camera(focal, 64, 48)
    # (an infinite focal length in mm was blamed on "focal length must be a positive number of pixels")
    for focal in (0.0, -50, math.inf, math.nan, "50", True):
        with pytest.raises(ValueError, match=r"^35 mm-equivalent focal length must be a positive number, got .* mm$"):
            Camera.from_35mm(focal, 10, 10)
    with pytest.raises(ValueError, match="depth"):
        tr = torch.zeros(1, 2, 3)
        Camera(100.0, 10, 10).homographies(Trajectory(t=torch.tensor([[0.0, 0.1]]), translation=tr), depth_m=-1.0)


def test_camera_refuses_fractional_sizes_and_a_non_finite_principal_point():
    """Camera(100, 1.5, 48) and Camera(100, 64, 48, cx=nan) were accepted: the first cannot match
    any image, the second made every homography NaN without a word."""
    import numpy as np
    for w, h in ((1.5, 48), (64.0, 48), (64, True), (0, 48), (64, -1)):
        with pytest.raises(ValueError, match="image size must be positive integers"):
            Camera(100.0, w, h)
    for cx, cy in ((math.nan, 0.0), (0.0, math.inf), ("1", 0.0)):
        with pytest.raises(ValueError, match="principal point"):
            Camera(100.0, 64, 48, cx=cx, cy=cy)
    cam = Camera(100.0, np.int64(64), 48, cx=np.float32(70.5), cy=-3)  # outside the frame is fine
    assert cam.principal_point == (70.5, -3)


def test_from_35mm_names_a_bad_size_not_the_focal_length():
    # the focal length in pixels follows from the size: a 0x0 frame was "focal length ... got 0.0", and a
    # side that is not a number at all failed in math.hypot ("must be real number, not str"), naming nothing
    for w, h in ((0, 0), (64, 0), (1.5, 48), ("64", 48), (None, 48), (64, [48]), (64, np.array(48.0))):
        with pytest.raises(ValueError, match="image size must be positive integers") as err:
            Camera.from_35mm(50.0, w, h)
        assert "focal" not in str(err.value)


def test_a_camera_that_reaches_the_scene_plane_is_refused():
    # Moving 2 cm forward towards a plane 1 cm away puts the plane behind the camera: the paths were
    # meaningless (and a projective render of such a shake asked for terabytes of memory).
    from blursynth.kernel import kernel_paths
    from blursynth.nonuniform import render_nonuniform
    tr = torch.zeros(1, 5, 3)
    tr[0, :, 2] = torch.linspace(0, 0.02, 5)
    traj = Trajectory(t=torch.linspace(0, 0.1, 5)[None], translation=tr)
    cam = Camera(100.0, 16, 16)
    for call in (lambda: cam.homographies(traj, depth_m=0.01), lambda: kernel_paths(traj, cam, 0.01),
                 lambda: render_nonuniform(torch.rand(1, 3, 16, 16), traj, cam, depth_m=0.01)):
        with pytest.raises(SceneReachedError, match="times the scene depth.*larger depth_m"):
            call()
    assert torch.isfinite(kernel_paths(traj, cam, 0.05)).all()  # short of the plane: fine


def test_a_point_turned_behind_the_camera_is_refused():
    """A rotation past 90 degrees projected the point through infinity to a mirrored, finite position:
    its image path was garbage, and a render of such a motion asked for tens of gigabytes."""
    from blursynth.camera import BehindCameraError
    cam = Camera(30.0, 32, 24)
    rot = torch.zeros(1, 3, 3)
    rot[0, :, 1] = torch.tensor([0.0, 0.5, 2.0])  # yaw: the camera ends up facing sideways and back
    traj = Trajectory(t=torch.tensor([[0.0, 0.05, 0.1]]), rotation=rot)
    with pytest.raises(BehindCameraError, match=r"pixel \(0, 12\) is at or behind the camera at t = 0.1 s: "):
        cam.project(traj, torch.tensor([[0.0, 12.0]]))
    with pytest.raises(BehindCameraError, match=r"at t = 0.1 s of item 1: "):  # (in a batch, the item too)
        cam.project(Trajectory.cat([Trajectory(t=traj.t, rotation=0 * rot), traj]), torch.tensor([[0.0, 12.0]]))
    # Up to 0.5 rad (the left edge's points 56 degrees off the new axis) they are in front of it.
    first = Trajectory(t=traj.t[:, :2], rotation=traj.rotation[:, :2])
    assert torch.isfinite(cam.project(first, torch.tensor([[0.0, 12.0]]))).all()


def test_a_bool_or_a_string_is_not_a_focal_length_or_a_principal_point():
    """Camera(True, 64, 48) was a 1 px focal length, cx=True a principal point at 1 px; a string
    focal length failed comparing str with int (a TypeError naming neither)."""
    import numpy as np
    for focal in (True, "500", None):
        with pytest.raises(ValueError, match="focal length must be a positive number of pixels"):
            Camera(focal, 64, 48)
        with pytest.raises(ValueError, match="35 mm-equivalent focal length must be a positive number"):
            Camera.from_35mm(focal, 64, 48)
    with pytest.raises(ValueError, match="principal point cx must be a finite number"):
        Camera(500.0, 64, 48, cx=True)
    assert Camera(np.float32(500.0), 64, 48).focal_px == 500.0 and Camera.from_35mm(np.int64(50), 64, 48).focal_px > 0


@pytest.mark.parametrize("depth", [0.5, 2.0, 8.0])
def test_a_camera_that_reaches_the_scene_plane_exactly_is_refused(depth):
    """The camera must stay short of the plane (check_short_of_plane: 'stays below depth'). At exactly
    the depth, I - c n^T / d is singular and the plane passes through the camera centre; a '>' for
    '>=' in the check let that pose through and homographies returned a singular matrix."""
    steps = 4
    translation = torch.zeros(1, steps, 3)
    translation[0, -1, 2] = depth  # the last pose sits on the plane (depth / depth == 1 exactly)
    traj = Trajectory(t=torch.linspace(0, 0.1, steps)[None], translation=translation)
    with pytest.raises(SceneReachedError):
        Camera(800.0, 64, 48).homographies(traj, depth_m=depth)


def test_a_scene_point_exactly_on_the_camera_plane_counts_as_behind():
    """check_in_front refuses every homogeneous scale that is not positive: w == 0 is a point at
    infinity in the image (a division by zero), not one in front of the camera."""
    from blursynth.camera import BehindCameraError, check_in_front
    w = torch.ones(2, 3, 1, dtype=torch.float64)
    w[1, 2, 0] = 0.0
    with pytest.raises(BehindCameraError, match=r"\(1, 2\).*t = 0.2 s of item 1"):
        check_in_front(w, torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.1, 0.2]]).expand(2, 3), "pixel")
    check_in_front(w.clamp_min(1e-300), torch.tensor([[1.0, 2.0]]), torch.zeros(2, 3), "pixel")  # positive: passes


def _pinhole(points, rotvec, centre, focal, cx, cy, depth):
    """Where pixels ``points`` (P, 2) of the frame at rest are imaged by a camera at pose (R, c), written
    out with SciPy's rotation: the scene point X = depth * ((x - cx) / f, (y - cy) / f, 1) (its ray for
    an infinite depth) is seen at R^T (X - c) and imaged at f * (X'_x, X'_y) / X'_z + (cx, cy)."""
    from scipy.spatial.transform import Rotation
    pts = np.asarray(points, dtype=np.float64)
    ray = np.stack([(pts[:, 0] - cx) / focal, (pts[:, 1] - cy) / focal, np.ones(len(pts))], -1)
    scene = ray if math.isinf(depth) else depth * ray - np.asarray(centre, dtype=np.float64)
    seen = scene @ Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64)).as_matrix()  # rows R^T X
    return focal * seen[:, :2] / seen[:, 2:] + np.array([cx, cy])


@given(rot=st.lists(st.floats(-0.2, 0.2), min_size=9, max_size=9),
       move=st.lists(st.floats(-0.05, 0.05), min_size=9, max_size=9),
       depth=st.floats(0.5, 5.0) | st.just(math.inf), focal=st.floats(50.0, 1000.0),
       pp=st.tuples(st.none() | st.floats(-20.0, 80.0), st.none() | st.floats(-20.0, 60.0)))
@settings(max_examples=40, deadline=None)
def test_project_and_center_path_match_a_pinhole_written_out(rot, move, depth, focal, pp):
    """Rotation and translation together, at any depth, a non-square frame with its default or a given
    principal point, from a first pose that need not be the rest pose (a reversed trajectory's): only
    separate pure motions at depth 1 m on a square frame were checked, so K R^T K^-1 composed in the other
    order from the translation term, c / d**2, a roll turning the other way, a default cy taken from the
    width, or center_path measured from the first pose instead of the principal point all passed."""
    cam = Camera(focal, 64, 48, cx=pp[0], cy=pp[1])  # (either may be left to the image centre)
    cx, cy = 31.5 if pp[0] is None else pp[0], 23.5 if pp[1] is None else pp[1]
    rotation = torch.tensor(rot, dtype=torch.float64).reshape(1, 3, 3)
    translation = torch.tensor(move, dtype=torch.float64).reshape(1, 3, 3)
    traj = Trajectory(t=torch.tensor([[0.0, 0.02, 0.05]]), rotation=rotation.float(), translation=translation.float())
    points = [[0.0, 0.0], [63.0, 47.0], [10.0, 30.0], [cx, cy]]
    got = cam.project(traj, torch.tensor(points), depth_m=depth)[0].double().numpy()  # (T, P, 2)
    path = cam.center_path(traj, depth_m=depth)[0].double().numpy()
    for j in range(3):
        want = _pinhole(points, traj.rotation[0, j].double(), traj.translation[0, j].double(), focal, cx, cy, depth)
        np.testing.assert_allclose(got[j], want, atol=2e-3, rtol=1e-5)
        np.testing.assert_allclose(path[j], want[-1] - [cx, cy], atol=2e-3, rtol=1e-5)


def test_a_2d_path_is_an_image_translation_by_its_x_and_y():
    """Only the renders in test_nonuniform noticed a 2-D path's homography translating by -path or by
    (y, x): the camera's own tests had no 2-D trajectory."""
    path = torch.tensor([[[0.0, 0.0], [3.0, -2.0], [-1.5, 4.0]]])
    traj = Trajectory(t=torch.tensor([[0.0, 0.01, 0.02]]), path_px=path)
    cam = Camera(500.0, 64, 48)
    pts = torch.tensor([[5.0, 7.0], [60.0, 1.0]])
    assert torch.allclose(cam.project(traj, pts), pts + path[:, :, None, :], atol=1e-5)
    assert torch.equal(cam.center_path(traj), path)


def test_from_35mm_keeps_the_diagonal_field_of_view_for_any_aspect_ratio():
    """The equivalence is by the diagonal: a square or 16:9 frame sees the diagonal angle of a 36 x 24 mm
    frame behind a focal_mm lens. Only a 3:2 frame was checked, where the long side gives the same number."""
    for focal_mm, w, h in ((50.0, 1000, 1000), (24.0, 1920, 1080), (35.0, 480, 640)):
        cam = Camera.from_35mm(focal_mm, w, h)
        want = 2 * math.atan(math.hypot(36.0, 24.0) / 2 / focal_mm)
        assert abs(2 * math.atan(math.hypot(w, h) / 2 / cam.focal_px) - want) < 1e-9


def test_depth_m_is_checked_and_a_camera_backing_away_from_the_plane_is_fine():
    """A zero depth (every translation divided by 0) and a depth tensor of the wrong length were not
    refused in homographies; a camera moving away from the plane by more than its depth is valid (the
    plane stays in front), and its content shrinks towards the principal point by d / (d - c_z)."""
    cam = Camera(100.0, 64, 48)
    tr = torch.zeros(2, 2, 3)
    tr[:, 1, 2] = -2.0  # 2 m back from a plane 1 m away
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]).repeat(2, 1), translation=tr)
    corner = cam.project(traj, torch.tensor([[0.0, 0.0]]), depth_m=1.0)[:, 1, 0]
    pp = torch.tensor([31.5, 23.5])
    assert torch.allclose(corner, pp + (torch.zeros(2) - pp) * 1.0 / (1.0 + 2.0), atol=1e-4)  # d / (d - c_z) = 1 / 3
    with pytest.raises(ValueError, match="scene depth must be positive"):
        cam.homographies(traj, depth_m=0.0)
    # (the shape passed, not the internal (3, 1, 1) it once named)
    with pytest.raises(ValueError, match=r"depth_m must be a float or an \(2,\) tensor, got shape \(3,\)$"):
        cam.homographies(traj, depth_m=torch.tensor([1.0, 2.0, 3.0]))


def test_a_point_behind_the_camera_is_reported_at_the_first_sample_it_is_behind():
    """The message names the time the point is behind: a camera that turns away at 0.05 s and back by
    0.1 s is reported at 0.05 s (every test had it behind at the last sample only)."""
    from blursynth.camera import BehindCameraError
    rot = torch.zeros(1, 3, 3)
    rot[0, 1, 1] = 2.0  # yaw 115 degrees at the middle sample only
    traj = Trajectory(t=torch.tensor([[0.0, 0.05, 0.1]]), rotation=rot)
    with pytest.raises(BehindCameraError, match=r"pixel \(0, 12\) is at or behind the camera at t = 0.05 s: "):
        Camera(30.0, 32, 24).project(traj, torch.tensor([[0.0, 12.0]]))


def test_project_names_points_that_are_not_finite_xy_pairs():
    """An odd count of values was torch's "shape '[-1, 2]' is invalid for input of size 3", a string
    "new(): invalid data type 'str'", and a NaN coordinate gave NaN paths without a word."""
    cam = Camera(100.0, 64, 48)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1e-3, 0.0]]]))
    for bad, said in (([1.0, 2.0, 3.0], r"read as pairs; got 3 values \(shape \(3,\)\)"),
                      ("ab", "a tensor, array or list of numbers, got str 'ab'"),
                      (None, "got NoneType None"),
                      ([[math.nan, 1.0]], "NaN or infinite"), (torch.tensor([[1.0, math.inf]]), "NaN or infinite")):
        with pytest.raises(ValueError, match=r"points_px .*" + said):
            cam.project(traj, bad)
    # pairs in any layout are still read in order, and no point gives no path
    assert torch.equal(cam.project(traj, [1.0, 2.0, 3.0, 4.0]), cam.project(traj, [[1.0, 2.0], [3.0, 4.0]]))
    assert cam.project(traj, torch.zeros(0, 2)).shape == (1, 2, 0, 2)


def test_a_depth_that_is_not_a_number_is_named():
    """depth_m="far" failed in torch's words ("new(): invalid data type 'str'"), None as "must be real
    number, not NoneType", naming nothing; kernel_paths said what it takes, the camera now does too."""
    cam = Camera(100.0, 64, 48)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3), translation=torch.zeros(1, 2, 3))
    for bad in ("far", None, {"m": 1.0}):
        for call in (cam.homographies, cam.center_path, lambda tr, d: cam.project(tr, [[0.0, 0.0]], d)):
            with pytest.raises(ValueError, match=r"depth_m must be positive metres, a float or an \(1,\) tensor "
                                                 r"\(inf = distant scene\), got "):
                call(traj, bad)


def test_a_depth_that_is_a_bool_is_refused_and_a_bad_depth_is_shown():
    """depth_m=True (a switch where a depth belongs) was read as a scene plane 1 m away by every function that
    takes a depth, as torch reads True as 1; a depth <= 0 was refused without the value that was passed."""
    from blursynth.kernel import kernel_paths, kernels
    from blursynth.nonuniform import kernels_at, render_nonuniform
    cam = Camera(500.0, 16, 12)
    traj = Trajectory(t=torch.tensor([[0.0, 0.1]]), rotation=torch.zeros(1, 2, 3),
                      translation=torch.tensor([[[0.0, 0.0, 0.0], [0.001, 0.0, 0.0]]]))
    calls = {"homographies": lambda d: cam.homographies(traj, d), "kernel_paths": lambda d: kernel_paths(traj, cam, d),
             "kernels": lambda d: kernels(traj, cam, 5, d),
             "render_nonuniform": lambda d: render_nonuniform(torch.rand(1, 3, 12, 16), traj, cam, d),
             "kernels_at": lambda d: kernels_at([[3.0, 4.0]], traj, cam, 5, d)}
    for name, call in calls.items():
        for bad in (True, np.bool_(True), torch.tensor([True]), [True], np.array([True])):
            with pytest.raises((TypeError, ValueError), match=r"depth_m must be"):
                call(bad)
        for bad in (0.0, -1.0, math.nan):
            with pytest.raises(ValueError, match=rf"depth_m.*must be positive metres.*got {bad}"):
                call(bad)
        call(1.0)  # (a number still goes through)
