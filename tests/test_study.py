"""The study runner on tiny fake notebooks (no training): expansion, order, skip, failures."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from hpelib import study as st

REPO = Path(__file__).resolve().parents[1]

PRETRAIN_NB = """
import json, os, pathlib
labels, seed, kfold = spec["labels"], spec["train"]["seed"], spec["kfold"]
run_name, scenario, method, pretrain_method = labels["run"], labels["scenario"], labels["method"], labels["pretrain_method"]
init, ssl_tasks, label_fraction = spec["model"]["init"], spec["model"]["ssl_tasks"], spec["label_fraction"]
run_name, seed = spec["labels"]["run"], spec["train"]["seed"]
method = next(iter(spec["model"]["ssl_tasks"]))
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(run_name + "\\n")
with open(os.environ["FAKE_LOG"] + ".gpu", "a") as f:
    f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\\n")
if run_name in pathlib.Path(os.environ["FAKE_FAIL"]).read_text().split():
    raise RuntimeError("planned failure of " + run_name)
out = pathlib.Path(out_dir)
(out / "model.pt").write_text(method + str(seed))
(out / "metrics.json").write_text(json.dumps({"loss": 1.0}))
"""

TRAIN_NB = """
import json, os, pathlib
labels, seed, kfold = spec["labels"], spec["train"]["seed"], spec["kfold"]
run_name, scenario, method, pretrain_method = labels["run"], labels["scenario"], labels["method"], labels["pretrain_method"]
init, ssl_tasks, label_fraction = spec["model"]["init"], spec["model"]["ssl_tasks"], spec["label_fraction"]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(run_name + "\\n")
with open(os.environ["FAKE_LOG"] + ".gpu", "a") as f:
    f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\\n")
if pretrain_method:
    # the shared checkpoint of the pre-training run must already exist
    assert pathlib.Path(init).read_text() == pretrain_method + str(seed), init
if run_name in pathlib.Path(os.environ["FAKE_FAIL"]).read_text().split():
    raise RuntimeError("planned failure of " + run_name)
out = pathlib.Path(out_dir)
cfg = dict(run=run_name, scenario=scenario, method=method, seed=seed, label_fraction=label_fraction,
           aux=sorted(ssl_tasks), weights={k: v["weight"] for k, v in ssl_tasks.items()}, kfold=kfold,
           test_set="syn")
(out / "config.json").write_text(json.dumps(cfg))
fold = kfold["fold"] if kfold else 0
# one prediction per fold: yaw error 2 * (fold + 1) degrees
(out / "predictions.csv").write_text(
    "name,yaw_true,pitch_true,roll_true,yaw_pred,pitch_pred,roll_pred\\n"
    f"img{fold},10,0,0,{10 + 2 * (fold + 1)},0,0\\n")
(out / "metrics.json").write_text(json.dumps({"mae": 1.0, "n": 1, "train_time_s": 5.0,
                                             "constant_yaw": 20.0 + 10 * fold, "constant_mae": 10.0}))
"""


def _notebook(path: Path, params: str, body: str):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


STUDY = """
name: tiny
notebooks: {nb}
report: false
image_size: 16
model: {{backbone: resnet18-narrow}}
data:
  pretrain: {{name: synthetic, n: 8}}
  train: {{name: synthetic, n: 8}}
  test: {{syn: {{name: synthetic, n: 4, seed: 9}}}}
pretrain: {{epochs: 1}}
train: {{epochs: 1, lr: 0.01}}
methods:
  rotation: {{weight: 0.5}}
  jigsaw: {{unshuffled_fraction: 0.5}}
scenarios:
  baseline: [{{}}]
  pretrain: [{{pretrain: rotation}}, {{pretrain: jigsaw}}]
  combined: [{{pretrain: rotation, aux: {{jigsaw: 0.25}}}}]
label_fractions: [0.5]
seeds: [0]
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    nb = tmp_path / "nb"
    nb.mkdir()
    _notebook(nb / "pretrain.ipynb", 'spec = {}\nout_dir = "."', PRETRAIN_NB)
    _notebook(nb / "train.ipynb", 'spec = {}\nout_dir = "."', TRAIN_NB)
    log, fail = tmp_path / "log.txt", tmp_path / "fail.txt"
    log.write_text("")
    fail.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_FAIL", str(fail))
    yml = tmp_path / "tiny.yaml"
    yml.write_text(STUDY.format(nb=nb))
    return {"yaml": yml, "log": log, "fail": fail, "out": tmp_path / "out"}


