"""hpelib.export: the exported ONNX and TorchScript models give what ``model.predict`` gives.

One tiny trained model per pose head: ``binned`` from ``demo_model``,
``regression`` (with an auxiliary rotation task, which the export must leave
out) and ``6d`` from 2-step ``run_hpe`` runs. The inputs are real AFLW2000
test crops from the shared data when it is present (``../shared/data`` or
``$HPELIB_SHARED_DATA``), else crops of the synthetic test set: the
``crops`` fixture says which, and the parity assertions repeat it.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import SHARED_DATA
from hpelib.data import build_dataset
from hpelib.engine.checkpoint import save
from hpelib.experiment import demo_model, run_hpe
from hpelib.export import FORMATS, ExportMetadata, export, main, read_export_metadata
from hpelib.models import ModelConfig, build_model, load_model, read_input_spec
from hpelib.models.inputs import ANGLE_CONVENTION
from hpelib.spec import RunSpec

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

SIZE = 32
TOLERANCE = 1e-3  # degrees
BATCHES = (1, 5)


def _train(head: str, out, ssl_tasks=None):
    """A 2-step run of ``head`` on synthetic heads; returns its ``model.pt``."""
    data = {"name": "synthetic", "root": str(out.parent / ".synthetic"), "n": 32}
    spec = RunSpec.from_dict({
        "model": {"backbone": "resnet18-narrow", "pose_head": head, "ssl_tasks": ssl_tasks or {}},
        "train": {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2, "progress": False},
        "train_data": {**data, "split": "train"}, "test_data": {"synthetic": {**data, "split": "test", "n": 8}},
        "image_size": SIZE})
    run_hpe(spec, out)
    return out / "model.pt"


@pytest.fixture(scope="module", params=["binned", "regression", "6d"])
def exported(request, tmp_path_factory):
    """``(head, model.pt, {format: exported file})`` for each pose head, exported with the default paths."""
    head, root = request.param, tmp_path_factory.mktemp(f"export_{request.param}")
    if head == "binned":
        checkpoint = demo_model(root / "run", image_size=SIZE, steps=2)
    else:
        checkpoint = _train(head, root / "run", {"rotation": {"weight": 0.5}} if head == "regression" else None)
    return head, checkpoint, {fmt: export(checkpoint, format=fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """``(images [5, 3, S, S], source)``: real AFLW2000 test crops when the shared data is there, else synthetic."""
    real = SHARED_DATA / "aflw2000"
    if real.is_dir():
        ds = build_dataset("aflw2000", root=real, train=False, image_size=SIZE)
        source = f"real AFLW2000 crops ({real})"
    else:
        ds = build_dataset("synthetic", root=tmp_path_factory.mktemp("synthetic"), split="test", n=5,
                           train=False, image_size=SIZE)
        source = "synthetic crops (no shared AFLW2000 data)"
    picks = np.linspace(0, len(ds) - 1, 5).round().astype(int)  # spread over the set: varied poses
    print(f"parity inputs: {source}")
    return torch.stack([ds[int(i)][0] for i in picks]), source


def run_onnx(path, images: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


def run_torchscript(path, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.jit.load(str(path)).eval()(images).numpy()


RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript}


def test_exported_models_predict_what_the_model_predicts(exported, crops):
    """Within TOLERANCE of ``predict``, plus ``predict``'s own float32 rounding where that is not negligible.

    ``exact`` is the same model in float64 (the heads cast their last steps to
    float32), ``rounding`` how far the float32 ``predict`` is from it: about
    1e-6 degrees for the binned and regression heads, but up to ~1e-3 for the
    6D head of a barely trained model (its small 6D outputs are sums of many
    terms, and Euler angles amplify errors at large yaw). The export must be
    as close to ``exact`` as ``predict`` is, up to TOLERANCE, and so within
    TOLERANCE + 2 x rounding of ``predict``.
    """
    head, checkpoint, files = exported
    images, source = crops
    model, exact = load_model(checkpoint).eval(), load_model(checkpoint).double().eval()
    for n in BATCHES:
        want, best = model.predict(images[:n]).numpy(), exact.predict(images[:n].double()).numpy()
        rounding = float(np.abs(want - best).max())
        for fmt, path in files.items():
            got = RUNNERS[fmt](path, images[:n])
            assert got.dtype == np.float32 and got.shape == (n, 3)
            diff, error = float(np.abs(got - want).max()), float(np.abs(got - best).max())
            print(f"{head} {fmt} batch {n} on {source}: max |export - predict| {diff:.2e} degrees; "
                  f"from float64: export {error:.2e}, predict {rounding:.2e}")
            where = f"{head} {fmt} batch {n} on {source}"
            assert error <= rounding + TOLERANCE, f"{where}: {error} degrees from the float64 result"
            assert diff <= TOLERANCE + 2 * rounding, f"{where}: {diff} degrees from predict"


def test_the_batch_axis_is_free_and_only_inference_is_exported(exported):
    head, _, files = exported
    proto = onnx.load(str(files["onnx"]))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, SIZE, SIZE]
    assert not [i.name for i in proto.graph.initializer if i.name.startswith("ssl")]
    ts = torch.jit.load(str(files["torchscript"]))
    assert not ts.training and {k.split(".")[0] for k in ts.state_dict()} == {"backbone", "pose_head"}
    assert ts(torch.zeros(7, 3, SIZE, SIZE)).shape == (7, 3)  # traced at 2, checked at 1 and 3


def test_the_metadata_round_trips(exported):
    head, checkpoint, files = exported
    for path in files.values():
        meta = read_export_metadata(path)
        assert meta.input_spec == read_input_spec(checkpoint)
        assert meta.angles == ANGLE_CONVENTION
        assert meta.model_config["pose_head"] == head and meta.source == str(checkpoint)
    props = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    assert json.loads(props["hpelib.input_spec"])["image_size"] == SIZE  # readable without hpelib
    assert props["hpelib.angles"] == ANGLE_CONVENTION
    assert ExportMetadata.from_strings(props, files["onnx"]) == read_export_metadata(files["onnx"])


@pytest.fixture
def pretrained(tmp_path):
    """The ``model.pt`` of an SSL pre-training model (no pose head)."""
    ssl = build_model(ModelConfig(backbone="resnet18-narrow", pose_head=None, ssl_tasks={"rotation": {}}))
    return save({"model_config": ssl.config.to_dict(), "model": ssl.state_dict()}, tmp_path / "model.pt")


def test_errors_name_the_file_and_the_choices(tmp_path, pretrained):
    with pytest.raises(ValueError, match=f"{pretrained} is not a pose model"):
        export(pretrained)
    with pytest.raises(ValueError, match="unknown export format 'tflite'; the formats are onnx, torchscript"):
        export(pretrained, format="tflite")
    with pytest.raises(ValueError, match="opset 99 is not supported"):
        export(pretrained, opset=99)
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        export(tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="not a TorchScript model"):
        read_export_metadata(pretrained)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="notes.txt"):
        read_export_metadata(tmp_path / "notes.txt")


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "the formats are onnx, torchscript"),
    ([], "is not a pose model"),
    (["--format", "torchscript", "--out", "x.onnx"], "--out x.onnx does not fit --format torchscript"),
    (["--out", "model.ts.pt"], "--out model.ts.pt does not fit --format onnx"),
    (["--out", "{tmp}"], "is a folder: name the file to write"),
    (["--out", "{file}/model.onnx"], "its folder {file} is a file, not a folder"),
])
def test_the_command_prints_one_error_line_and_exits_2(pretrained, capsys, argv, message, tmp_path):
    (tmp_path / "a_file").write_text("")
    fill = {"tmp": str(tmp_path), "file": str(tmp_path / "a_file")}
    argv, message = [a.format(**fill) for a in argv], message.format(**fill)
    assert main(["--checkpoint", str(pretrained), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_the_command_writes_the_file_it_is_told(exported, tmp_path, capsys):
    _, checkpoint, files = exported
    assert files == {"onnx": checkpoint.parent / "model.onnx", "torchscript": checkpoint.parent / "model.ts.pt"}
    out = tmp_path / "pose.ts.pt"
    assert main(["--checkpoint", str(checkpoint.parent), "--format", "torchscript", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert read_export_metadata(out).source == str(checkpoint)
