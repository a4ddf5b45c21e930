"""Work lost when training is stopped by SIGTERM at a random moment of a long epoch (a measurement, not a test).

Each trial starts the engine CLI (``python -m hpelib.engine.cli train``) on the
default study's 10,000 synthetic heads (64 px, narrow ResNet-18, batch 64:
~20-40 s an epoch on one CPU core), waits for a uniformly random moment
within its second and third epochs, sends SIGTERM, and reads the saved
``checkpoint.pt``:

* ``saved at``: the epoch and step the checkpoint holds; the loop finishes the
  step under way, saves, and stops (``stop s``: signal to exit), and a
  resume continues from that step (exactly, ``tests/test_engine.py``), so
  nothing done before the signal is redone;
* ``before``: what the same signal cost hpelib before mid-epoch checkpoints,
  when a stopped run kept only its last finished epoch: the steps done in the
  interrupted epoch (the checkpoint's ``step``), in steps and seconds.

    python benchmarks/stop_loss.py --trials 5
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hpelib.data import DATA_DIR
from hpelib.engine import checkpoint as C
from loader_speed import machine_line


def trial(folder: Path, seed: int, n: int, threads: int) -> dict:
    config = {"out_dir": str(folder), "model": {"backbone": "resnet18-narrow", "pose_head": "binned"},
              "train_data": {"name": "synthetic", "root": str(DATA_DIR / "synthetic"), "image_size": 64,
                             "split": "train", "n": n},
              "train": {"epochs": 10, "batch_size": 64, "lr": 0.004, "device": "cpu", "progress": False}}
    (folder / "run.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(config))
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "hpelib.engine.cli", "train", "--config", str(folder / "run.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = folder / "train.log"
    while not (log.is_file() and "epoch 1/" in log.read_text()):
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        time.sleep(0.05)
    first = json.loads((folder / "history.json").read_text())["epochs"][0]
    epoch_s, steps = first["time_s"], first["steps"]
    time.sleep(random.Random(seed).uniform(0.0, 2 * epoch_s))
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    stop_s = time.monotonic() - sent
    saved = C.read_checkpoint(folder / "checkpoint.pt")
    step = int(saved.get("step") or 0)
    return {"epoch_s": epoch_s, "steps": steps, "stopped_at": f"epoch {saved['epoch'] + 1}, step {step}",
            "before_steps": step, "before_s": step * epoch_s / steps, "stop_s": stop_s, "code": proc.returncode}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--n", type=int, default=10000, help="synthetic heads per epoch (rendered once, cached)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    print(machine_line())
    print(f"# engine CLI, {args.n} synthetic heads at 64 px per epoch, batch 64, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print("| trial | epoch s | saved at | before: lost steps | before: lost s | stop s | exit |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="hpelib-stop-") as tmp:
        for i in range(args.trials):
            r = trial(Path(tmp) / f"t{i}", i, args.n, args.threads)
            print(f"| {i} | {r['epoch_s']:.1f} | {r['stopped_at']} of {r['steps']} | {r['before_steps']} | "
                  f"{r['before_s']:.1f} | {r['stop_s']:.2f} | {r['code']} |")


if __name__ == "__main__":
    main()
