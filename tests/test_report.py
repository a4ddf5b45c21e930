"""Tests of hpelib.report on a generated results tree with known numbers."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpelib import report
from hpelib.metrics import ANGLE_NAMES
from hpelib.io import write_json
from hpelib.runs import (FAILED, PREDICTIONS, STUDY_RUN, RunFolder, RunRecord, constant_columns,
                         predictions_frame, unlearned_keys)

SEED_OFFSETS = {0: -0.1, 1: 0.0, 2: 0.1}  # mean 0, std 0.1 over three seeds


def errors(yaw: float, pitch: float, roll: float, *, mae: float | None = None, geodesic: float | None = None,
           n: int = 50, constant: tuple | None = None) -> dict:
    """One test set's block of metrics.json (train_time_s is written by :func:`write_run`).

    ``mae`` defaults to the mean of the angle errors, ``geodesic`` to ``yaw``; ``constant``: the
    constant predictor's (yaw, pitch, roll) errors.
    """
    block = dict(yaw=yaw, pitch=pitch, roll=roll, mae=(yaw + pitch + roll) / 3 if mae is None else mae,
                 geodesic=yaw if geodesic is None else geodesic, n=n)
    if constant is not None:
        block.update(constant_columns(dict(zip(ANGLE_NAMES, constant), mae=sum(constant) / 3)))
    return block


def write_run(root: Path, rel: str, *, scenario: str, method: str, seed: int, mae: float = 0.0,
              label_fraction: float = 1.0, init: str = "imagenet", test_set: str = "synthetic",
              backbone: str = "resnet18", metrics: dict | None = None, per_set: dict | None = None,
              train_time_s: float = 12.5, finished: bool = True, predictions: dict | None = None,
              **fields) -> RunFolder:
    """A run folder written through hpelib.runs, as the engine writes it.

    ``metrics``: the block of ``test_set`` (default: yaw/pitch/roll errors whose mean is ``mae``);
    ``per_set``: ``{test_set: block}`` instead, for several test sets; ``finished=False``: no
    metrics.json (a crashed run); ``predictions``: ``{test_set: predictions_frame}``; ``fields``:
    further :class:`RunRecord` fields (model_config, pretrain_method ...).
    """
    folder = RunFolder(root / rel)
    folder.write_config(RunRecord(run=rel.replace("/", "-"), scenario=scenario, method=method, init=init,
                                  label_fraction=label_fraction, seed=seed, test_set=test_set, backbone=backbone,
                                  image_size=64, **fields))
    if metrics is None:
        metrics = errors(1.2 * mae, mae, 0.8 * mae, mae=mae, geodesic=1.5 * mae, n=100)
    if finished:
        folder.write_metrics(per_set if per_set is not None else {test_set: metrics}, train_time_s=train_time_s)
    if predictions is not None:
        folder.write_predictions(predictions)
    return folder


def fake_predictions(rng: np.random.Generator, scale: float, n: int = 80) -> pd.DataFrame:
    true = np.column_stack([rng.uniform(-80, 80, n), rng.uniform(-40, 40, n), rng.uniform(-30, 30, n)])
    # error grows with |yaw| so the error-vs-angle curve has a shape
    err = scale * (0.5 + np.abs(true[:, :1]) / 80) * rng.uniform(0.5, 1.5, (n, 3))
    return predictions_frame([f"img{i:03d}" for i in range(n)], pred=true + err, true=true)


@pytest.fixture
def tree(tmp_path):
    """3 scenarios x 3 seeds x 2 label fractions, plus two incomplete runs.

    Full labels: baseline MAE 10, auxiliary 8 (-20 %), pretrain 10.5 (+5 %);
    10 % labels: baseline 20, auxiliary 15, pretrain 18.
    """
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    means = {("baseline", "none", "imagenet"): {1.0: 10.0, 0.1: 20.0},
             ("auxiliary", "jigsaw", "imagenet"): {1.0: 8.0, 0.1: 15.0},
             ("pretrain", "rotation", "ssl"): {1.0: 10.5, 0.1: 18.0}}
    for (scen, method, init), by_lf in means.items():
        for lf, m in by_lf.items():
            for seed, off in SEED_OFFSETS.items():
                write_run(root, f"{scen}/{method}/lf{lf}/s{seed}", scenario=scen, method=method, init=init,
                          seed=seed, mae=m + off, label_fraction=lf,
                          predictions={"synthetic": fake_predictions(rng, m)} if lf == 1.0 else None)
    write_run(root, "auxiliary/crashed", scenario="auxiliary", method="simclr", seed=0, finished=False)
    write_run(root, "auxiliary/partial", scenario="auxiliary", method="barlow", seed=0,
              metrics={"yaw": 1.0, "pitch": 2.0})
    return root


def collect_quiet(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return report.collect(root)


# --------------------------------------------------------------------------- collect
def test_collect_shape_columns_and_skips(tree):
    # an SSL pre-training folder is not a pose run: skipped without a warning
    ssl = RunFolder(tree / "pretrain_ssl" / "rotation_s0")
    ssl.write_config(RunRecord(kind="pretrain", pretrain_method="rotation", seed=0))
    ssl.write_metrics({}, train_time_s=1.0)
    with pytest.warns(UserWarning, match=r"left out 2 run\(s\)") as rec:
        df = report.collect(tree)
    msg = str(rec[0].message)
    assert "auxiliary/crashed (no metrics.json)" in msg and "auxiliary/partial" in msg and "mae" in msg
    assert "pretrain_ssl" not in msg
    assert df.shape[0] == 18
    for col in ["run", "scenario", "method", "init", "label_fraction", "seed", "test_set", "backbone",
                "yaw", "pitch", "roll", "mae", "geodesic", "n", "train_time_s"]:
        assert col in df.columns
    assert set(df["scenario"]) == {"baseline", "auxiliary", "pretrain"}
    assert sorted(df["label_fraction"].unique()) == [0.1, 1.0]
    assert list(df["scenario"].drop_duplicates()) == ["baseline", "pretrain", "auxiliary"]  # paper order
    b = df[(df.scenario == "baseline") & (df.label_fraction == 1.0)].sort_values("seed")
    np.testing.assert_allclose(b["mae"], [9.9, 10.0, 10.1])


def test_write_results_table_roundtrip(tree, tmp_path):
    df = collect_quiet(tree)
    path = report.write_results_table(df, tmp_path / "out" / "results.csv")
    back = pd.read_csv(path)
    assert len(back) == len(df)
    np.testing.assert_allclose(back["mae"].sort_values(), df["mae"].sort_values())
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_collect_per_test_set_formats_and_minimal_hand_written_run(tmp_path):
    write_run(tmp_path, "a", scenario="baseline", method="none", seed=0,
              per_set={"aflw2000": errors(5.0, 5.0, 5.0), "biwi": errors(6.0, 6.0, 6.0)}, train_time_s=3.0)
    # an older or hand-made folder: config.json with few keys (no run, method, init, label_fraction,
    # seed, ...), aux_methods as one string; metrics.json with every top-level value a test set
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps(
        {"scenario": "combined", "pretrain_method": "simclr", "aux_methods": "rotation+jigsaw", "test_set": None}))
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"aflw2000": {**errors(4.0, 4.0, 4.0), "train_time_s": 1.0},
                                                             "biwi": {**errors(7.0, 7.0, 7.0), "train_time_s": 1.0}}))
    df = collect_quiet(tmp_path)
    assert len(df) == 4
    got = {(r.run, r.test_set): r.mae for r in df.itertuples()}
    assert got == {("a", "aflw2000"): 5.0, ("a", "biwi"): 6.0, ("b", "aflw2000"): 4.0, ("b", "biwi"): 7.0}
    assert (df.loc[df.run == "a", "train_time_s"] == 3.0).all()
    b = df[df.run == "b"].iloc[0]  # run id: the folder; label fraction: all labels
    assert b["method"] == "simclr+jigsaw+rotation" and b["aux_methods"] == "rotation+jigsaw"
    assert b["label_fraction"] == 1.0 and pd.isna(b["init"]) and pd.isna(b["seed"]) and pd.isna(b["backbone"])
    assert np.isnan(b["constant_mae"]) and not b["unlearned"] and len(b["settings"]) == 8


def test_combined_method_name_and_missing_dir(tmp_path):
    write_run(tmp_path, "c", scenario="combined", method="", seed=1, mae=5.0,
              pretrain_method="simclr", aux_methods=["jigsaw", "rotation"])
    df = collect_quiet(tmp_path)
    assert df.loc[0, "method"] == "simclr+jigsaw+rotation"
    assert df.loc[0, "aux_methods"] == "jigsaw+rotation"
    with pytest.raises(ValueError, match="does not exist"):
        report.collect(tmp_path / "nope")


# --------------------------------------------------------------------------- error table
def test_error_table_relative_change_and_format(tree):
    t = report.error_table(collect_quiet(tree))
    row = lambda s, lf: t[(t.scenario == s) & (t.label_fraction == lf)].iloc[0]  # noqa: E731
    assert row("auxiliary", 1.0)["delta_pct"] == pytest.approx(-20.0)
    assert row("auxiliary", 1.0)["Δ vs baseline (%)"] == "-20.0"
    assert row("pretrain", 1.0)["Δ vs baseline (%)"] == "+5.0"
    assert row("auxiliary", 0.1)["delta_pct"] == pytest.approx(-25.0)
    assert row("pretrain", 0.1)["delta_pct"] == pytest.approx(-10.0)
    assert row("baseline", 1.0)["Δ vs baseline (%)"] == "—"
    assert row("baseline", 1.0)["MAE"] == "10.00 ± 0.10"
    assert row("baseline", 1.0)["Yaw"] == "12.00 ± 0.12"
    assert row("auxiliary", 1.0)["seeds"] == 3
    assert len(t) == 6


def test_error_table_single_seed_and_no_baseline(tmp_path):
    write_run(tmp_path, "a", scenario="pretrain", method="rotation", seed=0, mae=7.25)
    df = collect_quiet(tmp_path)
    with pytest.warns(UserWarning, match="no 'baseline' runs"):
        t = report.error_table(df)
    assert t.loc[0, "MAE"] == "7.25"  # one seed: no ± part
    assert np.isnan(t.loc[0, "delta_pct"])


def test_baseline_init_choice(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"br{seed}", scenario="baseline", method="none", init="random", seed=seed, mae=20.0)
        write_run(tmp_path, f"bi{seed}", scenario="baseline", method="none", init="imagenet", seed=seed, mae=10.0)
        write_run(tmp_path, f"p{seed}", scenario="pretrain", method="barlow", init="ssl", seed=seed, mae=15.0)
        write_run(tmp_path, f"a{seed}", scenario="auxiliary", method="rotation", init="imagenet", seed=seed, mae=9.0)
    df = collect_quiet(tmp_path)
    t = report.error_table(df).set_index("scenario")
    # pretrain (ssl init) is compared with the random-init baseline, auxiliary with the same init
    assert t.loc["pretrain", "baseline_init"] == "random"
    assert t.loc["pretrain", "delta_pct"] == pytest.approx(-25.0)
    assert t.loc["auxiliary", "delta_pct"] == pytest.approx(-10.0)
    t2 = report.error_table(df, baseline_init="imagenet").set_index("scenario")
    assert t2.loc["pretrain", "delta_pct"] == pytest.approx(50.0)


def test_a_baseline_scenario_with_several_variants_has_one_reference(tmp_path):
    """baseline: [{}, {method: long60}]: every Δ is against baseline/none, said in the headers; long60 is a row
    (and a paired test) of its own; no row appears twice."""
    for seed in range(3):
        write_run(tmp_path, f"b{seed}", scenario="baseline", method="none", seed=seed, mae=10.0 + 0.1 * seed)
        write_run(tmp_path, f"l{seed}", scenario="baseline", method="long60", seed=seed, mae=8.0 + 0.1 * seed)
        write_run(tmp_path, f"p{seed}", scenario="pretrain", method="rotation", seed=seed, mae=9.0 + 0.2 * seed)
    df = collect_quiet(tmp_path)
    t = report.error_table(df).set_index("method")
    assert sorted(t.index) == ["long60", "none", "rotation"]  # once each
    assert np.isnan(t.loc["none", "delta_pct"]) and set(t["reference"]) == {"baseline/none"}
    assert t.loc["long60", "delta_pct"] == pytest.approx(100 * (8.1 - 10.1) / 10.1, abs=0.01)
    assert t.loc["rotation", "delta_pct"] == pytest.approx(100 * (9.2 - 10.1) / 10.1, abs=0.01)
    md, tex = report.to_markdown(report.error_table(df)), report.to_latex(report.error_table(df))
    assert "| Δ vs baseline/none (%) |" in md and "vs baseline/none;" in md
    assert r"$\Delta$ vs baseline/none (\%)" in tex
    tests = report.paired_tests(df).set_index("method")
    assert sorted(tests.index) == ["long60", "rotation"] and set(tests["reference"]) == {"baseline/none"}
    assert tests.loc["long60", "mean_diff"] == pytest.approx(-2.0) and tests.loc["long60", "n_pairs"] == 3
    assert "MAE of baseline/none with the same seed" in report.paired_tests_markdown(report.paired_tests(df))
    against_long = report.error_table(df, reference="long60").set_index("method")
    assert np.isnan(against_long.loc["long60", "delta_pct"]) and against_long.loc["none", "delta_pct"] > 0
    with pytest.raises(ValueError, match="reference baseline 'long90' is not a method of scenario 'baseline'"):
        report.error_table(df, reference="long90")


def test_markdown_and_latex(tree):
    t = report.error_table(collect_quiet(tree))
    md = report.to_markdown(t)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Labels"))
    assert "Scenario" in header and "MAE" in header and "Δ vs baseline/none (%)" in header
    assert "Backbone" not in header and "backbone: resnet18" in md  # constant -> caption
    aux = [line for line in lines if "| auxiliary | jigsaw |" in line]
    assert len(aux) == 2 and any("**8.00 ± 0.10**" in line and "-20.0" in line for line in aux)
    assert sum(line.startswith("| ") for line in lines) == 2 + len(t)
    tex = report.to_latex(t)
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\textbf{8.00 $\pm$ 0.10}" in tex and r"\%" in tex
    assert "±" not in tex and "Δ" not in tex and "—" not in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(t) and all(line.count("&") == body[0].count("&") for line in body)
    with pytest.raises(ValueError, match="error_table"):
        report.to_markdown(collect_quiet(tree))


def test_latex_escapes_names(tmp_path):
    write_run(tmp_path, "a", scenario="pretrain", method="jigsaw_perm", seed=0, mae=5.0)
    write_run(tmp_path, "b", scenario="baseline", method="none", seed=0, mae=5.0)
    tex = report.to_latex(report.error_table(collect_quiet(tmp_path)))
    assert r"jigsaw\_perm" in tex and "jigsaw_perm" not in tex


# --------------------------------------------------------------------------- paired tests
def paired_df(shift: float, n_seeds: int, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = 10 + rng.normal(0, 1.0, n_seeds)  # seed-to-seed variation shared by the pair
    rows = []
    for s in range(n_seeds):
        common = dict(init="imagenet", label_fraction=1.0, seed=s, test_set="aflw2000", backbone="resnet50")
        rows.append(dict(common, scenario="baseline", method="none", mae=base[s]))
        rows.append(dict(common, scenario="auxiliary", method="rotation", mae=base[s] + shift + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_paired_test_detects_consistent_improvement():
    r = report.paired_tests(paired_df(shift=-1.0, n_seeds=5)).iloc[0]
    assert r["n_pairs"] == 5
    assert r["mean_diff"] == pytest.approx(-1.0, abs=0.2)
    assert r["t_p_less"] < 0.05 and r["t_p"] < 0.05
    assert bool(r["beats_baseline"])
    assert np.isnan(r["wilcoxon_p_less"]) and "n < 6" in r["note"]


def test_paired_test_null_effect_and_worse():
    r = report.paired_tests(paired_df(shift=0.0, n_seeds=5, noise=0.5, seed=3)).iloc[0]
    assert r["t_p_less"] > 0.05 and not r["beats_baseline"]
    r = report.paired_tests(paired_df(shift=+1.0, n_seeds=5)).iloc[0]
    assert r["t_p_less"] > 0.9 and not r["beats_baseline"]


def test_paired_test_wilcoxon_and_small_n():
    r = report.paired_tests(paired_df(shift=-1.0, n_seeds=7)).iloc[0]
    assert r["wilcoxon_p_less"] == pytest.approx(1 / 2 ** 7)  # all 7 differences negative: exact p
    r = report.paired_tests(paired_df(shift=-1.0, n_seeds=1)).iloc[0]
    assert r["n_pairs"] == 1 and np.isnan(r["t_p"]) and not r["beats_baseline"] and "no test" in r["note"]
    # unmatched seeds are not paired
    df = paired_df(shift=-1.0, n_seeds=3)
    df = df[~((df.scenario == "baseline") & (df.seed == 2))]
    assert report.paired_tests(df).iloc[0]["n_pairs"] == 2


def test_holm_adjusts_within_a_family_and_skips_untested():
    from hpelib.report.stats import holm

    adjusted = holm([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])  # 3*0.01, max(3*.01, 2*.03), max(.., 1*.04)
    assert holm([]).shape == (0,)


def test_beats_baseline_needs_the_holm_corrected_p():
    """Three variants that each pass alone at p < 0.05 but not after correcting for three comparisons."""
    rng = np.random.default_rng(0)
    rows, base = [], 10 + rng.normal(0, 1.0, 3)
    for s in range(3):
        common = dict(init="random", label_fraction=1.0, seed=s, test_set="aflw2000", backbone="resnet50")
        rows.append(dict(common, scenario="baseline", method="none", mae=base[s]))
        for m, d in zip(("rotation", "jigsaw", "simclr"), ([-1.0, -1.5, -0.5], [-1.05, -1.5, -0.5], [-1.0, -1.55, -0.5])):
            rows.append(dict(common, scenario="pretrain", method=m, mae=base[s] + d[s]))
    t = report.paired_tests(pd.DataFrame(rows))
    assert len(t) == 3 and (t["t_p_less"] < 0.05).all()
    assert (t["t_p_holm"] > t["t_p_less"]).all() and not t["beats_baseline"].any()
    assert "Holm p" in report.paired_tests_markdown(t)


def test_paired_tests_on_tree(tree):
    t = report.paired_tests(collect_quiet(tree))
    assert len(t) == 4 and set(t["scenario"]) == {"auxiliary", "pretrain"}
    # seed offsets are identical in every scenario: zero-variance differences are flagged, not tested
    assert t["t_p"].isna().all() and t["note"].str.contains("zero variance").all()
    assert (t["n_pairs"] == 3).all()
    assert t.set_index(["scenario", "label_fraction"]).loc[("auxiliary", 1.0), "mean_diff"] == pytest.approx(-2.0)


# --------------------------------------------------------------------------- predictions and figures
def test_collect_predictions_tags_and_computes_errors(tree, tmp_path):
    p = report.collect_predictions(tree)
    assert len(p) == 3 * 3 * 80  # predictions only at full labels
    assert {"run", "scenario", "method", "seed", "mae_err", "test_set"} <= set(p.columns)
    np.testing.assert_allclose(p["mae_err"], p[["yaw_err", "pitch_err", "roll_err"]].mean(axis=1))
    # without error columns they are computed, wrap-aware
    run = write_run(tmp_path / "r2", "x", scenario="baseline", method="none", seed=0, mae=1.0)
    pd.DataFrame({"name": ["a"], "yaw_true": [179.0], "pitch_true": [0.0], "roll_true": [0.0],
                  "yaw_pred": [-179.0], "pitch_pred": [3.0], "roll_pred": [0.0]}).to_csv(run.file(PREDICTIONS))
    q = report.collect_predictions(tmp_path / "r2")
    assert q.loc[0, "yaw_err"] == pytest.approx(2.0) and q.loc[0, "pitch_err"] == pytest.approx(3.0)


def test_figures_and_axes(tree, tmp_path):
    df = collect_quiet(tree)
    fig = report.plot_error_by_method(df, save=tmp_path / "bars")
    ax = fig.axes[0]
    assert "degrees" in ax.get_ylabel() and (ax.get_legend() or fig.legends)
    assert len(ax.patches) == 3  # one bar per scenario/method at full labels
    heights = sorted(round(b.get_height(), 6) for b in ax.patches)
    assert heights == [8.0, 10.0, 10.5]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert all("(seeds=" in t for t in ticks), ticks  # the bars count seeds, not test images
    assert (tmp_path / "bars.png").stat().st_size > 1000 and (tmp_path / "bars.pdf").exists()
    # by default the label fraction where the whole design ran (most variants) is shown
    partial = df[~((df.label_fraction == 1.0) & (df.scenario == "pretrain"))]
    fig = report.plot_error_by_method(partial)
    assert "label fraction 0.1" in fig.axes[0].get_title() and len(fig.axes[0].patches) == 3
    fig = report.plot_label_efficiency(df)
    assert fig.axes[0].get_xscale() == "log"  # 0.1 .. 1.0 spans a decade
    assert len(fig.axes[0].get_lines()) == 3
    fig = report.plot_error_vs_angle(report.collect_predictions(tree), angle="yaw", bins=8)
    assert "ground-truth yaw (degrees)" == fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="angle"):
        report.plot_error_vs_angle(report.collect_predictions(tree), angle="tilt")


def test_build_report_writes_everything(tree, tmp_path):
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match=r"left out 2 run\(s\)"):
        paths = report.build_report(tree, out)
    for key in ["results_csv", "error_table_md", "error_table_tex", "paired_tests_csv", "paired_tests_md",
                "error_by_method_png", "label_efficiency_png", "error_vs_yaw_png", "error_vs_pitch_pdf"]:
        assert Path(paths[key]).exists() and Path(paths[key]).stat().st_size > 0, key
    for key, path in paths.items():
        if key.endswith("_png"):
            assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "-20.0" in Path(paths["error_table_md"]).read_text()
    assert len(pd.read_csv(paths["results_csv"])) == 18
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no complete runs"):
        report.build_report(empty, tmp_path / "r")
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.*"))  # nothing half-written


def test_a_report_is_swapped_in_whole_and_a_failed_one_moves_the_former_aside(tree, tmp_path):
    out = tmp_path / "report"
    with pytest.warns(UserWarning):
        report.build_report(tree, out)
    (out / "stale.txt").write_text("a file of an older report")
    with pytest.warns(UserWarning):
        paths = report.build_report(tree, out)
    assert not (out / "stale.txt").exists() and all(p.parent == out for p in map(Path, paths.values()))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.raises(ValueError, match=rf"no complete runs .*the former report was moved to .*report.previous"):
        report.build_report(tree, out, runs=["no/such/run"])
    assert not out.exists() and (tmp_path / "report.previous" / "results.csv").is_file()


def test_several_test_sets_with_prediction_files(tmp_path):
    rng = np.random.default_rng(1)
    m = lambda v: errors(v, v, v, mae=v)  # noqa: E731
    for s in range(3):
        for scen, method, off in [("baseline", "none", 0.0), ("combined", "simclr+jigsaw", -1.0)]:
            write_run(tmp_path / "res", f"{scen}/s{s}", scenario=scen, method=method, seed=s, train_time_s=1.0,
                      per_set={"aflw2000": m(5 + off + 0.1 * s), "biwi": m(6 + off + 0.2 * s * s)},
                      predictions={"aflw2000": fake_predictions(rng, 5, n=20), "biwi": fake_predictions(rng, 6, n=30)})
    RunFolder(tmp_path / "res" / "orphan").write_metrics({"synthetic": m(1.0)}, train_time_s=1.0)
    with pytest.warns(UserWarning, match=r"orphan \(no config.json\)"):
        df = report.collect(tmp_path / "res")
    assert len(df) == 12
    t = report.error_table(df).set_index(["test_set", "scenario"])
    assert t.loc[("aflw2000", "combined"), "delta_pct"] == pytest.approx(-100 / 5.1)
    assert t.loc[("biwi", "combined"), "delta_pct"] == pytest.approx(-100 / (6 + 1 / 3 * (0.2 + 0.8)))
    p = report.collect_predictions(tmp_path / "res")
    assert p.groupby("test_set").size().to_dict() == {"aflw2000": 6 * 20, "biwi": 6 * 30}
    fig = report.plot_error_vs_angle(p, angle="pitch", bins=[-40, -20, 0, 20, 40], by="run", min_count=1)
    assert len(fig.axes) == 4  # two test-set panels, each with a twin axis of sample counts
    assert len(fig.axes[0].get_lines()) == 6  # one line per run
    assert "Test set" in report.to_markdown(report.error_table(df))


# --------------------------------------------------------------------------- checks: unlearned runs, mixed settings
def test_collect_constant_columns_and_unlearned_rule(tmp_path):
    const = (20.0, 10.0, 10.0)  # constant MAE 13.33
    cases = {"clear": errors(5.0, 3.0, 3.0, constant=const),
             "yaw_bad": errors(16.0, 3.0, 3.0, constant=const),  # 16 = 0.8 x 20: not clearly below
             "just_below": errors(15.9, 7.9, 7.9, constant=const),  # every angle < 0.8 x constant
             "old_mae_only": {**errors(12.0, 12.0, 12.0), "constant_mae": 13.0},  # 12 >= 10.4
             "old_none": errors(30.0, 30.0, 30.0)}  # cannot be checked: not flagged
    for seed, (name, m) in enumerate(cases.items()):
        write_run(tmp_path, name, scenario="baseline", method="none", seed=seed, metrics=m)
    df = collect_quiet(tmp_path).set_index("run")
    for col in ("constant_yaw", "constant_pitch", "constant_roll", "constant_mae", "unlearned", "settings"):
        assert col in df.columns
    assert df.loc["clear", "constant_yaw"] == 20.0 and df.loc["clear", "constant_mae"] == pytest.approx(40 / 3)
    assert np.isnan(df.loc["old_mae_only", "constant_yaw"]) and np.isnan(df.loc["old_none", "constant_mae"])
    assert df["unlearned"].to_dict() == {"clear": False, "yaw_bad": True, "just_below": False,
                                         "old_mae_only": True, "old_none": False}
    assert report.UNLEARNED_RATIO == 0.8
    notes = report.study_warnings(df.reset_index())
    assert len(notes["unlearned"]) == 2
    yaw_line = next(line for line in notes["unlearned"] if line.startswith("yaw_bad"))
    assert "yaw 16.00 >= 0.8 x 20.00" in yaw_line and "pitch" not in yaw_line
    assert any(line.startswith("old_mae_only") and "mae 12.00" in line for line in notes["unlearned"])
    assert notes["unchecked"] == ["old_none [synthetic]"] and notes["mixed_settings"] == []


def test_unlearned_in_per_test_set_metrics(tmp_path):
    write_run(tmp_path, "a", scenario="baseline", method="none", seed=0, train_time_s=2.0,
              per_set={"aflw2000": errors(5.0, 5.0, 5.0, constant=(20.0, 10.0, 10.0)),
                       "biwi": errors(5.0, 9.0, 5.0, constant=(20.0, 10.0, 10.0))})
    df = collect_quiet(tmp_path).set_index("test_set")
    assert df.loc["biwi", "constant_pitch"] == 10.0
    assert not df.loc["aflw2000", "unlearned"] and df.loc["biwi", "unlearned"]
    assert report.study_warnings(df.reset_index())["unlearned"] == ["a [biwi]: pitch 9.00 >= 0.8 x 10.00"]


def test_settings_fingerprint_ignores_seed_init_and_plumbing():
    cfg = dict(image_size=64, model_config={"backbone": "resnet18", "init": "random", "pose_head": "binned"},
               train_config={"epochs": 10, "lr": 1e-3, "seed": 0, "num_workers": 0, "progress": True})
    fp = lambda c: report.settings_fingerprint(report.training_settings(c))  # noqa: E731
    same = dict(cfg, seed=3, model_config=dict(cfg["model_config"], init="/ckpt/ssl.pt"),
                train_config=dict(cfg["train_config"], seed=3, num_workers=8, progress=False, device="cuda",
                                  log_every=1, ddp_find_unused_parameters=True))
    assert fp(same) == fp(cfg) and len(fp(cfg)) == 8
    assert fp(dict(cfg, train_config=dict(cfg["train_config"], epochs=5))) != fp(cfg)
    assert fp(dict(cfg, image_size=32)) != fp(cfg)
    assert fp(dict(cfg, model_config=dict(cfg["model_config"], pose_head="regression"))) != fp(cfg)
    assert report.training_settings({}) == {"image_size": None}  # missing keys are tolerated
    assert report.training_settings(cfg)["train_config.lr"] == 1e-3


def mixed_tree(root: Path) -> Path:
    """Baseline + auxiliary x 3 seeds; auxiliary seed 2 trained for 5 epochs instead of 10 and did not learn."""
    const = (20.0, 10.0, 10.0)
    for seed in range(3):
        for scen, method, errs in [("baseline", "none", (6.0, 4.0, 4.0)), ("auxiliary", "rotation", (5.0, 4.0, 4.0))]:
            epochs = 5 if (scen == "auxiliary" and seed == 2) else 10
            if epochs == 5:
                errs = (17.0, 4.0, 4.0)
            write_run(root, f"{scen}/s{seed}", scenario=scen, method=method, seed=seed,
                      metrics=errors(*errs, constant=const),
                      model_config={"backbone": "resnet18", "init": "imagenet"},
                      train_config={"epochs": epochs, "lr": 1e-3, "seed": seed, "num_workers": seed})
    return root


def test_error_table_marks_unlearned_and_mixed_groups(tmp_path):
    df = collect_quiet(mixed_tree(tmp_path))
    assert len(df) == 6 and df["unlearned"].sum() == 1
    assert df.loc[df.scenario == "baseline", "settings"].nunique() == 1  # seed and num_workers do not count
    assert df.loc[df.scenario == "auxiliary", "settings"].nunique() == 2
    t = report.error_table(df).set_index("scenario")
    assert t.loc["auxiliary", "seeds"] == 3  # nothing dropped
    assert t.loc["auxiliary", "unlearned"] and t.loc["auxiliary", "mixed_settings"] and t.loc["auxiliary", "flag"] == "†‡"
    assert not t.loc["baseline", "unlearned"] and t.loc["baseline", "flag"] == ""
    md = report.to_markdown(t.reset_index())
    aux = next(line for line in md.splitlines() if "| auxiliary |" in line)
    base = next(line for line in md.splitlines() if "| baseline |" in line)
    mae = t.loc["auxiliary", "MAE"]
    assert f"{mae} †‡" in aux and "†" not in base and "‡" not in base
    caption = md.split("\n\n")[0]
    assert "†" in caption and "0.8" in caption and "constant predictor" in caption and "‡" in caption
    tex = report.to_latex(t.reset_index())
    assert r"$^\dagger$$^\ddagger$" in tex and "†" not in tex and "≥" not in tex and r"$\geq$ 0.8" in tex
    # a clean table has no marks and no mark captions
    clean = report.to_markdown(report.error_table(df[df.scenario == "baseline"]))
    assert "†" not in clean and "‡" not in clean


def test_build_report_warns_and_lists_problems(tmp_path):
    with pytest.warns(UserWarning) as rec:
        paths = report.build_report(mixed_tree(tmp_path / "res"), tmp_path / "out")
    msgs = [str(w.message) for w in rec]
    unl = next(m for m in msgs if "constant predictor" in m)
    assert "auxiliary-s2" in unl and "yaw 17.00" in unl and "auxiliary-s0" not in unl
    mix = next(m for m in msgs if "training settings" in m)
    assert "auxiliary: rotation" in mix and "train_config.epochs (10 vs 5)" in mix
    assert all(f"auxiliary-s{s}" in mix for s in range(3)) and "baseline-s" not in mix
    text = Path(paths["warnings_md"]).read_text()
    assert "auxiliary-s2 [synthetic]: yaw 17.00 >= 0.8 x 20.00" in text and "train_config.epochs" in text
    assert text.count("- none") == 2  # under "Runs left out" (every folder is a complete run) and pre-trainings
    assert "‡" in Path(paths["error_table_md"]).read_text()


def test_build_report_clean_warnings_md(tree, tmp_path):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        paths = report.build_report(tree, tmp_path / "out")
    assert not [w for w in rec if "constant predictor" in str(w.message) or "training settings" in str(w.message)]
    text = Path(paths["warnings_md"]).read_text()
    assert text.count("- none") == 3 and "Not checked (18 rows" in text


# --------------------------------------------------------------------------- paired tests: interval
def test_paired_test_confidence_interval():
    df = paired_df(shift=-1.0, n_seeds=5, noise=0.3)
    r = report.paired_tests(df).iloc[0]
    d = (df[df.scenario == "auxiliary"]["mae"].to_numpy() - df[df.scenario == "baseline"]["mae"].to_numpy())
    lo, hi = stats_t_interval(d)
    assert r["ci_low"] == pytest.approx(lo) and r["ci_high"] == pytest.approx(hi)
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"] < 0  # significant: the interval excludes 0
    md = report.paired_tests_markdown(report.paired_tests(df))
    header = next(line for line in md.splitlines() if line.startswith("| Test set"))
    assert "mean Δ MAE (°)" in header and "± detectable" in header and "t-test p" in header
    row = md.splitlines()[-1]
    assert f"{r['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]" in row and f"±{(hi - lo) / 2:.2f}" in row
    one = report.paired_tests(paired_df(shift=-1.0, n_seeds=1))
    assert np.isnan(one.iloc[0]["ci_low"]) and np.isnan(one.iloc[0]["ci_high"])
    assert "[" not in report.paired_tests_markdown(one).splitlines()[-1]


def stats_t_interval(d):
    from scipy import stats

    return stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))


# --------------------------------------------------------------------------- label-efficiency figure
def efficiency_df(fractions, seeds=3) -> pd.DataFrame:
    rows = []
    for lf in fractions:
        for s in range(seeds):
            for scen, method, mae in [("baseline", "none", 10.0), ("pretrain", "rotation", 9.8),
                                      ("auxiliary", "jigsaw", 10.2)]:
                rows.append(dict(scenario=scen, method=method, init="imagenet", label_fraction=lf, seed=s,
                                 test_set="aflw2000", backbone="resnet18", mae=mae + 0.1 * s - 2 * np.log(lf)))
    return pd.DataFrame(rows)


def legend_is_right_of_axes(fig) -> bool:
    fig.draw_without_rendering()
    ax, leg = fig.axes[0], fig.axes[0].get_legend()
    box, fig_box = leg.get_window_extent(), fig.bbox
    return box.x0 >= ax.get_window_extent().x1 and box.x1 <= fig_box.x1 + 1


def test_label_efficiency_single_fraction_draws_error_bars():
    from matplotlib.collections import LineCollection
    from matplotlib.container import ErrorbarContainer

    fig = report.plot_label_efficiency(efficiency_df([0.2]))
    ax = fig.axes[0]
    assert len(ax.containers) == 3 and all(isinstance(c, ErrorbarContainer) for c in ax.containers)
    # no bands (fill_between), no connecting lines: only the error bars' line collections
    assert all(type(c) is LineCollection for c in ax.collections)
    data_lines = [c.lines[0] for c in ax.containers]
    assert all(len(line.get_xdata()) == 1 and line.get_linestyle() == "None" for line in data_lines)
    assert len({line.get_xdata()[0] for line in data_lines}) == 3  # side by side, not on top of each other
    bars = [c.lines[2][0].get_segments()[0][:, 1] for c in ax.containers]
    assert all(np.ptp(b) > 0 for b in bars)  # 3 seeds: real error bars
    assert "one label fraction (20%)" in ax.get_title()
    assert ax.get_ylim()[0] == 0
    assert legend_is_right_of_axes(fig)


def test_label_efficiency_two_fractions_linear_lines():
    fig = report.plot_label_efficiency(efficiency_df([0.5, 1.0]))
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and len(ax.get_lines()) == 3 and not ax.containers
    assert all(len(line.get_xdata()) == 2 for line in ax.get_lines())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "100%"]
    assert ax.get_ylim()[0] == 0 and legend_is_right_of_axes(fig)


def test_label_efficiency_four_fractions_log_percent_ticks():
    fig = report.plot_label_efficiency(efficiency_df([0.02, 0.05, 0.2, 1.0]))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2%", "5%", "20%", "100%"]
    assert ax.get_ylim()[0] == 0 and legend_is_right_of_axes(fig)
    assert len(ax.get_legend().get_texts()) == 3


def test_pretrain_budget_figure(tmp_path):
    """Budgets 1, 4, 16 epochs of rotation pre-training plus the baseline at 0: one line of 4 points."""
    root = tmp_path / "results"
    for seed, off in SEED_OFFSETS.items():
        write_run(root, f"baseline/none/s{seed}", scenario="baseline", method="none", seed=seed, mae=12 + off)
        for epochs, mae in ((1, 11.5), (4, 10.0), (16, 9.0)):
            write_run(root, f"pretrain/rotation-{epochs}ep/s{seed}", scenario="pretrain",
                      method=f"rotation-{epochs}ep", pretrain_method="rotation", init="ssl", seed=seed,
                      mae=mae + off, pretrain_epochs=epochs)
    df = collect_quiet(root)
    assert sorted(df["pretrain_epochs"].dropna().unique()) == [1, 4, 16]
    methods = list(dict.fromkeys(report.error_table(df)["method"]))  # numbers in labels sort by value
    assert methods == ["none", "rotation-1ep", "rotation-4ep", "rotation-16ep"]
    fig = report.plot_pretrain_budget(df)
    ax = fig.axes[0]
    (line,) = ax.get_lines()[:1]
    assert list(line.get_xdata()) == [0, 1, 4, 16]
    assert np.allclose(line.get_ydata(), [12, 11.5, 10, 9])
    assert ax.get_xscale() == "symlog" and ax.get_ylim()[0] == 0
    paths = report.build_report(root, tmp_path / "report")
    assert Path(paths["pretrain_budget_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="two or more budgets"):  # a study without a budget axis
        report.plot_pretrain_budget(df[df["pretrain_epochs"].isna() | (df["pretrain_epochs"] == 4)])


# --------------------------------------------------------------------------- which runs enter the report
def study_marked(folder: RunFolder, complete: bool) -> RunFolder:
    """``study_run.json`` as the study runner writes it (only the keys the report reads)."""
    write_json(folder.file(STUDY_RUN), {"run_id": folder.path.name, "complete": complete, "fingerprint": "f"})
    return folder


def test_collect_leaves_out_failed_and_unfinished_study_runs(tmp_path):
    root = tmp_path / "res"
    study_marked(write_run(root, "done", scenario="baseline", method="none", seed=0, mae=10.0), complete=True)
    write_run(root, "hand_made", scenario="baseline", method="none", seed=1, mae=10.0)  # no study_run.json
    failed = write_run(root, "failed", scenario="baseline", method="none", seed=2, mae=1.0)  # stale metrics
    write_json(failed.file(FAILED), {"ename": "RuntimeError", "evalue": "CUDA out of memory"})
    study_marked(write_run(root, "restarted", scenario="baseline", method="none", seed=3, mae=1.0), complete=False)
    (root / "no_config").mkdir()  # failed before it wrote anything but the runner's files
    study_marked(RunFolder(root / "no_config"), complete=False)
    write_json(root / "no_config" / FAILED, {"ename": "DataError"})
    with pytest.warns(UserWarning, match=r"left out 3 run\(s\)") as rec:
        df = report.collect(root)
    assert sorted(df["run"]) == ["done", "hand_made"]
    msg = str(rec[0].message)
    assert f"failed ({FAILED}: the run failed)" in msg and f"no_config ({FAILED}: the run failed)" in msg
    assert f"restarted ({STUDY_RUN} says not complete: started again and not finished)" in msg
    assert "done" not in msg and "hand_made" not in msg


def test_collect_and_build_report_restricted_to_given_runs(tree, tmp_path):
    ours = [f"baseline/none/lf{lf}/s{s}" for lf in (1.0, 0.1) for s in range(3)]
    ours += ["auxiliary/jigsaw/lf1.0/s0/", "./auxiliary/jigsaw/lf1.0/s1", str(tree / "auxiliary/jigsaw/lf1.0/s2")]
    with pytest.warns(UserWarning, match="left out") as rec:
        df = report.collect(tree, runs=ours)
    assert len(df) == 9 and set(df["scenario"]) == {"baseline", "auxiliary"}
    msg = str(rec[0].message)
    assert "pretrain/rotation/lf1.0/s0 (not part of this study)" in msg
    assert "auxiliary/crashed (not part of this study)" in msg  # not ours: not judged by its files
    assert "baseline/none" not in msg and "auxiliary/jigsaw/lf1.0" not in msg
    with pytest.warns(UserWarning, match="left out"):
        paths = report.build_report(tree, tmp_path / "out", runs=ours)
    assert len(pd.read_csv(paths["results_csv"])) == 9
    assert set(report.collect_predictions(tree, runs=ours)["scenario"]) == {"baseline", "auxiliary"}
    text = Path(paths["warnings_md"]).read_text()
    section = text.split("## Runs left out")[1].split("\n## ")[0]
    assert "- pretrain/rotation/lf0.1/s2 (not part of this study)" in section
    assert section.count("\n- ") == 6 + 3 + 2  # pretrain x 6, auxiliary at 10 % x 3, the 2 incomplete
    # the study runner says why its own missing runs are missing: failed ones are called failed
    why = {"auxiliary/crashed": "FAILED: auxiliary/crashed: cell 3: RuntimeError: boom",
           "combined/never/lf1.0/s0": "not run: the run it depends on failed (pretrain/x_s0)"}
    with pytest.warns(UserWarning, match="left out"):
        paths = report.build_report(tree, tmp_path / "out2", runs=ours, why_not=why)
    text = Path(paths["warnings_md"]).read_text()
    assert "- auxiliary/crashed (FAILED: auxiliary/crashed: cell 3: RuntimeError: boom)" in text
    assert "- combined/never/lf1.0/s0 (not run: the run it depends on failed (pretrain/x_s0))" in text
    assert "auxiliary/crashed (not part of this study)" not in text


def test_build_report_lists_left_out_runs_in_warnings_md(tree, tmp_path):
    write_json(RunFolder(tree / "baseline/none/lf1.0/s2").file(FAILED), {"ename": "RuntimeError"})
    with pytest.warns(UserWarning, match=r"left out 3 run\(s\)"):
        paths = report.build_report(tree, tmp_path / "out")
    assert len(pd.read_csv(paths["results_csv"])) == 17
    text = Path(paths["warnings_md"]).read_text()
    section = text.split("## Runs left out")[1].split("\n## ")[0]
    assert "- baseline/none/lf1.0/s2 (FAILED: the run failed)" in section
    assert "- auxiliary/crashed (no metrics.json)" in section and "- auxiliary/partial [synthetic]" in section


# --------------------------------------------------------------------------- error table: seeds, not n
def test_error_table_counts_seeds_in_a_column_named_seeds(tree):
    df = collect_quiet(tree)
    assert df["n"].eq(100).all()  # results: n = test images
    t = report.error_table(df)
    assert "n" not in t and "n_seeds" not in t and (t["seeds"] == 3).all()
    md = report.to_markdown(t)
    header = next(line for line in md.splitlines() if line.startswith("| Labels")).split(" | ")
    assert "seeds" in header and "n" not in header
    assert "seeds: number of runs (one per seed) averaged into the row" in md.split("\n\n")[0]
    tex = report.to_latex(t)
    head = tex.split(r"\toprule")[1].split(r"\midrule")[0]
    assert "seeds" in head and " n &" not in head and "seeds: number of runs" in tex.split(r"\label")[0]


# --------------------------------------------------------------------------- figures that do not mislead
def test_error_vs_angle_leaves_a_gap_at_a_dropped_bin(tmp_path):
    rng = np.random.default_rng(2)
    frame = fake_predictions(rng, 5.0, n=200)
    few = frame.query("-20 <= pitch_true < 0").head(3)  # bin [-20, 0): 3 samples, bin [0, 20): none
    frame = pd.concat([frame.query("pitch_true < -20 or pitch_true >= 20"), few])
    write_run(tmp_path, "a", scenario="baseline", method="none", seed=0, mae=5.0, predictions={"synthetic": frame})
    fig = report.plot_error_vs_angle(report.collect_predictions(tmp_path), angle="pitch",
                                     bins=[-40, -20, 0, 20, 40])
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [-30, -10, 10, 30])
    y = np.asarray(line.get_ydata(), float)
    assert np.isnan(y[1:3]).all() and np.isfinite(y[[0, 3]]).all()  # a broken line, not one drawn across the gap
    assert "bins with < 5 samples not drawn (2 bins)" in ax.get_title()
    ax = report.plot_error_vs_angle(report.collect_predictions(tmp_path), angle="pitch",
                                    bins=[-40, -20, 0, 20, 40], min_count=1).axes[0]
    assert np.isnan(ax.get_lines()[0].get_ydata()).tolist() == [False, False, True, False]  # only the empty bin
    assert "bins with < 1 samples not drawn (1 bin)" in ax.get_title()
    ax = report.plot_error_vs_angle(report.collect_predictions(tmp_path), angle="pitch",
                                    bins=[-40, -20, 20, 40], min_count=1).axes[0]
    assert np.isfinite(ax.get_lines()[0].get_ydata()).all() and "not drawn" not in ax.get_title()


def ylim_covers_error_bars(ax, tops) -> bool:
    bottom, top = ax.get_ylim()
    return bottom == 0 and top > max(tops)


@pytest.mark.parametrize("fractions", [[0.2], [0.5, 1.0], [0.02, 0.05, 0.2, 1.0]])
def test_label_efficiency_y_axis_from_zero_above_every_error_bar(fractions):
    df = efficiency_df(fractions)
    ax = report.plot_label_efficiency(df).axes[0]
    tops = [m + h for (_, _, _), g in df.groupby(["scenario", "method", "label_fraction"])
            for m, h in [report.stats.mean_ci(g["mae"].to_numpy(float))]]
    assert ylim_covers_error_bars(ax, tops)


# --------------------------------------------------------------------------- metrics.json written by the experiment
def test_unlearned_key_in_metrics_is_read_and_the_report_check_rules(tmp_path):
    const = (20.0, 10.0, 10.0)
    bad, good = errors(17.0, 3.0, 3.0, constant=const), errors(5.0, 3.0, 3.0, constant=const)
    # the experiment's own list; here deliberately wrong for "says_clean": the report's check decides
    write_run(tmp_path, "flat", scenario="baseline", method="none", seed=0,
              metrics={**bad, "unlearned": unlearned_keys(bad)})
    write_run(tmp_path, "says_clean", scenario="baseline", method="none", seed=1, metrics={**bad, "unlearned": []})
    write_run(tmp_path, "several", scenario="baseline", method="none", seed=2,
              per_set={"aflw2000": {**good, "unlearned": unlearned_keys(good)},
                       "biwi": {**bad, "unlearned": unlearned_keys(bad)}})
    assert unlearned_keys(bad) == ["yaw"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left out or unreadable
        df = report.collect(tmp_path)
    got = {(r.run, r.test_set): r.unlearned for r in df.itertuples()}
    assert got == {("flat", "synthetic"): True, ("says_clean", "synthetic"): True,
                   ("several", "aflw2000"): False, ("several", "biwi"): True}
    assert "unlearned" in report.RESULT_COLUMNS and df["unlearned"].dtype == bool


def test_the_paper_table_of_methods_and_ways_of_using_ssl(tmp_path):
    """Rows = SSL methods, columns = pre-training / auxiliary / both; each cell MAE, Δ% and its interval, * when
    the Holm-corrected paired test passes; — where a way was not run; the same as LaTeX."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        noise = rng.normal(0, 0.05, 5)
        write_run(tmp_path, f"b{seed}", scenario="baseline", method="none", seed=seed, mae=10.0 + seed)
        write_run(tmp_path, f"pr{seed}", scenario="pretrain", method="rotation", seed=seed, mae=8.0 + seed + noise[0])
        write_run(tmp_path, f"pj{seed}", scenario="pretrain", method="jigsaw", seed=seed, mae=10.2 + seed + noise[1])
        write_run(tmp_path, f"ar{seed}", scenario="auxiliary", method="rotation", seed=seed, mae=9.9 + seed + noise[2])
        write_run(tmp_path, f"c{seed}", scenario="combined", method="rotation+jigsaw", seed=seed,
                  mae=7.5 + seed + noise[3])
    df = collect_quiet(tmp_path)
    t = report.paper_table(df).set_index("method")
    assert sorted(t.index) == ["jigsaw", "rotation", "rotation+jigsaw"] and set(t["reference"]) == {"baseline/none"}
    rot = t.loc["rotation"]
    assert rot["pretrain_mae"] == pytest.approx(df[df.method.eq("rotation") & df.scenario.eq("pretrain")].mae.mean())
    assert rot["pretrain_delta_pct"] == pytest.approx(100 * (rot["pretrain_mae"] - 11.0) / 11.0)
    assert rot["pretrain_ci_low_pct"] < rot["pretrain_delta_pct"] < rot["pretrain_ci_high_pct"]
    assert rot["pretrain"].startswith(f"{rot['pretrain_mae']:.2f} (-18.") and rot["pretrain"].endswith(" *")
    assert not t.loc["jigsaw", "pretrain"].endswith("*")  # worse than the baseline: no mark
    assert t.loc["jigsaw", "auxiliary"] == "—" and t.loc["rotation+jigsaw", "pretrain"] == "—"
    assert t.loc["rotation+jigsaw", "combined"].endswith(" *")
    md = report.paper_table_markdown(report.paper_table(df))
    assert "| SSL method | pre-training | auxiliary | both |" in md and "against baseline/none" in md
    assert md.count("\n| ") == 5  # header, separator and 3 methods
    tex = report.paper_table_latex(report.paper_table(df))
    assert r"\begin{tabular}{lrrr}" in tex and r"$^{*}$" in tex and r"\%" in tex and "—" not in tex
