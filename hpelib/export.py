"""Export a trained pose model to ONNX or TorchScript: ``python -m hpelib.export --checkpoint MODEL.pt``.

The exported file holds the backbone and the pose head only (no SSL heads),
in eval mode. It takes ``images``, a ``float32 [N, 3, S, S]`` batch of face
crops made and normalised as the model's :class:`~hpelib.models.InputSpec`
says (``InputSpec.crop``), and returns ``angles``, ``float32 [N, 3]``
(yaw, pitch, roll) in degrees in the convention of :mod:`hpelib.angles`,
exactly what ``HMTLModel.predict`` returns; the batch size ``N`` is free.

The file's metadata (ONNX ``metadata_props``; TorchScript extra file
``hpelib.json``) holds the input spec as JSON, the angle convention, the
model config and what the input and output are: :func:`read_export_metadata`.

* ONNX: the TorchScript-based exporter of ``torch.onnx`` (``dynamo=False``:
  the default exporter needs the ``onnxscript`` package), with the one
  operator it lacks (``aten::rad2deg``, used by the 6D head's angles) given
  as ``x * 180/pi``; needs ``onnx`` (``pip install 'hpelib[deploy]'``).
* TorchScript: ``torch.jit.trace`` (``torch.jit.script`` does not compile the
  model), checked by the tracer at two other batch sizes.

Command errors (a missing or unreadable file, a model without a pose head,
an unknown format, an operator ONNX lacks) print one ``error:`` line and exit
with status 2; a full disk likewise with status 1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .io import DiskFullError, atomic_write, output_folder_problem
from .models import InputSpec, load_pose_model
from .models.inputs import ANGLE_CONVENTION

__all__ = ["FORMATS", "DEFAULT_OPSET", "OPSETS", "INPUT_NAME", "OUTPUT_NAME", "PoseModule", "ExportMetadata", "export",
           "read_export_metadata", "main"]

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts.pt"}
"""The export formats and the file each writes by default (next to the checkpoint)."""
DEFAULT_OPSET = 17
OPSETS = range(11, 21)
"""The ONNX opsets accepted: up to 20, the newest of torch's TorchScript-based exporter (at opset 9 and 10 the
6D head's output loses its declared shape)."""
INPUT_NAME, OUTPUT_NAME = "images", "angles"
_TS_METADATA = "hpelib.json"  # the TorchScript extra file holding the metadata
_KEY = "hpelib."  # prefix of the metadata keys
_ONNX_MISSING = "ONNX export needs the onnx package: pip install 'hpelib[deploy]'"


class PoseModule(nn.Module):
    """What inference needs of an :class:`~hpelib.models.HMTLModel`: images -> ``float32 [N, 3]`` degrees.

    Its forward is the model's ``predict`` (backbone, pose head, the head's
    angles) without the SSL heads; it is put in eval mode, without gradients.
    """

    def __init__(self, model):
        super().__init__()
        self.backbone, self.pose_head = model.backbone, model.pose_head
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pose_head.predict(self.pose_head(self.backbone(images))).float()


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported file says about itself (stored as strings under ``hpelib.*`` keys)."""

    input_spec: InputSpec
    model_config: dict
    source: str  # the checkpoint it was exported from
    angles: str = ANGLE_CONVENTION

    def describe_input(self) -> str:
        s = self.input_spec.image_size
        return (f"{INPUT_NAME}: float32 [N, 3, {s}, {s}], RGB face crops made as input_spec says, "
                f"normalised with mean {list(self.input_spec.mean)} and std {list(self.input_spec.std)}")

    def to_strings(self) -> dict[str, str]:
        return {f"{_KEY}input_spec": json.dumps(self.input_spec.to_dict()),
                f"{_KEY}angles": self.angles,
                f"{_KEY}model_config": json.dumps(self.model_config),
                f"{_KEY}source": self.source,
                f"{_KEY}input": self.describe_input(),
                f"{_KEY}output": f"{OUTPUT_NAME}: float32 [N, 3] = (yaw, pitch, roll) degrees"}

    @classmethod
    def from_strings(cls, props: dict[str, str], path) -> "ExportMetadata":
        try:
            return cls(input_spec=InputSpec.from_dict(json.loads(props[f"{_KEY}input_spec"])),
                       model_config=json.loads(props[f"{_KEY}model_config"]), source=props[f"{_KEY}source"],
                       angles=props[f"{_KEY}angles"])
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{path} holds no hpelib export metadata ({type(err).__name__}: {err}); "
                             "export the model with python -m hpelib.export") from None


def export(checkpoint, out_path=None, format: str = "onnx", opset: int | None = None) -> Path:
    """Export the pose model of ``checkpoint`` (``model.pt``, ``checkpoint.pt`` or run folder); returns the file.

    ``out_path`` defaults to ``model.onnx`` / ``model.ts.pt`` next to the
    checkpoint; ``opset`` (ONNX only) defaults to :data:`DEFAULT_OPSET`.
    Raises ``ValueError`` for an unknown format or a model without a pose
    head, ``FileNotFoundError`` / ``ValueError`` for a missing or unreadable
    checkpoint.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; the formats are {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ValueError(f"opset applies to the onnx format only, not {format}")
    opset = DEFAULT_OPSET if opset is None else opset
    if opset not in OPSETS:
        raise ValueError(f"ONNX opset {opset} is not supported; use one of {OPSETS.start}..{OPSETS.stop - 1}")
    _check_out_path(out_path, format)
    checkpoint, model, spec = load_pose_model(checkpoint)
    meta = ExportMetadata(spec, model.config.to_dict(), str(checkpoint))
    out = Path(out_path) if out_path is not None else checkpoint.parent / FORMATS[format]
    module = PoseModule(model)
    if format == "onnx":
        return _export_onnx(module, meta, out, int(opset))
    return _export_torchscript(module, meta, out)


def example_batch(spec: InputSpec, n: int) -> torch.Tensor:
    """A fixed random ``float32 [n, 3, S, S]`` batch for tracing."""
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 3, spec.image_size, spec.image_size, generator=g)


