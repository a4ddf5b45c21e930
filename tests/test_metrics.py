import numpy as np
import pytest

from hpelib.angles import alternative_euler
from hpelib.metrics import angle_errors, geodesic_errors, labelled_rows, summarize


def test_wrap_around_costs_the_short_way():
    e = angle_errors([[179.0, 0.0, -170.0]], [[-179.0, 0.0, 170.0]])
    np.testing.assert_allclose(e, [[2.0, 0.0, 20.0]], atol=1e-9)


def test_other_euler_triplet_of_the_same_rotation_has_zero_error():
    gt = np.array([[95.0, 10.0, -20.0], [-97.0, -30.0, 40.0]])  # beyond +-90 yaw, as AFLW2000 allows up to 99
    pred = alternative_euler(gt)
    np.testing.assert_allclose(angle_errors(pred, gt), 0.0, atol=1e-9)
    np.testing.assert_allclose(geodesic_errors(pred, gt), 0.0, atol=1e-5)


def test_plain_errors_are_absolute_differences():
    pred = np.array([[10.0, -5.0, 3.0], [0.0, 0.0, 0.0]])
    gt = np.array([[12.0, -1.0, 0.0], [-20.0, 10.0, 5.0]])
    np.testing.assert_allclose(angle_errors(pred, gt), [[2, 4, 3], [20, 10, 5]])
    s = summarize(pred, gt)
    assert s["yaw"] == pytest.approx(11.0)
    assert s["pitch"] == pytest.approx(7.0)
    assert s["roll"] == pytest.approx(4.0)
    assert s["mae"] == pytest.approx(22.0 / 3.0)
    assert s["n"] == 2


def test_geodesic_of_pure_yaw_difference():
    g = geodesic_errors([[25.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(g, [25.0], atol=1e-6)


def test_labelled_rows_needs_all_three_angles_finite():
    poses = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [np.nan] * 3, [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(labelled_rows(poses), [True, False, False, False, True])
    np.testing.assert_array_equal(labelled_rows([5.0, 0.0, -5.0]), [True])  # one pose
    assert labelled_rows(np.zeros((0, 3))).shape == (0,)


def test_shape_mismatch_and_empty_raise():
    with pytest.raises(ValueError, match="shape"):
        angle_errors(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no samples"):
        summarize(np.zeros((0, 3)), np.zeros((0, 3)))


def test_single_pose_and_matrix_inputs():
    from hpelib.angles import euler_to_matrix

    s = summarize([10.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert s["n"] == 1 and s["yaw"] == pytest.approx(10.0) and s["geodesic"] == pytest.approx(10.0, abs=1e-6)
    m = euler_to_matrix(np.array([[0.0, 30.0, 0.0]]))
    np.testing.assert_allclose(geodesic_errors(m, [[0.0, 0.0, 0.0]]), [30.0], atol=1e-6)