def test_expansion_order_and_shared_pretraining(tiny):
    runs = st.expand(st.load_study(tiny["yaml"]), tiny["out"])
    ids = [r.run_id for r in runs]
    assert ids == ["pretrain/rotation_s0", "pretrain/jigsaw_s0", "baseline/none/lf0.5_s0",
                   "pretrain/rotation/lf0.5_s0", "pretrain/jigsaw/lf0.5_s0", "combined/rotation+jigsaw/lf0.5_s0"]
    by = {r.run_id: r for r in runs}
    # one pre-training checkpoint shared by both fine-tunes that use rotation
    assert by["pretrain/rotation/lf0.5_s0"].deps == by["combined/rotation+jigsaw/lf0.5_s0"].deps == ["pretrain/rotation_s0"]
    assert by["pretrain/rotation/lf0.5_s0"].spec.model.init.endswith("pretrain/rotation_s0/model.pt")
    # aux weight from the variant overrides the method's default; options are kept
    assert by["combined/rotation+jigsaw/lf0.5_s0"].spec.model.ssl_tasks == {
        "jigsaw": {"unshuffled_fraction": 0.5, "weight": 0.25}}
    assert by["baseline/none/lf0.5_s0"].deps == [] and by["baseline/none/lf0.5_s0"].spec.model.init == "random"
    assert by["pretrain/jigsaw_s0"].spec.model.task_kwargs("jigsaw") == {"unshuffled_fraction": 0.5}
    for r in runs:  # every dependency comes earlier
        assert all(ids.index(d) < ids.index(r.run_id) for d in r.deps)


def test_pretrain_seed_shares_one_pretraining_across_fine_tune_seeds(tiny):
    text = tiny["yaml"].read_text().replace("seeds: [0]", "seeds: [0, 1, 2]\npretrain_seed: 0")
    tiny["yaml"].write_text(text)
    runs = st.expand(st.load_study(tiny["yaml"]), tiny["out"])
    assert [r.run_id for r in runs if r.kind == "pretrain"] == ["pretrain/rotation_s0", "pretrain/jigsaw_s0"]
    fine = [r for r in runs if r.spec.labels.pretrain_method == "rotation"]
    assert sorted(r.spec.seed for r in fine if r.spec.labels.scenario == "pretrain") == [0, 1, 2]
    assert all(r.deps == ["pretrain/rotation_s0"] for r in fine)
    tiny["yaml"].write_text(text.replace("pretrain_seed: 0", "pretrain_seed: zero"))
    with pytest.raises(st.StudyError, match="pretrain_seed"):
        st.load_study(tiny["yaml"])


