import numpy as np
import pytest
import torch

from hpelib import angles as A


def random_poses(n, seed=0, yaw=89.0, pitch=89.0, roll=179.0):
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.uniform(-yaw, yaw, n), rng.uniform(-pitch, pitch, n), rng.uniform(-roll, roll, n)], 1
    )


def elementary(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_matrix_is_rz_ry_rx():
    yaw, pitch, roll = 30.0, -20.0, 10.0
    expected = elementary("z", roll) @ elementary("y", yaw) @ elementary("x", pitch)
    np.testing.assert_allclose(A.euler_to_matrix(np.array([yaw, pitch, roll])), expected, atol=1e-12)


def test_euler_matrix_round_trip_numpy_and_torch():
    poses = random_poses(500)
    back = A.matrix_to_euler(A.euler_to_matrix(poses))
    np.testing.assert_allclose(back, poses, atol=1e-9)
    t = torch.tensor(poses, dtype=torch.float32)
    back_t = A.matrix_to_euler(A.euler_to_matrix(t))
    assert isinstance(back_t, torch.Tensor)
    torch.testing.assert_close(back_t, t, atol=2e-3, rtol=0)


def test_matrices_are_rotations():
    m = A.euler_to_matrix(random_poses(100, seed=1))
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)


def test_sixd_round_trip_and_gram_schmidt():
    m = A.euler_to_matrix(random_poses(50, seed=2))
    np.testing.assert_allclose(A.sixd_to_matrix(A.matrix_to_sixd(m)), m, atol=1e-9)
    # a scaled, skewed 6D vector still maps to a proper rotation whose first column follows it
    raw = np.array([[2.0, 0.0, 0.0, 0.5, 3.0, 0.0]])
    r = A.sixd_to_matrix(raw)[0]
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)


def test_alternative_euler_is_same_rotation():
    poses = random_poses(200, seed=3)
    alt = A.alternative_euler(poses)
    np.testing.assert_allclose(A.euler_to_matrix(alt), A.euler_to_matrix(poses), atol=1e-9)
    assert np.all(np.abs(alt[:, 0]) >= 90.0)


def test_flip_pose_matches_mirrored_rotation():
    # mirroring the image (x -> -x) conjugates the head rotation by diag(-1, 1, 1)
    poses = random_poses(100, seed=4, roll=80)
    mirror = np.diag([-1.0, 1.0, 1.0])
    expected = mirror @ A.head_rotation(poses) @ mirror
    np.testing.assert_allclose(A.head_rotation(A.flip_pose(poses)), expected, atol=1e-9)
    np.testing.assert_allclose(A.flip_pose(A.flip_pose(poses)), poses)


def test_wrap_degrees():
    np.testing.assert_allclose(A.wrap_degrees(np.array([179.0, 181.0, -181.0, 360.0, -540.0])),
                               [179.0, -179.0, 179.0, 0.0, -180.0])


def test_geodesic_of_single_axis_rotation_is_the_angle():
    for axis in range(3):
        a = np.zeros((1, 3))
        b = np.zeros((1, 3))
        b[0, axis] = 37.0
        g = A.geodesic_degrees(A.euler_to_matrix(a), A.euler_to_matrix(b))
        np.testing.assert_allclose(g, [37.0], atol=1e-6)


@pytest.mark.parametrize("pose, nose_dx_sign, nose_dy_sign", [
    ((30, 0, 0), -1, 0),   # positive yaw: nose to the image's left
    ((-30, 0, 0), 1, 0),
    ((0, 30, 0), 0, -1),   # positive pitch: looking up (image y grows downward)
    ((0, -30, 0), 0, 1),
])
def test_visible_meaning_of_yaw_and_pitch(pose, nose_dx_sign, nose_dy_sign):
    nose = A.project_axes(np.array(pose, dtype=float))[2]
    assert np.sign(np.round(nose[0], 9)) == nose_dx_sign
    assert np.sign(np.round(nose[1], 9)) == nose_dy_sign


def test_positive_roll_tilts_clockwise_in_the_image():
    top = A.project_axes(np.array([0.0, 0.0, 20.0]))[1]  # head's up axis, image coords (y down)
    assert top[0] > 0 and top[1] < 0  # top of the head moves to the right: clockwise


def test_project_axes_matches_hopenet_drawing():
    # Hopenet's draw_axis (the de-facto visual check of 300W-LP/AFLW2000 labels) draws the
    # nose axis at (sin(-yaw), -cos(-yaw) sin(pitch)) and the head x axis at
    # (cos(-yaw) cos(roll), cos(pitch) sin(roll) + cos(roll) sin(pitch) sin(-yaw)), y downward.
    for y, p, r in random_poses(20, seed=5, roll=80):
        yr, pr, rr = np.radians([-y, p, r])
        axes = A.project_axes(np.array([y, p, r]))
        np.testing.assert_allclose(axes[2], [np.sin(yr), -np.cos(yr) * np.sin(pr)], atol=1e-9)
        np.testing.assert_allclose(
            axes[0], [np.cos(yr) * np.cos(rr), np.cos(pr) * np.sin(rr) + np.cos(rr) * np.sin(pr) * np.sin(yr)],
            atol=1e-9)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="last dimension of 3"):
        A.euler_to_matrix(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="6"):
        A.sixd_to_matrix(np.zeros((4, 5)))


@pytest.mark.parametrize("yaw", [90.0, -90.0])
def test_gimbal_lock_branch_returns_the_same_rotation(yaw):
    m = A.euler_to_matrix(np.array([yaw, 25.0, 0.0]))
    back = A.matrix_to_euler(m)
    assert back[0] == pytest.approx(yaw, abs=1e-6)
    np.testing.assert_allclose(A.euler_to_matrix(back), m, atol=1e-9)
