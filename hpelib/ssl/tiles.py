"""Cutting an image into a 3x3 grid of tiles and reassembling it in another order.

Both jigsaw tasks shuffle whole-image inputs (JiGen-style: the network sees a
full-size image whose tiles are permuted, not nine separate tiles as in
Noroozi & Favaro's context-free network).

Sizes that are not a multiple of the grid (e.g. 64 px: 64 = 3*21 + 1): the
tiles cover the largest centred region whose sides are multiples of 3
(63x63 for 64 px), and the leftover border (at most 2 px per axis, split
between the two sides) is set to 0, the data set's mean colour after
normalization. The view keeps the input's size, so it can be concatenated with
the other views, and the border carries no information about the permutation.

Convention: ``perm[b, p] = s`` means the tile shown at grid position ``p``
(row-major, 0..8) of view ``b`` is the source image's tile ``s``.
"""
from __future__ import annotations

import torch

__all__ = ["shuffle_tiles", "MIN_TILE", "tile_size_problem"]

#: smallest tile side in pixels that still makes a puzzle (a 2 px tile carries hardly any content to order)
MIN_TILE = 4


def tile_size_problem(task: str, image_size: int, grid: int = 3) -> str | None:
    """Why ``image_size`` px is too small for a ``grid`` x ``grid`` puzzle, or None."""
    if image_size // grid >= MIN_TILE:
        return None
    return (f"{task}: at image_size {image_size} the {grid}x{grid} tiles are {image_size // grid} px, too small "
            f"to be a puzzle; use image_size >= {grid * MIN_TILE}")


def shuffle_tiles(images: torch.Tensor, perm: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Reassemble every image of ``images [B, C, H, W]`` with its tiles in the order ``perm [B, grid*grid]``."""
    b, c, h, w = images.shape
    n = grid * grid
    if perm.shape != (b, n):
        raise ValueError(f"perm must have shape [{b}, {n}], got {tuple(perm.shape)}")
    th, tw = h // grid, w // grid
    if th == 0 or tw == 0:
        raise ValueError(f"images of {h}x{w} px are too small for a {grid}x{grid} tile grid")
    top, left = (h - th * grid) // 2, (w - tw * grid) // 2
    core = images[:, :, top:top + th * grid, left:left + tw * grid]
    tiles = core.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, n, c, th, tw)
    idx = perm.to(images.device, torch.long).view(b, n, 1, 1, 1).expand(b, n, c, th, tw)
    shuffled = torch.gather(tiles, 1, idx)
    shuffled = shuffled.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, th * grid, tw * grid)
    if (th * grid, tw * grid) == (h, w):
        return shuffled
    out = images.new_zeros(images.shape)
    out[:, :, top:top + th * grid, left:left + tw * grid] = shuffled
    return out