@contextmanager
def _quiet_torch():
    """Hide torch's notices that do not concern the export's result.

    The deprecation notices of ``torch.jit`` and of the TorchScript-based ONNX
    exporter (both still work), and the tracer's notices about the shape
    checks of :mod:`hpelib.angles` (on the last dimensions: the same for
    every batch size).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(`torch\.jit\.|legacy TorchScript-based ONNX)",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*(legacy TorchScript-based ONNX|The feature will be removed)",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"hpelib\.angles")
        yield


def _rad2deg(g, x):
    """ONNX symbolic of ``aten::rad2deg`` (absent from the TorchScript-based exporter): ``x * 180/pi``."""
    return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(180.0 / math.pi)))


def _export_onnx(module: PoseModule, meta: ExportMetadata, out: Path, opset: int) -> Path:
    try:
        import onnx
    except ImportError:
        raise ImportError(_ONNX_MISSING) from None
    torch.onnx.register_custom_op_symbolic("aten::rad2deg", _rad2deg, 9)

    def write(tmp):
        with _quiet_torch():
            try:
                torch.onnx.export(module, (example_batch(meta.input_spec, 2),), tmp, dynamo=False,
                                  opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}})
            except torch.onnx.errors.UnsupportedOperatorError as err:  # e.g. an op of a registered custom head
                raise ValueError(f"cannot export {meta.source} to ONNX: {err}; the torchscript format may work") \
                    from None
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, meta.to_strings())
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    return atomic_write(out, write)


def _check_out_path(out_path, format: str) -> None:
    """``ValueError`` (one line) for an ``--out`` that does not fit the format or cannot be written."""
    if out_path is None:
        return
    out = Path(out_path)
    onnx_suffix = out.suffix.lower() == ".onnx"
    if (format == "onnx") != onnx_suffix and (onnx_suffix or out.suffix.lower() in (".pt", ".pth", ".ts")):
        raise ValueError(f"--out {out} does not fit --format {format}: name an ONNX file *.onnx and a TorchScript "
                         f"file *.pt (or pass the other --format)")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: name the file to write, e.g. {out / FORMATS[format]}")
    problem = output_folder_problem(out.parent if str(out.parent) else ".")
    if problem:
        raise ValueError(f"--out {out}: its folder {out.parent} {problem}")


def _export_torchscript(module: PoseModule, meta: ExportMetadata, out: Path) -> Path:
    spec = meta.input_spec
    extra = {_TS_METADATA: json.dumps(meta.to_strings())}
    with _quiet_torch():
        traced = torch.jit.trace(module, (example_batch(spec, 2),),
                                 check_inputs=[(example_batch(spec, 1),), (example_batch(spec, 3),)])
        return atomic_write(out, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))


def read_export_metadata(path) -> ExportMetadata:
    """The metadata of a file written by :func:`export` (ONNX or TorchScript, told apart by content)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files, ONNX files protobuf
        extra = {_TS_METADATA: ""}
        try:
            with _quiet_torch():
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError:
            raise ValueError(f"{path} is a zip file but not a TorchScript model (a checkpoint? export it with "
                             "python -m hpelib.export)") from None
        props = json.loads(extra[_TS_METADATA] or "{}")
    else:
        try:
            import onnx
        except ImportError:
            raise ImportError(_ONNX_MISSING) from None
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # noqa: BLE001 - protobuf raises several kinds
            raise ValueError(f"{path} is neither a TorchScript nor an ONNX model ({type(err).__name__})") from None
        props = {p.key: p.value for p in proto.metadata_props}
    return ExportMetadata.from_strings(props, path)


def main(argv=None) -> int:
    """The command; errors print one ``error:`` line and return 2 (1 for a full disk)."""
    parser = argparse.ArgumentParser(prog="python -m hpelib.export",
                                     description="Export a trained pose model to ONNX or TorchScript.")
    parser.add_argument("--checkpoint", required=True, help="model.pt, checkpoint.pt or run folder")
    parser.add_argument("--format", default="onnx", help=f"one of: {', '.join(FORMATS)} (default onnx)")
    parser.add_argument("--out", help="output file (default: model.onnx / model.ts.pt next to the checkpoint)")
    parser.add_argument("--opset", type=int,
                        help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out, args.format, args.opset)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DiskFullError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