def test_run_skip_failure_and_dependants(tiny, capfd):
    tiny["fail"].write_text("pretrain/jigsaw_s0\n")
    rc = st.run_study(tiny["yaml"], tiny["out"])
    assert rc != 0
    log = tiny["log"].read_text().split()
    assert log.index("pretrain/rotation_s0") < log.index("pretrain/rotation/lf0.5_s0")
    assert "pretrain/jigsaw/lf0.5_s0" not in log  # dependant of the failed run: skipped
    out = tiny["out"]
    failed = out / "pretrain/jigsaw_s0"
    assert (failed / "pretrain.ipynb").is_file() and (failed / "FAILED").is_file()
    err = json.loads((failed / "FAILED").read_text())
    assert err["ename"] == "RuntimeError" and "planned failure" in err["evalue"]
    # the failing cell is the body cell; its output in the kept notebook shows the error
    executed = nbformat.read(str(failed / "pretrain.ipynb"), as_version=4)
    assert executed.cells[err["cell_index"]].outputs[-1]["ename"] == "RuntimeError"
    failures = json.loads((out / "failures.json").read_text())
    assert [f["run"] for f in failures] == ["pretrain/jigsaw_s0"]
    summary = json.loads((out / "study_summary.json").read_text())["runs"]
    assert summary["pretrain/jigsaw/lf0.5_s0"]["status"] == "skipped (dependency failed)"
    assert summary["combined/rotation+jigsaw/lf0.5_s0"]["status"] == "done"
    printed = capfd.readouterr()
    assert "FAILED" in printed.out and "pretrain/jigsaw_s0" in printed.out
    assert "SKIPPED pretrain/jigsaw/lf0.5_s0: depends on failed pretrain/jigsaw_s0" in printed.out
    # the kernels' stderr goes to each run's kernel.log, not to the console
    assert (out / "baseline/none/lf0.5_s0/kernel.log").is_file()
    assert "IPKernelApp" not in printed.err
    cfg = json.loads((out / "combined/rotation+jigsaw/lf0.5_s0/config.json").read_text())
    assert cfg["weights"] == {"jigsaw": 0.25} and cfg["label_fraction"] == 0.5

    # second invocation: complete runs are not executed again, the failed one and its dependant are
    mtime = (out / "baseline/none/lf0.5_s0/metrics.json").stat().st_mtime_ns
    tiny["fail"].write_text("")
    tiny["log"].write_text("")
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    assert tiny["log"].read_text().split() == ["pretrain/jigsaw_s0", "pretrain/jigsaw/lf0.5_s0"]
    assert (out / "baseline/none/lf0.5_s0/metrics.json").stat().st_mtime_ns == mtime
    assert not (failed / "FAILED").exists()

    # --force runs a complete run again from an emptied folder (no stored result, no resume)
    stale = out / "baseline/none/lf0.5_s0/checkpoint.pt"
    stale.write_text("a finished run's checkpoint")
    tiny["log"].write_text("")
    assert st.run_study(tiny["yaml"], tiny["out"], only=["baseline/*"], force=True) == 0
    assert tiny["log"].read_text().split() == ["baseline/none/lf0.5_s0"]
    assert not stale.exists()

    # a changed setting re-runs exactly the runs it affects (here: all fine-tunes, not pre-training)
    tiny["log"].write_text("")
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("lr: 0.01", "lr: 0.02"))
    assert st.run_study(tiny["yaml"], tiny["out"], only=["baseline/*"]) == 0
    assert tiny["log"].read_text().split() == ["baseline/none/lf0.5_s0"]


def test_parallel_jobs(tiny):
    text = tiny["yaml"].read_text().replace("  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]\n", "")
    text = text.replace("  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n", "")
    tiny["yaml"].write_text(text.replace("seeds: [0]", "seeds: [0, 1]"))
    assert st.run_study(tiny["yaml"], tiny["out"], jobs=2, gpus="5,7") == 0
    assert sorted(tiny["log"].read_text().split()) == ["baseline/none/lf0.5_s0", "baseline/none/lf0.5_s1"]
    # two runs at once: one GPU each
    assert sorted(Path(str(tiny["log"]) + ".gpu").read_text().split()) == ["5", "7"]
    assert all(st.is_complete(r, tiny["out"]) for r in st.expand(st.load_study(tiny["yaml"]), tiny["out"]))


def test_dry_run_and_only(tiny):
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], dry_run=True, only=["combined/*"], echo=lines.append) == 0
    assert any("combined/rotation+jigsaw/lf0.5_s0" in l and "pretrain/rotation_s0" in l for l in lines)
    assert sum("[run" in l for l in lines) == 2  # the fine-tune and the pre-training it needs
    assert not tiny["out"].exists()
    assert tiny["log"].read_text() == ""
    with pytest.raises(st.StudyError, match="no run id matches"):
        st.run_study(tiny["yaml"], tiny["out"], dry_run=True, only=["nothing/*"])


