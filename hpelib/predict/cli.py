"""The command: ``python -m hpelib.predict --checkpoint MODEL.pt INPUT... --out DIR [options]``.

Exit status: 0 when every file was read; 1 when some could not be decoded
(each named on its own ``error:`` line as it happens, and listed at the end;
the rows of the others are written) or a video ended before the frame count
its container announces (a cut file: its first frames' rows are written, a
``warning:`` line names it); 2 for a problem found before any file
is read (a missing input, an unusable checkpoint, a bad boxes file, a
missing optional package), as one ``error:`` line; 130 on Ctrl-C (the rows
written so far are kept).
"""
from __future__ import annotations

import argparse
import sys

from ..io import output_folder_problem
from ..models.files import UnreadableCheckpoint
from ..signals import exit_status, signal_name, stop_on_signals

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m hpelib.predict",
        description="Head poses (yaw, pitch, roll in degrees) of the faces in pictures and videos, with a trained "
                    "hpelib model. Writes DIR/predictions.csv, DIR/predictions.jsonl and DIR/annotated/.")
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="pictures, videos (.mp4 .avi .mov .mkv .webm) and folders of them (searched recursively)")
    ap.add_argument("--checkpoint", required=True, metavar="MODEL.pt",
                    help="the model.pt of a head pose run (or its run folder)")
    ap.add_argument("--out", required=True, metavar="DIR", help="output folder")
    faces = ap.add_mutually_exclusive_group()
    faces.add_argument("--boxes", metavar="FILE",
                       help="face boxes to use instead of detecting: CSV with columns file,frame,x0,y0,x1,y1 or "
                            "JSON lines with those keys (frame defaults to 0)")
    faces.add_argument("--cropped", action="store_true",
                       help="the inputs are face crops already: no detection, each picture is one face")
    ap.add_argument("--min-face", type=int, default=30, metavar="PX",
                    help="smallest face side the Haar detector looks for, in pixels (default 30)")
    ap.add_argument("--min-score", type=float, default=0.0, metavar="S",
                    help="drop Haar detections scored lower (1.0: a typical true face; default 0)")
    ap.add_argument("--draw", action=argparse.BooleanOptionalAction, default=True,
                    help="write annotated pictures and videos under DIR/annotated/ (default: on)")
    ap.add_argument("--batch-size", type=int, default=32, metavar="N",
                    help="frames read, and faces run through the model, at a time (default 32)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: CUDA when available (default)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return ap


def main(argv=None) -> int:
    """Run the command; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    problem = output_folder_problem(args.out)
    if problem:
        print(f"error: --out {args.out} {problem}: pass a folder you can write to", file=sys.stderr)
        return 2
    from .detect import HaarDetector
    from .files import predict_files
    from .predictor import Predictor

    try:
        with stop_on_signals():
            detector = (None if (args.cropped or args.boxes)
                        else HaarDetector(min_size=args.min_face, min_score=args.min_score))
            predictor = Predictor(args.checkpoint, device=args.device, detector=detector, batch_size=args.batch_size)
            summary = predict_files(args.inputs, args.out, predictor, boxes=args.boxes, draw=args.draw,
                                    progress=args.progress)
    except (FileNotFoundError, UnreadableCheckpoint, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        by = "" if signal_name(e) == "SIGINT" else f" by {signal_name(e)}"
        print(f"interrupted{by}: the rows written so far are kept", file=sys.stderr)
        return exit_status(e)
    print(summary.line())
    if summary.failed:
        print(f"error: {len(summary.failed)} files could not be read: "
              + ", ".join(file for file, _ in summary.failed), file=sys.stderr)
    if summary.truncated:
        print(f"error: {len(summary.truncated)} videos ended before their last frame: "
              + ", ".join(f"{file} ({read} of {count} frames)" for file, read, count in summary.truncated),
              file=sys.stderr)
    return 1 if summary.failed or summary.truncated else 0
