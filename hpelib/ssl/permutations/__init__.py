"""Permutation sets of 9 tiles with large Hamming distances (Noroozi & Favaro, 2016; JiGen).

:func:`greedy_max_hamming` builds a set deterministically; the package ships
the sets it makes for ``seed=0`` as ``hamming_{N}.npy`` (``N`` in
:data:`SHIPPED`), loaded by :func:`load_permutations`. Regenerate them with
``python -m hpelib.ssl.permutations``.

Algorithm (farthest-point greedy, a variant of Noroozi & Favaro's): start from
the identity as an already chosen element, then repeatedly add the candidate
(out of all 9! permutations) whose *minimum* Hamming distance to the chosen
ones is largest, ties broken by the larger *sum* of distances and then by a
seeded random order of the candidates. The identity itself is not part of the
returned set. Noroozi's script maximizes the mean distance instead; the
min-distance criterion guarantees that no two classes (and no class and the
unshuffled image, which the ``include_identity`` option of the jigsaw task
adds as class 0, as JiGen does) are close to each other.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["greedy_max_hamming", "load_permutations", "hamming_matrix", "SHIPPED", "write_shipped"]

SHIPPED = (30, 100)
_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def _all_permutations() -> np.ndarray:
    return np.array(list(itertools.permutations(range(9))), dtype=np.int8)


def greedy_max_hamming(n: int, seed: int = 0) -> np.ndarray:
    """``[n, 9]`` int64: ``n`` distinct non-identity permutations of ``0..8`` chosen greedily (see module doc)."""
    n = int(n)
    if not 1 <= n <= 362879:
        raise ValueError(f"n must be between 1 and 9!-1 = 362879, got {n}")
    perms = _all_permutations()
    order = np.random.default_rng(seed).permutation(len(perms))
    cand = perms[order]  # seeded candidate order = tie-break order
    identity = np.arange(9, dtype=np.int8)
    dist = (cand != identity).sum(1).astype(np.int64)
    min_d, sum_d = dist.copy(), dist.copy()
    taken = np.zeros(len(cand), dtype=bool)
    taken[(dist == 0).nonzero()[0]] = True
    chosen = []
    big = 10 * (n + 1) + 1  # sum of distances never reaches it: min distance dominates
    for _ in range(n):
        score = np.where(taken, -1, min_d * big + sum_d)
        j = int(score.argmax())
        chosen.append(cand[j].astype(np.int64))
        taken[j] = True
        d = (cand != cand[j]).sum(1)
        np.minimum(min_d, d, out=min_d)
        sum_d += d
    return np.stack(chosen)


def hamming_matrix(perms: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances ``[n, n]`` of a permutation set ``[n, 9]``."""
    p = np.asarray(perms)
    return (p[:, None, :] != p[None, :, :]).sum(-1)


def permutation_file(n: int) -> Path:
    return _DIR / f"hamming_{int(n)}.npy"


def load_permutations(n: int, seed: int = 0) -> np.ndarray:
    """The shipped set for ``n`` (seed 0), else a freshly generated one (a few seconds for large ``n``)."""
    path = permutation_file(n)
    if seed == 0 and path.exists():
        perms = np.load(path)
        if perms.shape != (n, 9):
            raise ValueError(f"{path} holds an array of shape {perms.shape}, expected ({n}, 9); "
                             f"regenerate it with `python -m hpelib.ssl.permutations`")
        return perms.astype(np.int64)
    return greedy_max_hamming(n, seed)


def write_shipped(sizes=SHIPPED) -> list[Path]:
    """(Re)write ``hamming_{N}.npy`` for every ``N`` in ``sizes`` (atomic writes)."""
    from hpelib.io import atomic_write

    out = []
    for n in sizes:
        perms = greedy_max_hamming(n, seed=0)

        def _write(tmp, perms=perms):
            with open(tmp, "wb") as f:
                np.save(f, perms)

        out.append(atomic_write(permutation_file(n), _write))
    return out