@pytest.mark.parametrize("edit, message", [
    (("seeds: [0]", "seeds: [0]\nepochz: 3"), "unknown key(s) ['epochz']"),
    (("pretrain: [{pretrain: rotation}, ", "pretrain: [{pretrain: rotatoin}, "), "unknown SSL method 'rotatoin'"),
    (("aux: {jigsaw: 0.25}", "aux: {simclr: 0.25}"), "'simclr' is not configured under 'methods'"),
    (("baseline: [{}]", "baseline: [{aux: rotation, pretrian: jigsaw}]"), "unknown key(s) ['pretrian']"),
    (("rotation: {weight: 0.5}", "rotation: {weight: 0.5}\n  moco: {}"), "unknown key(s) ['moco']"),
    (("label_fractions: [0.5]", "label_fractions: [50]"), "label fraction must be a number in (0, 1]"),
    (("  test: {syn: {name: synthetic, n: 4, seed: 9}}", "  test: {name: synthetic}"), "data.test must map"),
    (("name: tiny", "name: tiny\nkfold: {k: 1}"), "kfold.k must be an integer >= 2"),
    (("jigsaw: {unshuffled_fraction: 0.5}", "jigsaw: {tiles: 2}"), "methods.jigsaw: unknown key(s) ['tiles']"),
    (("train: {epochs: 1, lr: 0.01}", "train: {epochs: 1, lr: 0.01, epoch: 3}"), "train: unknown key(s) ['epoch']"),
    (("model: {backbone: resnet18-narrow}", "model: {backbone: resnet18-narrow, head: binned}"),
     "model: unknown key(s) ['head']"),
])
def test_invalid_study_files(tiny, edit, message):
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace(*edit))
    with pytest.raises(st.StudyError) as e:
        st.load_study(tiny["yaml"])
    assert message in str(e.value) and str(tiny["yaml"]) in str(e.value)
    assert st.main([str(tiny["yaml"]), "--dry-run"]) == 2


