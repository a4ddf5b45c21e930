"""Face boxes given by the user (``--boxes FILE``) instead of detected ones.

The file is a CSV with a header holding the columns ``file, frame, x0, y0, x1, y1``,
or JSON lines (``.jsonl``, ``.ndjson``, ``.json``: one object a line with
those keys); one row per face, ``frame`` may be left out (0: a picture, or
a video's first frame). Other columns are ignored, so the ``predictions.csv``
of an earlier run can be given back. ``file`` is the picture's or video's
path, absolute or relative to the working directory (as the inputs on the
command line; ``predictions.csv``'s ``file`` column is such a path). A box is
a tight face box in pixels: like a landmark box, from the eyebrows to the
chin (see :mod:`hpelib.predict.detect`).
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

__all__ = ["BOX_COLUMNS", "read_boxes", "file_key"]

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def file_key(path) -> str:
    """The one spelling of a file's path that boxes and inputs are matched on (absolute, normalised)."""
    return os.path.normcase(os.path.abspath(os.fspath(path)))


def read_boxes(path) -> dict[tuple[str, int], list[tuple]]:
    """The boxes of a ``--boxes`` file: ``{(file_key(file), frame): [box, ...]}``.

    Raises ``FileNotFoundError``, or ``ValueError`` naming the file and line of a bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file {path} does not exist")
    boxes: dict[tuple[str, int], list[tuple]] = {}
    for line, row in _rows(path):
        where = f"boxes file {path}, line {line}"
        missing = [key for key in ("file",) + BOX_COLUMNS if row.get(key) in (None, "")]
        if missing:
            raise ValueError(f"{where}: no value for {', '.join(missing)}; each row needs file, x0, y0, x1, y1 "
                             "(and optionally frame)")
        try:
            frame = int(row.get("frame") or 0)
            box = tuple(float(row[key]) for key in BOX_COLUMNS)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: frame must be an integer and x0, y0, x1, y1 numbers, got "
                             f"frame={row.get('frame')!r}, box={[row[k] for k in BOX_COLUMNS]}") from None
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1] or frame < 0:
            raise ValueError(f"{where}: an empty or invalid box {box} (x1 > x0 and y1 > y0 needed) or frame {frame}")
        boxes.setdefault((file_key(row["file"]), frame), []).append(box)
    return boxes


def _rows(path: Path):
    """``(line number, row dict)`` of a CSV or JSON-lines file; a file that is not UTF-8 text is one ValueError."""
    try:
        yield from _text_rows(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"boxes file {path} is not UTF-8 text (byte {err.start}: {err.reason}); pass a CSV or "
                         "JSON-lines file with columns file,frame,x0,y0,x1,y1") from None


def _text_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() in _JSON_SUFFIXES:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise ValueError(f"boxes file {path}, line {number}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"boxes file {path}, line {number}: expected a JSON object, "
                                     f"got {text.strip()[:60]}")
                yield number, row
            return
        reader = csv.DictReader(f)
        absent = [c for c in ("file",) + BOX_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"boxes file {path}: its header lacks the columns {', '.join(absent)}; expected "
                             "file,frame,x0,y0,x1,y1 (or JSON lines with those keys, in a .jsonl file)")
        for row in reader:
            yield reader.line_num, row
