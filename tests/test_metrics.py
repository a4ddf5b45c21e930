import numpy as np
import pytest
import torch

from hpelib.angles import alternative_euler
from hpelib.metrics import PoseErrorMeter, angle_errors, geodesic_errors, summarize


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


def test_meter_does_not_depend_on_batch_size():
    rng = np.random.default_rng(0)
    gt = rng.uniform(-90, 90, (103, 3))
    pred = gt + rng.normal(0, 8, gt.shape)
    results = []
    for bs in (1, 7, 32, 103):
        meter = PoseErrorMeter()
        for i in range(0, len(gt), bs):
            meter.update(torch.tensor(pred[i:i + bs], dtype=torch.float32), torch.tensor(gt[i:i + bs]))
        results.append(meter.compute())
    for r in results[1:]:
        for k in ("yaw", "pitch", "roll", "mae", "geodesic"):
            assert r[k] == pytest.approx(results[0][k], abs=1e-4)
    # the mean of per-sample errors, not a mean of batch means (those differ for a ragged last batch)
    full = summarize(pred, gt)
    assert results[0]["mae"] == pytest.approx(full["mae"], abs=1e-4)


def test_shape_mismatch_and_empty_raise():
    with pytest.raises(ValueError, match="shape"):
        angle_errors(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no samples"):
        PoseErrorMeter().compute()


def test_single_pose_and_matrix_inputs():
    from hpelib.angles import euler_to_matrix

    s = summarize([10.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert s["n"] == 1 and s["yaw"] == pytest.approx(10.0) and s["geodesic"] == pytest.approx(10.0, abs=1e-6)
    m = euler_to_matrix(np.array([[0.0, 30.0, 0.0]]))
    np.testing.assert_allclose(geodesic_errors(m, [[0.0, 0.0, 0.0]]), [30.0], atol=1e-6)
