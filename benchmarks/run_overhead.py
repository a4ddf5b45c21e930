"""Fixed cost of one study run: where the seconds of a tiny train run go (not a test).

One real head pose run, executed as the study runner executes it (a one-run
study YAML -> ``hpelib.study.load_study``/``expand`` -> ``hpelib.study.execute.Execution``,
i.e. papermill on ``notebooks/train.ipynb`` in a child process and a fresh kernel), on synthetic images
rendered once before timing. The breakdown comes from the run itself:

* kernel start / shutdown: from papermill's notebook start and end times to
  the first cell's start and from the last cell's end (papermill records the
  times in the executed notebook's metadata);
* imports: the notebook's import cell (``import hpelib.experiment`` ...);
* data sets, model + engine, evaluation: from the run cell's start and the
  times ``config.json`` (written once the data sets are built), ``model.pt``
  (end of training) and ``predictions.csv`` (end of evaluation) were written;
* training: ``train_time_s`` of ``metrics.json`` (the engine's own timer);
* fixed cost = total - training.

The study runner kills a run's kernel once its last cell is done (papermill's
``shutdown_kernel="immediate"``); measured with this script, asking the kernel
to exit instead (papermill's default) cost 1.5 s more per run.
"process start" is the child process that runs papermill (Python start and
the papermill import) and papermill's own work outside the kernel.

    python benchmarks/run_overhead.py --n 256 --size 32 --epochs 2 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from hpelib import study as st
from hpelib.data import build_dataset
from hpelib.runs import CONFIG, MODEL, PREDICTIONS, RunFolder
from hpelib.study.execute import Execution, kernel_env

REPO = Path(__file__).resolve().parents[1]


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def one_run(run, folder: Path) -> dict:
    """Execute ``run`` in ``folder`` as ``run_study`` does; returns the breakdown in seconds."""
    folder.mkdir(parents=True)
    out_nb = folder / "train.ipynb"
    t0 = time.perf_counter()
    execution = Execution(run, folder, kernel_env(1, None))
    while (res := execution.poll()) is None:
        time.sleep(0.05)
    total = time.perf_counter() - t0
    if not res["ok"]:
        sys.exit(f"run failed: {res['error']} (see {folder}/kernel.log)")
    nb = json.loads(out_nb.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    meta = [c["metadata"]["papermill"] for c in cells]
    src = ["".join(c["source"]) for c in cells]
    i_imp = next(i for i, s in enumerate(src) if "import hpelib" in s or "from hpelib" in s)
    i_run = next(i for i, s in enumerate(src) if "run_hpe(" in s and i != i_imp)
    mtime = {f: (folder / f).stat().st_mtime for f in (CONFIG, MODEL, PREDICTIONS)}
    t_run = _ts(meta[i_run]["start_time"])
    train = RunFolder(folder).read_metrics()["train_time_s"]
    cells_sum = sum(m["duration"] for m in meta)
    start = min(_ts(m["start_time"]) for m in meta) - _ts(nb["metadata"]["papermill"]["start_time"])
    stop = _ts(nb["metadata"]["papermill"]["end_time"]) - max(_ts(m["end_time"]) for m in meta)
    return {
        "total": total,
        "kernel start": start,
        "imports (import cell)": meta[i_imp]["duration"],
        "data sets (run cell until config.json)": mtime[CONFIG] - t_run,
        "training (train_time_s)": train,
        "model build, checkpoints, model.pt": mtime[MODEL] - mtime[CONFIG] - train,
        "evaluation (model.pt -> predictions)": mtime[PREDICTIONS] - mtime[MODEL],
        "other cells (params, rest, plot, table)": (cells_sum - meta[i_imp]["duration"]
                                                    - (mtime[PREDICTIONS] - t_run)),
        "kernel shutdown": stop,
        "process start, papermill outside the kernel": total - start - cells_sum - stop,
        "fixed cost (total - training)": total - train,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="training images")
    ap.add_argument("--n-test", type=int, default=64, help="test images")
    ap.add_argument("--size", type=int, default=32, help="image size")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backbone", default="resnet18-narrow")
    ap.add_argument("--repeats", type=int, default=3, help="runs (per column); medians are printed")
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"), help="folder with train.ipynb")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hpelib-overhead-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "synthetic"
        train = {"name": "synthetic", "root": str(cache), "split": "train", "n": args.n}
        test = {"name": "synthetic", "root": str(cache), "split": "test", "n": args.n_test}
        for spec in (train, test):  # render once, outside the timed runs
            build_dataset(**spec, image_size=args.size)
        study = {"name": "overhead", "notebooks": args.notebooks, "report": False, "image_size": args.size,
                 "model": {"backbone": args.backbone}, "data": {"train": train, "test": {"synthetic": test}},
                 "train": {"epochs": args.epochs, "batch_size": args.batch_size},
                 "scenarios": {"baseline": [{}]}, "seeds": [0]}
        (tmp / "study.yaml").write_text(yaml.safe_dump(study))
        (run,) = st.expand(st.load_study(tmp / "study.yaml"), tmp / "out")

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import hpelib.experiment"], check=True, cwd=REPO)
        bare_import = time.perf_counter() - t0
        rows = [one_run(run, tmp / f"run{i}") for i in range(args.repeats)]

    print(f"one train run as the study runner executes it: {args.n} synthetic images at {args.size}px, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, {args.backbone}, {args.n_test} test images; "
          f"median of {args.repeats} run(s) [s, share of total]")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for key, value in med.items():
        print(f"  {key:45s}{value:9.2f} s ({value / med['total']:6.1%})")
    print(f"  (python -c 'import hpelib.experiment' in a fresh process: {bare_import:.2f} s)")


if __name__ == "__main__":
    main()
