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


def test_a_copied_or_moved_results_folder_is_complete_where_it_lands(tiny, tmp_path):
    import shutil

    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    copy, moved = tmp_path / "copy" / "out", tmp_path / "moved"
    shutil.copytree(tiny["out"], copy)
    runs = st.expand(st.load_study(tiny["yaml"]), copy)
    assert any(r.deps for r in runs)  # fine-tunes whose init is a pre-training's model.pt under the folder
    assert [r.fingerprint for r in runs] == [r.fingerprint for r in st.expand(st.load_study(tiny["yaml"]), tiny["out"])]
    lines = []
    assert st.run_study(tiny["yaml"], copy, dry_run=True, echo=lines.append) == 0
    assert f"{len(runs)} runs ({len(runs)} complete, 0 to run)" in lines[0], lines
    shutil.move(tiny["out"], moved)
    tiny["log"].write_text("")
    assert st.run_study(tiny["yaml"], moved) == 0
    assert tiny["log"].read_text() == ""  # nothing ran again


@pytest.mark.parametrize("damage, problem", [
    ("garbage", "metrics.json is "),  # changed: another size than when the run finished
    ("nan", "metrics.json changed since the run finished"),
    ("truncated model", "model.pt is 0 bytes"),
    ("deleted predictions", "predictions.csv is missing"),
])
def test_a_damaged_result_is_named_and_trained_again(tiny, damage, problem):
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    base, pre = tiny["out"] / "baseline/none/lf0.5_s0", tiny["out"] / "pretrain/rotation_s0"
    record = json.loads((base / "study_run.json").read_text())["files"]
    assert set(record) == {"config.json", "metrics.json", "predictions.csv"} and record["metrics.json"]["sha256"]
    victim = pre if damage == "truncated model" else base
    if damage == "garbage":
        (base / "metrics.json").write_text("{not json")
    elif damage == "nan":
        (base / "metrics.json").write_text((base / "metrics.json").read_text().replace("1.0", "NaN", 1))  # same size
    elif damage == "truncated model":
        (pre / "model.pt").write_text("")
    else:
        (base / "predictions.csv").unlink()
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], dry_run=True, echo=lines.append) == 0
    (listed,) = [line for line in lines if f"] {victim.relative_to(tiny['out'])}" in line]
    assert listed.startswith("  [damaged ]") and problem in listed, listed
    tiny["log"].write_text("")
    lines.clear()
    assert st.run_study(tiny["yaml"], tiny["out"], echo=lines.append) == 0
    assert any(line.startswith(f"DAMAGED {victim.relative_to(tiny['out'])}: ") and problem in line for line in lines)
    assert tiny["log"].read_text().split() == [str(victim.relative_to(tiny["out"]))]  # that run only, again
    assert st.run_study(tiny["yaml"], tiny["out"], dry_run=True, echo=lines.append) == 0
    assert not any("[damaged" in line for line in lines[-8:])


def test_refuse_damaged_names_the_run_and_runs_nothing(tiny, capsys):
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    base = tiny["out"] / "baseline/none/lf0.5_s0"
    (base / "metrics.json").write_text("{not json")
    tiny["log"].write_text("")
    capsys.readouterr()
    assert st.main([str(tiny["yaml"]), "--out", str(tiny["out"]), "--refuse-damaged"]) == 2
    out, err = capsys.readouterr()
    assert "DAMAGED baseline/none/lf0.5_s0: " in out and "metrics.json is 9 bytes" in out
    assert err.startswith("error: 1 finished run(s) under") and "--refuse-damaged" in err and err.count("\n") == 1
    assert tiny["log"].read_text() == "" and (base / "metrics.json").read_text() == "{not json"  # nothing touched
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0  # without the flag: trained again
    assert tiny["log"].read_text().split() == ["baseline/none/lf0.5_s0"]


def test_non_finite_metrics_are_refused_when_written_and_when_read(tmp_path):
    from hpelib.runs import RunFolder

    folder = RunFolder(tmp_path)
    with pytest.raises(ValueError, match=r"refusing to write .*metrics.json: non-finite metrics \(mae = inf"):
        folder.write_metrics({"syn": {"mae": float("inf"), "n": 3}})
    assert not (tmp_path / "metrics.json").exists()
    (tmp_path / "metrics.json").write_text('{"mae": NaN, "n": 3}')
    with pytest.raises(ValueError, match=r"metrics.json holds non-finite metrics \(mae = nan\)"):
        folder.read_metrics()
    (tmp_path / "metrics.json").write_text('{"mae": ')
    with pytest.raises(ValueError, match=r"metrics.json is not valid JSON"):
        folder.read_metrics()


