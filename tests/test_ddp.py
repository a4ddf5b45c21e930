"""DistributedDataParallel on CPU: 2 processes, Gloo.

The two processes are started the way ``torchrun --nproc_per_node 2`` starts
them (environment ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), without the launcher process itself, to keep the test fast.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from hpelib.engine import train

    class Tiny(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(n, 3, 32, 32, generator=g)
            self.p = (torch.rand(n, 3, generator=g) - 0.5) * 60
            self.names = [str(i) for i in range(n)]
        def set_epoch(self, epoch):
            pass
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return self.x[i], self.p[i]

    out = sys.argv[1]
    rank = int(os.environ["RANK"])

    def dump(info):
        torch.save(info["model"].state_dict(), os.path.join(out, f"rank{rank}.pt"))

    model = {"backbone": "resnet18-narrow", "pose_head": "regression", "ssl_tasks": {"rotation": {}}}
    cfg = dict(epochs=1, batch_size=4, lr=1e-3, device="cpu", progress=False)
    result = train(model, Tiny(16, 0), Tiny(8, 1), cfg, os.path.join(out, "run"), on_epoch_end=dump)
    assert not dist.is_initialized(), "the engine must destroy the group it created"
    with open(os.path.join(out, f"result{rank}.json"), "w") as f:
        json.dump(result, f)
''')


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with Gloo needed")
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)

    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "train.log"]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)  # BatchNorm buffers too
    saved = torch.load(run / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], w0[k]) for k in w0)

    r0 = json.loads((tmp_path / "result0.json").read_text())
    r1 = json.loads((tmp_path / "result1.json").read_text())
    assert r0["val"] is not None and r0["val"] == r1["val"] and r0["train_loss"] == r1["train_loss"]
    hist = json.loads((run / "history.json").read_text())["epochs"]
    assert hist[0]["steps"] == 2  # 16 samples / 2 ranks / batch 4: each rank trained on its shard
