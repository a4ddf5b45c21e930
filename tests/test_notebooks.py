"""The notebooks as artefacts: clean, parameterised, and in step with the study runner.

Executing them is nbval's job (``pytest --nbval-lax notebooks/``); this file
only reads them, so it is fast.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from hpelib import study as st

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["pretrain", "train", "evaluate", "report", "explore", "predict"]


@pytest.mark.parametrize("name", NAMES)
def test_saved_clean_with_one_parameters_cell(name):
    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "save notebooks without outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    params = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert params, "papermill finds no parameters"


@pytest.mark.parametrize("kind", ["pretrain", "train"])
def test_runner_parameters_exist_in_notebooks(kind, tmp_path):
    """Every parameter the runner passes is declared in the notebook's parameters cell."""
    declared = set(papermill.inspect_notebook(str(NOTEBOOKS / f"{kind}.ipynb")))
    checked = []
    for path in sorted((NOTEBOOKS.parent / "studies").glob("*.yaml")):
        runs = [r for r in st.expand(st.load_study(path, check_roots=False), tmp_path) if r.kind == kind]
        if not runs:  # e.g. the recipe studies train baselines only
            continue
        passed = set().union(*(r.params for r in runs)) | {"out_dir"}
        assert passed <= declared, f"{path.name}: {sorted(passed - declared)} not in {kind}.ipynb's parameters"
        checked.append(path.name)
    assert "default.yaml" in checked and "aflw.yaml" in checked


def test_evaluate_notebook_on_unlabelled_face_crops(tmp_path):
    """A folder of face crops without labels: predictions for every picture, empty error columns."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from hpelib.data.synthetic import render_heads, sample_poses

    crops = tmp_path / "crops"
    crops.mkdir()
    for i, image in enumerate(render_heads(sample_poses(3, seed=1), 48, seed=1)):
        Image.fromarray(image).save(crops / f"face{i}.png")
    out = tmp_path / "out"
    papermill.execute_notebook(str(NOTEBOOKS / "evaluate.ipynb"), str(tmp_path / "evaluate.ipynb"),
                               parameters={"data": {"name": "folder", "root": str(crops)}, "out_dir": str(out)},
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    predictions = pd.read_csv(out / "predictions.csv")
    assert sorted(predictions["name"]) == ["face0.png", "face1.png", "face2.png"]
    assert predictions[["yaw_pred", "pitch_pred", "roll_pred"]].notna().all().all()
    assert predictions[["yaw_err", "pitch_err", "roll_err", "geodesic_err"]].isna().all().all()
    assert np.isfinite(predictions["yaw_pred"]).all()


def test_a_notebook_without_out_dir_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    """The scratch folder a notebook makes without ``out_dir`` is gone when the notebook has run."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the kernel's tempfile.gettempdir()
    papermill.execute_notebook(str(NOTEBOOKS / "pretrain.ipynb"), str(tmp_path / "pretrain.ipynb"),
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    executed = nbformat.read(str(tmp_path / "pretrain.ipynb"), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "run folder: " + str(temp) in printed  # it did work in a scratch folder there
    assert not [p.name for p in temp.iterdir() if p.name.startswith("hpelib-")]


def test_lab_serves_the_repository_with_results_one_click_away(tmp_path):
    """``make lab``'s server (``python -m hpelib.lab``): its contents API lists results/ and notebooks/."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    server = subprocess.Popen([sys.executable, "-m", "hpelib.lab", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=t0k"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        listing, deadline = None, time.time() + 90
        while listing is None and time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/results?token=t0k", timeout=5) as r:
                    listing = json.load(r)
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        assert listing is not None, "the lab server did not answer"
        assert "README.md" in {item["name"] for item in listing["content"]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token=t0k", timeout=5) as r:
            assert "train.ipynb" in {item["name"] for item in json.load(r)["content"]}
    finally:
        server.terminate()
        server.wait(timeout=30)