def test_the_next_run_of_a_folder_removes_what_a_kill_left(tiny):
    folder = tiny["out"] / "baseline/none/lf0.5_s0"
    folder.mkdir(parents=True)
    left = [folder / ".checkpoint.pt.k3x9q_2.tmp", folder / ".execution_request.json", folder / ".metrics.json.a1.tmp"]
    for path in left:
        path.write_text("left by a killed write")
    assert st.run_study(tiny["yaml"], tiny["out"], only=["baseline/*"]) == 0
    assert not any(path.exists() for path in left)
    assert (folder / "metrics.json").is_file()


def test_a_failure_in_a_pretrainings_file_names_the_command_that_redoes_it(tiny):
    from hpelib.study.runner import _dependency_hint

    study = st.load_study(tiny["yaml"])
    out = tiny["out"].resolve()
    runs = {r.run_id: r for r in st.expand(study, out)}
    run = runs["pretrain/rotation/lf0.5_s0"]
    bad = {"evalue": f"checkpoint {out}/pretrain/rotation_s0/model.pt (12 bytes) is truncated; train again"}
    assert _dependency_hint(study, out, run, bad) == (
        f" [the file is pretrain/rotation_s0's: train it again with python -m hpelib.study {study['_file']} "
        f"--out {out} --force --only pretrain/rotation_s0]")
    assert _dependency_hint(study, out, run, {"evalue": "CUDA out of memory"}) == ""


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
    (("jigsaw: {unshuffled_fraction: 0.5}", "jigsaw: {tiles: 2}"),
     "methods.jigsaw: SSL task 'jigsaw': unknown option(s) ['tiles']"),
    # values, not only keys (issue 9): each is caught before anything runs, naming its key
    (("train: {epochs: 1, lr: 0.01}", "train: {epochs: ten, lr: 0.01}"), "train: epochs: expected an integer, got 'ten'"),
    (("train: {epochs: 1, lr: 0.01}", "train: {epochs: -1, lr: 0.01}"), "train: epochs must be an integer >= 1, got -1"),
    (("rotation: {weight: 0.5}", "rotation: {weight: high}"), "methods.rotation: weight: expected a number, got 'high'"),
    (("image_size: 16", "image_size: 32px"), "image_size: expected an integer, got '32px'"),
    (("model: {backbone: resnet18-narrow}", "model: {backbone: resnet19}"),
     "model: unknown backbone 'resnet19'; valid names: ['resnet50', 'resnet18', 'resnet18-narrow']"),
    (("aux: {jigsaw: 0.25}", "aux: {jigsaw: much}"), "the weight of aux method 'jigsaw': expected a number, got 'much'"),
    (("  train: {name: synthetic, n: 8}", "  train: {name: aflw2000, root: /nonexistent/aflw}"),
     "data.train: data folder /nonexistent/aflw does not exist"),
    (("  train: {name: synthetic, n: 8}", "  train: {name: synthetic, n: 8, box: 3}"),
     "data.train: unknown key(s) ['box']"),
    (("  train: {name: synthetic, n: 8}", "  train: {name: celeba}"), "data.train: unknown data set 'celeba'"),
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


def test_yaml_ambiguous_values_are_what_the_user_meant(tiny):
    """YAML reads 1e-3 as a string; the study reads it as the number the user wrote."""
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("train: {epochs: 1, lr: 0.01}",
                                                             "train: {epochs: '2', lr: 1e-3}"))
    study = st.load_study(tiny["yaml"])
    assert study["train"] == {"epochs": 2, "lr": 0.001}
    run = next(r for r in st.expand(study, tiny["out"]) if r.kind == "train")
    assert run.spec.train.lr == 0.001 and run.spec.train.epochs == 2


