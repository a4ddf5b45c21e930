"""Your own code in a study (``imports:``): the worked example in examples/, run from outside the checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpelib.plugins import PluginError, import_modules, module_digest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mirror_task"


def _runner(study: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m hpelib.study`` in the study's folder, as a user outside the checkout would start it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "hpelib.study", str(study), "--out", str(out), *extra],
                          cwd=study.parent, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def example(tmp_path) -> Path:
    folder = tmp_path / "my_project"
    shutil.copytree(EXAMPLE, folder)
    return folder


def test_a_user_ssl_task_runs_as_pretraining_and_auxiliary_loss(example, tmp_path):
    out = tmp_path / "results"
    done = _runner(example / "study.yaml", out, "--jobs", "2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for rid in ("baseline/none/lf1_s0", "pretrain/mirror/lf1_s0", "auxiliary/mirror/lf1_s0"):
        metrics = json.loads((out / rid / "metrics.json").read_text())
        assert metrics["n"] == 16 and metrics["mae"] > 0, rid
    aux = json.loads((out / "auxiliary/mirror/lf1_s0/config.json").read_text())
    assert "mirror" in json.dumps(aux)
    assert (out / "pretrain/mirror_s0/model.pt").is_file()
    assert "mirror" in (out / "report" / "error_table.md").read_text()
    # the fingerprint covers the module's source: editing it makes every run due again
    with open(example / "mirror_task.py", "a") as f:
        f.write("\n# edited\n")
    dry = _runner(example / "study.yaml", out, "--dry-run")
    assert dry.returncode == 0 and "0 complete, 4 to run" in dry.stdout, dry.stdout


def test_a_missing_module_stops_the_study_before_any_run_with_one_line(example, tmp_path):
    study = example / "study.yaml"
    study.write_text(study.read_text().replace("imports: [mirror_task]", "imports: [mirror_tasks]"))
    for extra in ([], ["--dry-run"]):
        done = _runner(study, tmp_path / "results", *extra)
        assert done.returncode == 2
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        assert len(lines) == 1 and "mirror_tasks" in lines[0] and str(study) in lines[0], lines
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_import_modules_names_the_module_and_why(tmp_path):
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "fine_mod.py").write_text("VALUE = 3\n")
    loaded = import_modules(["fine_mod"], [tmp_path], where="study.yaml: imports")
    assert loaded["fine_mod"].VALUE == 3 and len(module_digest(loaded["fine_mod"])) == 16
    with pytest.raises(PluginError, match=r"study.yaml: imports: importing module 'broken_mod' failed: "
                                          r"RuntimeError: no GPU here"):
        import_modules(["broken_mod"], [tmp_path], where="study.yaml: imports")
    with pytest.raises(PluginError, match=r"cannot import module 'nowhere_mod'.*beside the study file"):
        import_modules(["nowhere_mod"], [tmp_path])
