import json

import pytest

from hpelib.io import atomic_write, read_json, write_json


def test_write_json_round_trip(tmp_path):
    import numpy as np

    path = write_json(tmp_path / "sub" / "m.json", {"mae": np.float32(1.5), "n": np.int64(3), "a": np.arange(2)})
    assert read_json(path) == {"mae": 1.5, "n": 3, "a": [0, 1]}


def test_interrupted_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