def test_every_problem_of_a_study_is_reported_at_once(tiny, capsys):
    text = tiny["yaml"].read_text()
    for old, new in (("train: {epochs: 1, lr: 0.01}", "train: {epochs: ten, lr: fast}"),
                     ("rotation: {weight: 0.5}", "rotation: {weight: high}"),
                     ("model: {backbone: resnet18-narrow}", "model: {backbone: resnet19}"),
                     ("  train: {name: synthetic, n: 8}", "  train: {name: aflw2000, root: /nonexistent/aflw}")):
        text = text.replace(old, new)
    tiny["yaml"].write_text(text)
    assert st.main([str(tiny["yaml"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{tiny['yaml']}: 5 problems:" in err
    for part in ("train: epochs: expected an integer, got 'ten'", "train: lr: expected a number, got 'fast'",
                 "methods.rotation: weight: expected a number", "model: unknown backbone 'resnet19'",
                 "data.train: data folder /nonexistent/aflw does not exist"):
        assert part in err, part
    assert not tiny["out"].exists()


def test_combinations_are_checked_when_runs_are_planned(tiny, capsys):
    """Settings valid alone but not together (jigsaw tiles of 2 px) fail the dry run, naming the runs."""
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("image_size: 16", "image_size: 8"))
    assert st.main([str(tiny["yaml"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "jigsaw: at image_size 8 the 3x3 tiles are 2 px, too small to be a puzzle" in err
    assert "pretrain/jigsaw_s0" in err


def test_env_substitution_and_kfold(tiny, monkeypatch):
    monkeypatch.setenv("TINY_DATA", "/data/x")
    text = tiny["yaml"].read_text().replace("train: {name: synthetic, n: 8}",
                                            "train: {name: folder, root: '${TINY_DATA}/crops'}")
    tiny["yaml"].write_text(text + "kfold: {k: 3, seed: 7}\n")
    with pytest.raises(st.StudyError, match="data folder /data/x/crops does not exist"):
        st.load_study(tiny["yaml"])
    runs = st.expand(st.load_study(tiny["yaml"], check_roots=False), tiny["out"])
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
def test_repository_studies_expand(path, tmp_path, capsys):
    study = st.load_study(path, check_roots=False)
    runs = st.expand(study, tmp_path)
    assert runs and all(r.notebook.is_file() for r in runs)
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids)
    assert all(ids.index(d) < ids.index(r.run_id) for r in runs for d in r.deps)
    roots = [s["root"] for s in [study["data"]["train"], *study["data"]["test"].values(), study["data"].get("pretrain")]
             if s and s.get("root") and s["name"] != "synthetic"]
    missing = [r for r in roots if not Path(r).exists()]
    # the dry run checks the data folders: it passes where the data are, and names the missing ones elsewhere
    assert st.main([str(path), "--dry-run", "--out", str(tmp_path / "o")]) == (2 if missing else 0)
    err = capsys.readouterr().err
    for root in missing:
        assert f"data folder {root} does not exist" in err


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


def test_a_variant_sets_its_own_image_size_and_training_data_options(tiny):
    text = tiny["yaml"].read_text().replace(
        "  baseline: [{}]", "  baseline: [{}, {method: big, image_size: 24, train_data: {n: 6, color_jitter: 0.2}}]")
    tiny["yaml"].write_text(text)
    runs = {r.run_id: r for r in st.expand(st.load_study(tiny["yaml"]), tiny["out"])}
    plain, big = runs["baseline/none/lf0.5_s0"].spec, runs["baseline/big/lf0.5_s0"].spec
    assert plain.image_size == 16 and big.image_size == 24
    assert plain.train_data == {"name": "synthetic", "n": 8}
    assert big.train_data == {"name": "synthetic", "n": 6, "color_jitter": 0.2}
    assert big.test_data == plain.test_data  # the test images and crops stay the study's
    assert runs["pretrain/rotation_s0"].spec.image_size == 16
    assert runs["baseline/big/lf0.5_s0"].fingerprint != runs["baseline/none/lf0.5_s0"].fingerprint
    for bad, match in (("image_size: 0", "image_size"), ("train_data: [n]", "train_data must be a mapping")):
        tiny["yaml"].write_text(text.replace("image_size: 24, train_data: {n: 6, color_jitter: 0.2}", bad))
        with pytest.raises(st.StudyError, match=match):
            st.load_study(tiny["yaml"])


def test_reference_baseline_must_be_a_baseline_variant(tiny):
    text = tiny["yaml"].read_text().replace("  baseline: [{}]", "  baseline: [{}, {method: long, train: {epochs: 2}}]")
    tiny["yaml"].write_text(text + "reference_baseline: long\n")
    assert st.load_study(tiny["yaml"])["reference_baseline"] == "long"
    tiny["yaml"].write_text(text + "reference_baseline: longer\n")
    with pytest.raises(st.StudyError, match=r"reference_baseline: 'longer' is not a method of the baseline scenario"):
        st.load_study(tiny["yaml"])


def test_an_optional_imagenet_variant_is_skipped_in_one_line_without_cached_weights(tiny, tmp_path, monkeypatch):
    from hpelib.models.backbones import imagenet_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch cache
    text = tiny["yaml"].read_text().replace(
        "  baseline: [{}]", "  baseline: [{}, {method: imagenet, optional: true, model: {backbone: resnet18, "
                            "init: imagenet}}]")
    tiny["yaml"].write_text(text)
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], dry_run=True, echo=lines.append) == 0
    weights = imagenet_weights_file("resnet18")
    assert lines[0] == (f"SKIPPED baseline/imagenet (optional): the ImageNet weights of resnet18 are not in the "
                        f"torch cache ({weights}); put them there (download "
                        f"https://download.pytorch.org/models/resnet18-f37072fd.pth on a machine with internet "
                        f"access) to run it")
    assert not any("baseline/imagenet/" in line for line in lines)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"cached")  # present: the variant is planned (nothing reads the file to plan)
    ids = [r.run_id for r in st.expand(st.load_study(tiny["yaml"]), tiny["out"])]
    assert "baseline/imagenet/lf0.5_s0" in ids


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


def test_planning_problems_are_listed_once_each_with_their_runs(tiny, capsys):
    text = tiny["yaml"].read_text().replace("image_size: 16", "image_size: 8")
    tiny["yaml"].write_text(text.replace("train: {epochs: 1, lr: 0.01}", "train: {epochs: 2, lr: 0.01, warmup_epochs: 5}"))
    assert st.main([str(tiny["yaml"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "2 problems when planning the runs" in err
    assert err.count("3x3 tiles are 2 px") == 1 and "warmup_epochs must be smaller than epochs (2)" in err
    assert "(run baseline/none/lf0.5_s0 and 3 more)" in err  # every fine-tune has the warm-up problem


def _baseline_only(tiny):
    text = tiny["yaml"].read_text().replace("  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]\n", "")
    tiny["yaml"].write_text(text.replace("  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n", ""))


def test_a_second_runner_on_the_same_results_folder_is_refused(tiny):
    import socket
    import subprocess
    import sys

    _baseline_only(tiny)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hpelib.study.lock import StudyLock; "
                               "lock = StudyLock(sys.argv[1], 'other.yaml').__enter__(); print('ready', flush=True); "
                               "time.sleep(60)", str(tiny["out"])],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(st.StudyError) as e:
            st.run_study(tiny["yaml"], tiny["out"])
        assert f"is in use by another study runner: pid {holder.pid} on {socket.gethostname()}" in str(e.value)
        assert "(study other.yaml)" in str(e.value) and "another --out" in str(e.value)
        assert tiny["log"].read_text() == ""  # nothing ran
    finally:
        holder.kill()
        holder.wait()
    lines = []  # the holder is gone: its lock is stale and taken over
    assert st.run_study(tiny["yaml"], tiny["out"], echo=lines.append) == 0
    assert any(f"taking over {tiny['out'].resolve()} from a runner that is no longer running (pid {holder.pid}" in l
               for l in lines)
    lines.clear()  # a runner that ended by itself is not taken over from
    assert st.run_study(tiny["yaml"], tiny["out"], echo=lines.append) == 0
    assert not any("taking over" in line for line in lines), lines


def test_an_unusable_out_is_one_line_and_exit_2_in_dry_run_too(tiny, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [(a_file, "is a file, not a folder"), (a_file / "results", f"lies under the file {a_file}"),
             (tmp_path / ("x" * 300), "has a name longer than this file system allows")]
    for out, message in cases:
        for dry in ([], ["--dry-run"]):
            assert st.main([str(tiny["yaml"]), "--out", str(out), *dry]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: --out ") and message in err[0], err
    assert tiny["log"].read_text() == ""  # nothing ran


def _reportable_notebook(tiny) -> None:
    """The tiny study's train notebook writing every metric the report reads (one row per run, no predictions)."""
    full = '(out / "metrics.json").write_text(json.dumps({"yaw": 2.0, "pitch": 3.0, "roll": 4.0, "mae": 3.0, ' \
           '"geodesic": 5.0, "n": 1, "train_time_s": 5.0}))\n'
    no_predictions = TRAIN_NB.split("# one prediction per fold")[0]  # (no error-vs-angle bins)
    _notebook(tiny["yaml"].parent / "nb" / "train.ipynb", 'spec = {}\nout_dir = "."', no_predictions + full)


def test_a_finished_study_on_read_only_storage_is_reported_elsewhere_without_a_lock(tiny, tmp_path, monkeypatch):
    from hpelib.study import runner

    _reportable_notebook(tiny)
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    before = sorted(p.relative_to(tiny["out"]).as_posix() for p in tiny["out"].rglob("*"))
    out = tiny["out"].resolve()
    real = runner.output_folder_problem  # a read-only mount, which root cannot make with chmod
    monkeypatch.setattr(runner, "output_folder_problem",
                        lambda p: f"cannot be written: {out} is read-only or not yours" if Path(p) == out else real(p))
    with pytest.raises(st.StudyError, match=r"--out .* cannot be written"):
        st.run_study(tiny["yaml"], tiny["out"])  # nothing to report elsewhere: refused in one line
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], report_out=tmp_path / "elsewhere", echo=lines.append) == 0
    assert "every run is complete" in lines[0] and (tmp_path / "elsewhere" / "results.csv").is_file()
    assert sorted(p.relative_to(tiny["out"]).as_posix() for p in tiny["out"].rglob("*")) == before  # untouched
    (tiny["out"] / "baseline/none/lf0.5_s0/metrics.json").unlink()  # not finished: it would have to run
    with pytest.raises(st.StudyError, match=r"--out .* cannot be written"):
        st.run_study(tiny["yaml"], tiny["out"], report_out=tmp_path / "elsewhere")


@pytest.fixture
def read_only_mount(tmp_path):
    """``mount(folder) -> mountpoint``: a real read-only bind mount of ``folder`` (root only), unmounted afterwards."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    mounted = []

    def mount(folder: Path) -> Path:
        point = tmp_path / f"ro{len(mounted)}"
        point.mkdir()
        for cmd in (["mount", "--bind", str(folder), str(point)], ["mount", "-o", "remount,bind,ro", str(point)]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                if mounted or cmd[1] == "-o":
                    subprocess.run(["umount", str(point)], capture_output=True)
                pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_study_on_a_real_read_only_mount_dry_runs_complete_and_reports_elsewhere(tiny, tmp_path, read_only_mount):
    _reportable_notebook(tiny)
    assert st.run_study(tiny["yaml"], tiny["out"], report=False) == 0
    ro = read_only_mount(tiny["out"])
    with pytest.raises(OSError):
        (ro / "probe").write_text("")  # really read-only
    lines = []
    with pytest.raises(st.StudyError, match=r"--out .* cannot be written"):
        st.run_study(tiny["yaml"], ro, dry_run=True)  # --dry-run checks that --out can be written
    assert st.run_study(tiny["yaml"], ro, dry_run=True, report_out=tmp_path / "report", echo=lines.append) == 0
    assert "every run is complete" in lines[0] and "cannot be written" in lines[0], lines
    tiny["log"].write_text("")
    assert st.run_study(tiny["yaml"], ro, report_out=tmp_path / "report", echo=lines.append) == 0
    assert (tmp_path / "report" / "results.csv").is_file() and tiny["log"].read_text() == ""  # nothing retrained
    with pytest.raises(st.StudyError, match=r"--out .* cannot be written"):
        st.run_study(tiny["yaml"], ro)  # without --report-out: one line


def test_a_cache_folder_that_cannot_be_written_is_refused_before_anything_runs(tiny, tmp_path, capsys):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    text = tiny["yaml"].read_text().replace("  train: {name: synthetic, n: 8}",
                                            f"  train: {{name: synthetic, n: 8, cache_dir: {a_file}/cache}}")
    tiny["yaml"].write_text(text)
    for dry in ([], ["--dry-run"]):
        assert st.main([str(tiny["yaml"]), "--out", str(tiny["out"]), *dry]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"data.train.cache_dir: {a_file}/cache lies under the file {a_file}" in err[0]
        assert "set HPELIB_CACHE or cache_dir" in err[0]
    assert tiny["log"].read_text() == ""


def test_a_full_disk_in_the_runner_itself_is_one_line(tiny, monkeypatch, capsys):
    from hpelib.io import DiskFullError
    from hpelib.study import runner

    def full(*args, **kwargs):
        raise DiskFullError(28, f"cannot write {tiny['out']}/study_summary.json: not enough free space", "x")

    monkeypatch.setattr(runner, "_summarise", full)
    assert st.main([str(tiny["yaml"]), "--out", str(tiny["out"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: DiskFullError: cannot write {tiny['out']}/study_summary.json: not enough free")
    assert "Traceback" not in "\n".join(err)


def test_jobs_must_be_a_positive_integer(tiny, capsys):
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as e:
            st.main([str(tiny["yaml"]), "--jobs", bad])
        assert e.value.code == 2 and "--jobs: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(st.StudyError, match="--jobs must be an integer >= 1, got 0"):
        st.run_study(tiny["yaml"], tiny["out"], jobs=0)


def test_ctrl_c_gives_one_line_and_keeps_what_is_done(tiny, monkeypatch):
    from hpelib.study import runner

    _baseline_only(tiny)
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("seeds: [0]", "seeds: [0, 1]"))

    def interrupted(self, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Scheduler, "run", interrupted)
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], echo=lines.append) == 130
    assert lines == ["interrupted by SIGINT: 1 of 2 runs complete (kept), 0 stopped; the running ones were stopped, "
                     "each saving its state at the step it was in; run the same command again to continue"]
    summary = json.loads((tiny["out"] / "study_summary.json").read_text())["runs"]
    assert summary["baseline/none/lf0.5_s1"]["status"] == "not run (interrupted)"
    assert (tiny["out"] / "baseline/none/lf0.5_s0/metrics.json").is_file()


def test_a_resumed_run_is_announced_and_epochs_show_in_the_progress(tiny, capfd):
    from hpelib.study.runner import _EpochProgress

    _baseline_only(tiny)
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("train: {epochs: 1, lr: 0.01}",
                                                             "train: {epochs: 3, lr: 0.01}"))
    (run,) = st.expand(st.load_study(tiny["yaml"]), tiny["out"])
    folder = run.folder(tiny["out"])
    from hpelib.study.execute import prepare_folder

    prepare_folder(run, tiny["out"])  # an interrupted run: unchanged parameters, 2 of 3 epochs done
    (folder / "checkpoint.pt").write_text("state")
    (folder / "history.json").write_text(json.dumps({"epochs": [{"epoch": 1}, {"epoch": 2}]}))
    (folder / "train.log").write_text("epoch 1/3: loss 2.1\nepoch 2/3: loss 1.7\n")
    assert _EpochProgress(tiny["out"]).describe([run]) == "baseline/none/lf0.5_s0 epoch 2/3"
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    assert "RESUME baseline/none/lf0.5_s0: from epoch 2/3 (its checkpoint.pt)" in capfd.readouterr().out


def test_an_unlearned_run_gets_a_line(tmp_path):
    from hpelib.runs import RunFolder, RunRecord
    from hpelib.study.runner import _warn_unlearned

    folder = RunFolder(tmp_path / "baseline/none/lf1_s0")
    folder.write_config(RunRecord(test_set="syn"))
    folder.write_metrics({"syn": {"yaw": 30.0, "mae": 20.0, "constant_yaw": 31.0, "constant_mae": 40.0}})
    run = type("R", (), {"kind": "train", "run_id": "baseline/none/lf1_s0",
                         "folder": lambda self, out: tmp_path / "baseline/none/lf1_s0"})()
    lines = []
    _warn_unlearned(run, tmp_path, lines.append)
    assert lines == ["UNLEARNED baseline/none/lf1_s0: error not below 0.8 x the constant predictor's "
                     "([syn] yaw 30.0 vs 31.0); marked in metrics.json and the report"]


def test_the_report_is_told_why_failed_runs_are_missing(tiny, monkeypatch):
    import hpelib.report

    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("report: false", "report: true"))
    tiny["fail"].write_text("pretrain/jigsaw_s0\n")
    calls = []
    monkeypatch.setattr(hpelib.report, "build_report", lambda *a, **k: calls.append(k))
    assert st.run_study(tiny["yaml"], tiny["out"]) == 1
    why = calls[0]["why_not"]
    assert why["pretrain/jigsaw_s0"].startswith("FAILED: pretrain/jigsaw_s0: cell") and "planned failure" in why[
        "pretrain/jigsaw_s0"]
    assert why["pretrain/jigsaw/lf0.5_s0"] == "not run: the run it depends on failed (pretrain/jigsaw_s0)"
    assert "baseline/none/lf0.5_s0" in calls[0]["runs"] and "baseline/none/lf0.5_s0" not in why


def test_the_report_covers_the_runs_of_this_study_only(tiny, monkeypatch):
    import hpelib.report

    _baseline_only(tiny)
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("report: false", "report: true"))
    calls = []
    monkeypatch.setattr(hpelib.report, "build_report", lambda *a, **k: calls.append((a, k)))
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    assert calls and calls[0][1]["runs"] == ["baseline/none/lf0.5_s0"]
    text_with_pretraining = tiny["yaml"].read_text().replace(
        "  baseline: [{}]\n", "  baseline: [{}]\n  pretrain: [{pretrain: rotation}]\n")
    tiny["yaml"].write_text(text_with_pretraining)
    calls.clear()
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0  # pre-training runs are the study's too (not "left out")
    assert calls[0][1]["runs"] == ["baseline/none/lf0.5_s0", "pretrain/rotation/lf0.5_s0", "pretrain/rotation_s0"]
    tiny["yaml"].write_text(text_with_pretraining.replace("  pretrain: [{pretrain: rotation}]\n", ""))
    # a run whose folder holds results made with other settings is never reported, and that is said
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    tiny["yaml"].write_text(tiny["yaml"].read_text().replace("lr: 0.01", "lr: 0.02"))
    calls.clear()
    lines = []
    assert st.run_study(tiny["yaml"], tiny["out"], only=["baseline/none/lf0.5_s0"], echo=lines.append) == 0
    assert calls[0][1]["runs"] == ["baseline/none/lf0.5_s0"]
    assert any(l.startswith("left out of the report: 1 run(s) whose results were made with other settings")
               and l.endswith("baseline/none/lf0.5_s1") for l in lines), lines


def test_a_full_disk_when_the_notebook_is_saved_is_named_not_a_bare_oserror(tmp_path, monkeypatch):
    import errno

    import papermill

    from hpelib.study import notebook_process

    def full(*args, **kwargs):  # what papermill raises when it cannot save the executed notebook
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "train.ipynb"))

    monkeypatch.setattr(papermill, "execute_notebook", full)
    result = notebook_process.execute("nb.ipynb", str(tmp_path / "train.ipynb"), {}, str(tmp_path))
    assert result["ok"] is False and result["error"]["ename"] == "DiskFullError"
    assert result["error"]["evalue"].startswith(f"cannot write {tmp_path / 'train.ipynb'}: the disk is full (")
    assert "free space and run the study again" in result["error"]["evalue"]


def test_a_notebook_process_that_died_on_a_full_disk_is_named_so(tiny, monkeypatch):
    from hpelib.study import execute

    run = st.expand(st.load_study(tiny["yaml"]), tiny["out"])[2]
    folder = execute.prepare_folder(run, tiny["out"])
    execution = execute.Execution(run, folder, {})
    execution.process.kill()  # it ends without writing its result
    execution.process.wait()
    monkeypatch.setattr(execute, "_free_bytes", lambda folder: 4096)
    outcome = execution.poll()
    assert outcome["error"]["ename"] == "DiskFullError"
    assert outcome["error"]["evalue"] == (f"the notebook process could not write its result into {folder}: the disk "
                                          "is full (0.0 MiB free); free space and run the study again")
    execution = execute.Execution(run, folder, {})
    execution.process.kill()
    execution.process.wait()
    monkeypatch.setattr(execute, "_free_bytes", lambda folder: 50 << 30)
    assert execution.poll()["error"]["ename"] == "ProcessDied"  # room on the disk: killed


SELECT_TRAIN_NB = """
import json, os, pathlib
labels, kfold = spec["labels"], spec["kfold"]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(labels["run"] + "\\n")
# yaw error of each method: the validation folds and the test folds disagree on the best one
errors = json.loads(os.environ["FAKE_ERRORS"])["validation" if kfold.get("validation") else "test"]
err = errors.get(labels["method"], 5.0)
out = pathlib.Path(out_dir)
(out / "config.json").write_text(json.dumps(dict(run=labels["run"], scenario=labels["scenario"], kfold=kfold,
                                                 method=labels["method"], seed=spec["train"]["seed"],
                                                 label_fraction=spec["label_fraction"], test_set="syn")))
(out / "predictions.csv").write_text("name,yaw_true,pitch_true,roll_true,yaw_pred,pitch_pred,roll_pred\\n"
                                     f"img{kfold['fold']},10,0,0,{10 + err},0,0\\n")
(out / "metrics.json").write_text(json.dumps({"mae": err / 3, "n": 1, "train_time_s": 1.0}))
"""


def test_select_chooses_on_validation_folds_never_on_test_folds(tiny, monkeypatch, capsys):
    """select: the paired variant is the best on validation folds inside the training folds; the test folds,
    which say otherwise here, are never read to choose, and its test-fold runs follow in the same command."""
    _notebook(tiny["yaml"].parent / "nb" / "train.ipynb", 'spec = {}\nout_dir = "."', SELECT_TRAIN_NB)
    monkeypatch.setenv("FAKE_ERRORS", json.dumps({
        "validation": {"rotation": 6.0, "jigsaw": 3.0, "jigsaw-aux": 9.0, "rotation-aux": 1.5},
        "test": {"rotation": 1.0, "jigsaw": 8.0, "jigsaw-aux": 1.0, "rotation-aux": 8.0}}))
    text = tiny["yaml"].read_text().replace(
        "  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n",
        "  auxiliary: [{aux: jigsaw, method: jigsaw-aux}, {aux: rotation, method: rotation-aux}]\n")
    tiny["yaml"].write_text(text + "kfold: {k: 2, seed: 7}\nselect:\n  combined: {pretrain: pretrain, aux: auxiliary}\n")
    study = st.load_study(tiny["yaml"])
    assert study["select"] == {"combined": {"pretrain": "pretrain", "aux": "auxiliary", "seeds": [0], "validation": 3}}
    planned = st.expand(study, tiny["out"])
    twins = [r for r in planned if r.run_id.startswith("select/")]
    assert len(twins) == 4 * 2 and not any(r.run_id.startswith("combined/") for r in planned)
    for r in twins:  # same outer fold, k and seed as the test-fold runs; the validation split inside them
        assert r.spec.kfold.validation == 3 and r.spec.kfold.k == 2 and r.spec.kfold.seed == 7
    assert {r.deps[0] for r in twins if r.deps} == {"pretrain/rotation_s0", "pretrain/jigsaw_s0"}  # shared
    assert st.main([str(tiny["yaml"]), "--out", str(tiny["out"]), "--dry-run"]) == 0
    assert "SELECT combined: chosen once its 8 validation run(s) are complete" in capsys.readouterr().out

    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    ran = tiny["log"].read_text().split()
    combined = [r for r in ran if r.startswith("combined/")]
    assert combined == [f"combined/selected-jigsaw+rotation/lf0.5_s0/.folds/f{i}" for i in range(2)]
    assert all(ran.index(c) > max(ran.index(t.run_id) for t in twins) for c in combined)
    record = json.loads((tiny["out"] / "selection.json").read_text())["targets"]["combined"]
    assert record["chosen"] == "selected-jigsaw+rotation"
    assert record["candidates"] == {"pretrain": {"rotation": pytest.approx(2.0), "jigsaw": pytest.approx(1.0)},
                                    "auxiliary": {"jigsaw-aux": pytest.approx(3.0), "rotation-aux": pytest.approx(0.5)}}
    # a second command plans the chosen runs from the finished validation runs and finds everything complete
    before = tiny["log"].read_text()
    assert st.run_study(tiny["yaml"], tiny["out"]) == 0
    assert tiny["log"].read_text() == before


def test_select_errors_name_the_key(tiny):
    base = tiny["yaml"].read_text()
    for extra, message in [
            ("select:\n  combined: {pretrain: pretrain}\n", "select: needs kfold"),
            ("kfold: {k: 3}\nselect:\n  combined: {pretrain: baseline}\n", "every variant of scenario 'baseline' must pre-train"),
            ("kfold: {k: 3}\nselect:\n  combined: {aux: nowhere}\n", "'nowhere' is not another scenario"),
            ("kfold: {k: 3}\nselect:\n  combined: {prertain: pretrain}\n", "prertain")]:
        tiny["yaml"].write_text(base + extra)
        with pytest.raises(st.StudyError, match=message):
            st.load_study(tiny["yaml"])


def test_aflw_methods_gives_every_method_the_same_recipe_and_budget(tmp_path):
    """studies/aflw_methods.yaml, the paper's table on real faces: the five SSL methods each as pre-training and as
    auxiliary loss, one pre-training budget for all (4 passes, one per seed), one fine-tuning recipe for every
    row but the same-steps control, 3 folds x 3 seeds, and the pairing chosen on validation folds."""
    study = st.load_study(REPO / "studies" / "aflw_methods.yaml", check_roots=False)
    runs = [r.spec.to_dict() for r in st.expand(study, tmp_path)]
    five = {"rotation", "jigsaw", "jigsaw_perm", "simclr", "barlow"}
    pre = [s for s in runs if s["kind"] == "pretrain"]
    assert {m for s in pre for m in s["model"]["ssl_tasks"]} == five and len(pre) == 15
    assert {s["train"]["epochs"] for s in pre} == {4}
    fine = [s for s in runs if s["kind"] == "train"]
    by_scenario = lambda name: {s["labels"]["method"] for s in fine if s["labels"]["scenario"] == name}
    assert by_scenario("pretrain") == five and by_scenario("auxiliary") == five
    assert {s["labels"]["method"] for s in fine if s["labels"]["scenario"].startswith("select/")} == five
    recipe = {(s["train"]["epochs"], s["train"]["batch_size"], s["train"]["lr"], s["image_size"])
              for s in fine if s["labels"]["method"] != "same-steps"}
    assert recipe == {(100, 32, 0.002, 64)}
    per_epoch = 656 // 32                                # full batches of a training fold (656-657 faces)
    steps = 19080 // 64 * 4 + 100 * per_epoch            # pre-training + fine-tuning optimizer steps
    control = {s["train"]["epochs"] for s in fine if s["labels"]["method"] == "same-steps"}
    assert control == {round(steps / per_epoch)}
    tested = [s for s in fine if not s["labels"]["scenario"].startswith("select/")]
    assert {(s["train"]["seed"], s["kfold"]["fold"]) for s in tested} == {(a, b) for a in range(3) for b in range(3)}
    assert study["select"]["combined"] == {"pretrain": "pretrain", "aux": "auxiliary", "seeds": [0], "validation": 3}
