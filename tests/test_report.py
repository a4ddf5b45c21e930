"""Tests of hpelib.report on a generated results tree with known numbers."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpelib import report

SEED_OFFSETS = {0: -0.1, 1: 0.0, 2: 0.1}  # mean 0, std 0.1 over three seeds


def write_run(root: Path, rel: str, *, scenario: str, method: str, seed: int, mae: float,
              label_fraction: float = 1.0, init: str = "imagenet", test_set: str = "synthetic",
              backbone: str = "resnet18", metrics: dict | None = None, predictions: pd.DataFrame | None = None,
              **extra) -> Path:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(run=rel.replace("/", "-"), scenario=scenario, method=method, init=init,
               label_fraction=label_fraction, seed=seed, test_set=test_set, backbone=backbone,
               image_size=64, **extra)
    (d / "config.json").write_text(json.dumps(cfg))
    if metrics is None:
        # yaw/pitch/roll chosen so that their mean is exactly ``mae``
        metrics = dict(yaw=1.2 * mae, pitch=mae, roll=0.8 * mae, mae=mae, geodesic=1.5 * mae, n=100,
                       train_time_s=12.5)
    if metrics is not False:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        predictions.to_csv(d / "predictions.csv", index=False)
    return d


def fake_predictions(rng: np.random.Generator, scale: float, n: int = 80) -> pd.DataFrame:
    true = np.column_stack([rng.uniform(-80, 80, n), rng.uniform(-40, 40, n), rng.uniform(-30, 30, n)])
    # error grows with |yaw| so the error-vs-angle curve has a shape
    err = scale * (0.5 + np.abs(true[:, :1]) / 80) * rng.uniform(0.5, 1.5, (n, 3))
    pred = true + err
    df = pd.DataFrame({"name": [f"img{i:03d}" for i in range(n)]})
    for i, a in enumerate(("yaw", "pitch", "roll")):
        df[f"{a}_true"], df[f"{a}_pred"], df[f"{a}_err"] = true[:, i], pred[:, i], err[:, i]
    df["geodesic_err"] = err.sum(1)
    return df


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
                          predictions=fake_predictions(rng, m) if lf == 1.0 else None)
    write_run(root, "auxiliary/crashed", scenario="auxiliary", method="simclr", seed=0, mae=0, metrics=False)
    write_run(root, "auxiliary/partial", scenario="auxiliary", method="barlow", seed=0, mae=0,
              metrics={"yaw": 1.0, "pitch": 2.0})
    return root


def collect_quiet(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return report.collect(root)


# --------------------------------------------------------------------------- collect
def test_collect_shape_columns_and_skips(tree):
    # an SSL pre-training folder is not a pose run: skipped without a warning
    (tree / "pretrain_ssl" / "rotation_s0").mkdir(parents=True)
    (tree / "pretrain_ssl" / "rotation_s0" / "config.json").write_text(json.dumps({"kind": "pretrain"}))
    (tree / "pretrain_ssl" / "rotation_s0" / "metrics.json").write_text(json.dumps({"train_time_s": 1.0}))
    with pytest.warns(UserWarning, match="skipped 2 incomplete") as rec:
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


def test_collect_per_test_set_formats(tmp_path):
    m = lambda v: dict(yaw=v, pitch=v, roll=v, mae=v, geodesic=v, n=10)  # noqa: E731
    write_run(tmp_path, "a", scenario="baseline", method="none", seed=0, mae=0,
              metrics={"per_test_set": {"aflw2000": m(5.0), "biwi": m(6.0)}, "train_time_s": 3.0})
    write_run(tmp_path, "b", scenario="pretrain", method="simclr", seed=0, mae=0,
              metrics={"aflw2000": {**m(4.0), "train_time_s": 1.0}, "biwi": {**m(7.0), "train_time_s": 1.0}})
    df = collect_quiet(tmp_path)
    assert len(df) == 4
    got = {(r.run, r.test_set): r.mae for r in df.itertuples()}
    assert got == {("a", "aflw2000"): 5.0, ("a", "biwi"): 6.0, ("b", "aflw2000"): 4.0, ("b", "biwi"): 7.0}
    assert (df.loc[df.run == "a", "train_time_s"] == 3.0).all()


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
    assert row("auxiliary", 1.0)["n_seeds"] == 3
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


def test_markdown_and_latex(tree):
    t = report.error_table(collect_quiet(tree))
    md = report.to_markdown(t)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Labels"))
    assert "Scenario" in header and "MAE" in header and "Δ vs baseline (%)" in header
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
    d = write_run(tmp_path / "r2", "x", scenario="baseline", method="none", seed=0, mae=1.0)
    pd.DataFrame({"name": ["a"], "yaw_true": [179.0], "pitch_true": [0.0], "roll_true": [0.0],
                  "yaw_pred": [-179.0], "pitch_pred": [3.0], "roll_pred": [0.0]}).to_csv(d / "predictions.csv")
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
    with pytest.warns(UserWarning, match="incomplete"):
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


def test_several_test_sets_with_prediction_files(tmp_path):
    rng = np.random.default_rng(1)
    m = lambda v: dict(yaw=v, pitch=v, roll=v, mae=v, geodesic=v, n=10, train_time_s=1.0)  # noqa: E731
    for s in range(3):
        for scen, method, off in [("baseline", "none", 0.0), ("combined", "simclr+jigsaw", -1.0)]:
            d = write_run(tmp_path / "res", f"{scen}/s{s}", scenario=scen, method=method, seed=s, mae=0,
                          metrics={"aflw2000": m(5 + off + 0.1 * s), "biwi": m(6 + off + 0.2 * s * s)})
            fake_predictions(rng, 5, n=20).to_csv(d / "predictions_aflw2000.csv", index=False)
            fake_predictions(rng, 6, n=30).to_csv(d / "predictions_biwi.csv", index=False)
    (tmp_path / "res" / "orphan").mkdir()
    (tmp_path / "res" / "orphan" / "metrics.json").write_text(json.dumps(m(1.0)))
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
