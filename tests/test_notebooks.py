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
NAMES = ["pretrain", "train", "evaluate", "report", "explore"]


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
    for path in sorted((NOTEBOOKS.parent / "studies").glob("*.yaml")):
        runs = [r for r in st.expand(st.load_study(path, check_roots=False), tmp_path) if r.kind == kind]
        assert runs, f"{path.name} has no {kind} runs"
        passed = set().union(*(r.params for r in runs)) | {"out_dir"}
        assert passed <= declared, f"{path.name}: {sorted(passed - declared)} not in {kind}.ipynb's parameters"