def test_env_substitution_and_kfold(tiny, monkeypatch):
    monkeypatch.setenv("TINY_DATA", "/data/x")
    text = tiny["yaml"].read_text().replace("train: {name: synthetic, n: 8}",
                                            "train: {name: folder, root: '${TINY_DATA}/crops'}")
    tiny["yaml"].write_text(text + "kfold: {k: 3, seed: 7}\n")
    runs = st.expand(st.load_study(tiny["yaml"]), tiny["out"])
    base = [r for r in runs if r.run_id.startswith("baseline/")]
    assert [r.run_id for r in base] == [f"baseline/none/lf0.5_s0/.folds/f{i}" for i in range(3)]
    assert {r.group for r in base} == {"baseline/none/lf0.5_s0"}
    assert [r.params["spec"]["kfold"] for r in base] == [{"k": 3, "fold": i, "seed": 7} for i in range(3)]
    assert base[0].spec.train_data["root"] == "/data/x/crops"
    tiny["yaml"].write_text(text.replace("${TINY_DATA}", "${TINY_UNSET_VAR}"))
    monkeypatch.delenv("TINY_UNSET_VAR", raising=False)
    with pytest.raises(st.StudyError, match="TINY_UNSET_VAR"):
        st.load_study(tiny["yaml"])


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_repository_studies_expand(path, tmp_path):
    study = st.load_study(path)
    runs = st.expand(study, tmp_path)
    assert runs and all(r.notebook.is_file() for r in runs)
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids)
    assert all(ids.index(d) < ids.index(r.run_id) for r in runs for d in r.deps)
    assert st.main([str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 0


def test_kfold_runs_are_pooled(tiny):
    text = tiny["yaml"].read_text().replace("  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]\n", "")
    text = text.replace("  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n", "")
    tiny["yaml"].write_text(text + "kfold: {k: 2, seed: 7}\n")
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    pooled = tiny["out"] / "baseline/none/lf0.5_s0"
    m = json.loads((pooled / "metrics.json").read_text())
    # every image once; yaw errors 2, 4 -> 3; MAE = mean over the 3 angles; times summed
    assert m["n"] == 2 and m["yaw"] == pytest.approx(3.0) and m["mae"] == pytest.approx(1.0)
    assert m["geodesic"] == pytest.approx(3.0) and m["train_time_s"] == 10.0
    # the constant predictor's errors: each fold's, weighted by its test images (1 each)
    assert m["constant_yaw"] == pytest.approx(25.0) and m["constant_mae"] == pytest.approx(10.0)
    assert "constant_pitch" not in m  # no fold reported it
    cfg = json.loads((pooled / "config.json").read_text())
    assert cfg["run"] == "baseline/none/lf0.5_s0" and cfg["kfold"] == {"k": 2, "seed": 7}
    assert len((pooled / "predictions.csv").read_text().strip().splitlines()) == 3
    # a fold that must run again makes the pooled result disappear until it is complete
    (pooled / ".folds/f1/study_run.json").write_text("{}")
    tiny["fail"].write_text("baseline/none/lf0.5_s0/.folds/f1\n")
    assert st.run_study(tiny["yaml"], tiny["out"]) == 1
    assert not (pooled / "metrics.json").exists()


def test_pretraining_budget_variants_get_their_own_pretraining(tiny):
    text = tiny["yaml"].read_text().replace(
        "  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]",
        "  pretrain: [{pretrain: rotation}, {pretrain: rotation, pretrain_train: {epochs: 4}}]")
    text = text.replace("model: {backbone: resnet18-narrow}", "model: {backbone: resnet18-narrow, stem: cifar}")
    tiny["yaml"].write_text(text)
    runs = {r.run_id: r for r in st.expand(st.load_study(tiny["yaml"]), tiny["out"])}
    assert "pretrain/rotation_s0" in runs and "pretrain/rotation_e4_s0" in runs
    assert runs["pretrain/rotation_s0"].spec.train.epochs == 1
    assert runs["pretrain/rotation_e4_s0"].spec.train.epochs == 4
    assert runs["pretrain/rotation_e4_s0"].spec.model.stem == "cifar"
    budget = runs["pretrain/rotation-4ep/lf0.5_s0"]
    assert budget.deps == ["pretrain/rotation_e4_s0"] and budget.spec.model.stem == "cifar"
    assert runs["pretrain/rotation/lf0.5_s0"].deps == ["pretrain/rotation_s0"]
    tiny["yaml"].write_text(text.replace("{pretrain: rotation, pretrain_train: {epochs: 4}}",
                                         "{aux: rotation, pretrain_train: {epochs: 4}}"))
    with pytest.raises(st.StudyError, match="pretrain_train.*no 'pretrain'"):
        st.load_study(tiny["yaml"])


def test_the_runner_leaves_its_own_process_alone(tiny):
    """Kernel environment and stderr are set in the child process, never in the caller's."""
    text = tiny["yaml"].read_text().replace("  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]\n", "")
    tiny["yaml"].write_text(text.replace("  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n", ""))
    env_before, stderr_before = dict(os.environ), os.fstat(2)
    assert st.run_study(tiny["yaml"], tiny["out"], gpus="3") == 0
    assert Path(str(tiny["log"]) + ".gpu").read_text().split() == ["3"]  # the kernel saw its GPU
    assert dict(os.environ) == env_before
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)


class FakeExecution:
    """Stands in for a child process: ends after ``ticks`` polls with the planned outcome."""

    def __init__(self, run, gpu, log, fail, ticks=2):
        self.run, self.ticks, self.ok = run, ticks, run.run_id not in fail
        log.append(("start", run.run_id, gpu))

    def poll(self):
        self.ticks -= 1
        if self.ticks > 0:
            return None
        return {"ok": self.ok, "seconds": 1.0, "error": None if self.ok else {"ename": "X", "evalue": "planned"}}

    def stop(self):
        pass


def _fake_runs(tiny):
    return st.expand(st.load_study(tiny["yaml"]), tiny["out"])


@pytest.mark.parametrize("jobs", [1, 3])
def test_scheduler_order_slots_gpus_and_blocked_runs(tiny, jobs):
    from hpelib.study.scheduler import Scheduler

    runs = _fake_runs(tiny)
    log, running, peak = [], set(), [0]

    def start(run, gpu):
        running.add(run.run_id)
        peak[0] = max(peak[0], len(running))
        assert all(d in finished for d in run.deps), run.run_id  # dependencies first
        return FakeExecution(run, gpu, log, fail={"pretrain/jigsaw_s0"})

    finished = []

    def on_finish(run, result):
        running.discard(run.run_id)
        finished.append(run.run_id)

    skipped = []
    status = Scheduler(runs, {"baseline/none/lf0.5_s0"}, jobs, ["0", "1"], start, on_finish,
                       lambda run, bad: skipped.append((run.run_id, bad))).run(poll_s=0)
    assert peak[0] == min(jobs, 2)  # at most two runs are ever ready at once in this study
    assert all(g in ("0", "1") for _, _, g in log)
    assert status["baseline/none/lf0.5_s0"]["status"] == "complete (skipped)"  # already complete: not started
    assert "baseline/none/lf0.5_s0" not in [rid for _, rid, _ in log]
    assert status["pretrain/jigsaw_s0"]["status"] == "failed"
    assert skipped == [("pretrain/jigsaw/lf0.5_s0", ["pretrain/jigsaw_s0"])]
    assert status["combined/rotation+jigsaw/lf0.5_s0"]["status"] == "done"
    assert len(status) == len(runs)
