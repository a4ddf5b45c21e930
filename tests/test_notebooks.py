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
