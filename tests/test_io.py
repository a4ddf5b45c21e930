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


# --- file modes follow the umask -----------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    import os

    import torch

    from hpelib.io import write_text

    old = os.umask(umask)
    try:
        written = [write_json(tmp_path / "a.json", {"v": 1}), write_text(tmp_path / "b.txt", "text"),
                   atomic_write(tmp_path / "c.pt", lambda tmp: torch.save({"w": torch.ones(2)}, tmp))]
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {"a.json": mode, "b.txt": mode, "c.pt": mode}


def test_umask_is_read_without_changing_it():
    import os

    from hpelib.io import current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(old)


# --- a full disk ------------------------------------------------------------------

def _existing(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    return target


def _assert_kept(tmp_path, target):
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


def test_disk_full_names_path_size_free_space_and_fix(tmp_path):
    import errno

    from hpelib.io import DiskFullError

    target = _existing(tmp_path)

    def fill(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 3000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as info:
        atomic_write(target, fill)
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == str(target)
    msg = str(err)
    assert str(target) in msg and "writing at least 2.9 KiB, " in msg and " free on " in msg
    assert "free space or write elsewhere" in msg.lower()
    _assert_kept(tmp_path, target)


def test_disk_full_during_torch_save_is_recognised_by_the_free_space(tmp_path, monkeypatch):
    import shutil

    import torch

    from hpelib.io import DiskFullError

    target = _existing(tmp_path)

    def failing_save(obj, tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0 "
                           "basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", failing_save)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=512))
    with pytest.raises(DiskFullError, match=r"at least 10 bytes.*512 bytes free on "):
        atomic_write(target, lambda tmp: torch.save({"w": 1}, tmp))
    _assert_kept(tmp_path, target)

    # with room left on the disk the same error is not a full disk: it is passed on unchanged
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    with pytest.raises(RuntimeError, match="basic_ios::clear") as info:
        atomic_write(target, lambda tmp: torch.save({"w": 1}, tmp))
    assert not isinstance(info.value, DiskFullError)
    _assert_kept(tmp_path, target)


def test_disk_full_while_writing_text_gives_the_exact_size(tmp_path, monkeypatch):
    import errno

    from hpelib.io import DiskFullError, write_text

    target = _existing(tmp_path)

    class FullFile:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hpelib.io.open", FullFile, raising=False)
    with pytest.raises(DiskFullError) as info:
        write_text(target, "é" * 600)
    msg = str(info.value)
    assert "writing 1.2 KiB, " in msg and "at least" not in msg and str(target) in msg
    _assert_kept(tmp_path, target)


def test_a_lock_in_a_folder_that_cannot_be_written_names_it_and_the_fix(tmp_path, monkeypatch):
    import builtins

    from hpelib.io import file_lock

    real_open = builtins.open

    def refusing(path, *args, **kwargs):  # what a shared cache of another user gives (root ignores chmod)
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    with pytest.raises(PermissionError) as e:
        with file_lock(tmp_path / "crops.lock", "set HPELIB_CACHE to a folder you can write to"):
            pass
    assert str(e.value) == (f"cannot write into {tmp_path} (permission denied, or read-only): set HPELIB_CACHE to a "
                            "folder you can write to")
