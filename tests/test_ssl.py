"""hpelib.ssl: views (shapes, determinism, content), permutation sets, closed-form losses, augmentations."""
import math

import numpy as np
import pytest
import torch

from hpelib.ssl import TASKS, barlow_twins_loss, build_task, nt_xent, task_options
from hpelib.ssl.augment import AugmentConfig, augment
from hpelib.ssl.permutations import (SHIPPED, greedy_max_hamming, hamming_matrix, load_permutations,
                                     permutation_file)
from hpelib.ssl.tiles import shuffle_tiles


def _batch(b=4, s=48, seed=0):
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


EXPECTED_VIEWS = {"rotation": 4, "jigsaw": 1, "jigsaw_perm": 1, "simclr": 2, "barlow": 2}


# -- registry ---------------------------------------------------------------

def test_registry_names_and_errors():
    assert set(TASKS) == {"rotation", "jigsaw", "jigsaw_perm", "simclr", "barlow"}
    with pytest.raises(ValueError, match=r"unknown SSL task 'colorize'; valid names: \['rotation'"):
        build_task("colorize", 8)
    with pytest.raises(ValueError, match="valid options"):
        build_task("rotation", 8, rotations=3)
    assert "temperature" in task_options("simclr")
    with pytest.raises(ValueError, match="crop_scale"):
        build_task("simclr", 8, augment={"crop_scale": (0.0, 1.0)})
    with pytest.raises(ValueError, match="valid options"):
        build_task("barlow", 8, augment={"hue": 0.1})


# -- views: shapes and determinism -------------------------------------------

@pytest.mark.parametrize("size", [48, 64, 32])
@pytest.mark.parametrize("name", sorted(EXPECTED_VIEWS))
def test_views_shape_and_determinism(name, size):
    task = build_task(name, 16)
    x = _batch(4, size)
    v1, t1 = task.make_views(x, _gen(3))
    v2, t2 = task.make_views(x, _gen(3))
    assert v1.shape == (4 * EXPECTED_VIEWS[name], 3, size, size)
    assert len(t1) == v1.shape[0]
    assert torch.equal(v1, v2) and torch.equal(t1, t2)
    v3, t3 = task.make_views(x, _gen(4))
    if name != "rotation":  # rotation's default views are not random
        assert not torch.equal(v1, v3)
    loss = task.loss(torch.randn(v1.shape[0], 16), t1)
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", sorted(EXPECTED_VIEWS))
def test_views_keep_channels_last(name):
    task = build_task(name, 16)
    x = _batch(2, 33).contiguous(memory_format=torch.channels_last)
    views, _ = task.make_views(x, _gen(0))
    assert views.is_contiguous(memory_format=torch.channels_last)
    ref, _ = task.make_views(x.contiguous(), _gen(0))
    assert torch.allclose(views, ref, atol=1e-6)


# -- rotation -----------------------------------------------------------------

def test_rotation_all_views_are_the_four_rotations():
    task = build_task("rotation", 8)
    x = _batch(3, 32)
    views, targets = task.make_views(x, _gen(0))
    for k in range(4):
        assert torch.equal(views[3 * k:3 * k + 3], torch.rot90(x, k, dims=(2, 3)))
        assert (targets[3 * k:3 * k + 3] == k).all()


def test_rotation_random_mode_matches_its_targets():
    task = build_task("rotation", 8, mode="random")
    x = _batch(16, 32)
    views, targets = task.make_views(x, _gen(1))
    assert views.shape == x.shape and len(set(targets.tolist())) > 1
    for i, k in enumerate(targets.tolist()):
        assert torch.equal(views[i], torch.rot90(x[i], k, dims=(1, 2)))
    with pytest.raises(ValueError, match="square"):
        task.make_views(torch.zeros(2, 3, 32, 40), _gen(0))


# -- tiles and jigsaw -----------------------------------------------------------

def _tile_index_image(size, b=2):
    """Images whose 3x3 tile (row-major) t has the constant value t inside the multiple-of-3 core."""
    t = size // 3
    top = (size - 3 * t) // 2
    img = torch.full((b, 3, size, size), -1.0)
    for p in range(9):
        r, c = divmod(p, 3)
        img[:, :, top + r * t: top + (r + 1) * t, top + c * t: top + (c + 1) * t] = float(p)
    return img, t, top


@pytest.mark.parametrize("size", [48, 64])
def test_shuffle_tiles_moves_tile_s_to_position_p(size):
    img, t, top = _tile_index_image(size)
    perm = torch.stack([torch.randperm(9, generator=_gen(i)) for i in range(2)])
    out = shuffle_tiles(img, perm)
    assert out.shape == img.shape
    for b in range(2):
        for p in range(9):
            r, c = divmod(p, 3)
            tile = out[b, :, top + r * t: top + (r + 1) * t, top + c * t: top + (c + 1) * t]
            assert (tile == perm[b, p]).all()
    if size % 3:  # the leftover border is the mean colour (0), not the original pixels
        core = torch.zeros_like(out, dtype=torch.bool)
        core[:, :, top:top + 3 * t, top:top + 3 * t] = True
        assert (out[~core] == 0).all()
    else:
        inverse = perm.argsort(1)
        assert torch.equal(shuffle_tiles(out, inverse), img)


def test_jigsaw_targets_are_permutations_that_undo_the_views():
    task = build_task("jigsaw", 8)
    x = _batch(5, 45)
    views, targets = task.make_views(x, _gen(2))
    assert targets.shape == (5, 9)
    assert torch.equal(targets.sort(1).values, torch.arange(9).expand(5, 9))
    assert torch.equal(shuffle_tiles(views, targets.argsort(1)), x)
    assert task.logits(torch.randn(5, 8)).shape == (5, 9, 9)
    every = build_task("jigsaw", 8, unshuffled_fraction=1.0)
    v, t = every.make_views(x, _gen(2))
    assert torch.equal(v, x) and torch.equal(t, torch.arange(9).expand(5, 9))


def test_jigsaw_perm_classes_and_identity_option():
    task = build_task("jigsaw_perm", 8, n_permutations=30)
    x = _batch(6, 45)
    views, cls = task.make_views(x, _gen(0))
    assert task.n_classes == 30 and cls.min() >= 0 and cls.max() < 30
    perms = torch.as_tensor(load_permutations(30))
    for i in range(6):
        assert torch.equal(shuffle_tiles(views[i:i + 1], perms[cls[i]].argsort().unsqueeze(0)), x[i:i + 1])
    ident = build_task("jigsaw_perm", 8, n_permutations=30, include_identity=True, identity_fraction=1.0)
    assert ident.n_classes == 31
    v, c = ident.make_views(x, _gen(0))
    assert (c == 0).all() and torch.equal(v, x)
    never = build_task("jigsaw_perm", 8, include_identity=True, identity_fraction=0.0)
    _, c = never.make_views(_batch(32, 33), _gen(0))
    assert c.min() >= 1 and c.max() <= 30
    with pytest.raises(ValueError, match="include_identity"):
        build_task("jigsaw_perm", 8, identity_fraction=0.5)


# -- permutation sets ------------------------------------------------------------

@pytest.mark.parametrize("n,bound", [(30, 7), (100, 6)])
def test_shipped_permutation_sets(n, bound):
    path = permutation_file(n)
    assert n in SHIPPED and path.exists(), f"{path} missing: run python -m hpelib.ssl.permutations"
    perms = np.load(path)
    assert perms.shape == (n, 9)
    assert (np.sort(perms, 1) == np.arange(9)).all()  # each row is a permutation of 0..8
    assert len({tuple(p) for p in perms}) == n  # all distinct
    d = hamming_matrix(perms)
    off = d[~np.eye(n, dtype=bool)]
    assert off.min() >= bound
    assert (perms != np.arange(9)).sum(1).min() >= bound  # far from the unshuffled image too
    assert np.array_equal(perms, greedy_max_hamming(n, seed=0))  # the file is what the function makes


def test_greedy_max_hamming_is_seeded_and_valid():
    a, b = greedy_max_hamming(12, seed=1), greedy_max_hamming(12, seed=1)
    assert np.array_equal(a, b)
    d = hamming_matrix(a)
    assert d[~np.eye(12, dtype=bool)].min() >= 8
    with pytest.raises(ValueError):
        greedy_max_hamming(0)


# -- SimCLR -----------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 5])
def test_nt_xent_identical_embeddings_is_log_2n_minus_1(n):
    z = torch.ones(n, 7)
    assert math.isclose(nt_xent(z, z.clone(), 0.5).item(), math.log(2 * n - 1), rel_tol=1e-5)


def test_nt_xent_hand_computed_case():
    # two pairs of orthogonal unit vectors, tau = 1: each view has its positive at similarity 1 and two
    # negatives at similarity 0 -> loss = -log(e / (e + 2)) = log(e + 2) - 1
    z = torch.eye(2)
    assert math.isclose(nt_xent(z, z.clone(), 1.0).item(), math.log(math.e + 2) - 1, rel_tol=1e-6)
    # temperature 0.5 scales similarities by 2 -> log(e^2 + 2) - 2; a pair of swapped views does worse
    assert math.isclose(nt_xent(z, z.clone(), 0.5).item(), math.log(math.e ** 2 + 2) - 2, rel_tol=1e-6)
    assert nt_xent(z, z.flip(0), 0.5) > nt_xent(z, z.clone(), 0.5)
    # scale invariance (embeddings are L2-normalized)
    assert math.isclose(nt_xent(3 * z, 0.5 * z, 1.0).item(), math.log(math.e + 2) - 1, rel_tol=1e-6)


# -- Barlow Twins ----------------------------------------------------------------

_Z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # standardized, uncorrelated columns


def test_barlow_perfectly_correlated_decorrelated_views_give_zero():
    assert barlow_twins_loss(_Z, _Z.clone(), lambd=5e-3).item() == pytest.approx(0.0, abs=1e-4)
    # invariant to per-dimension affine changes (standardization over the batch)
    assert barlow_twins_loss(3 * _Z + 1, _Z * 0.5 - 2, lambd=5e-3).item() == pytest.approx(0.0, abs=1e-4)


def test_barlow_hand_computed_cases():
    eps_scale = 1 / (1 + 1e-5)  # standardization divides by sqrt(var + eps) with var = 1
    # anti-correlated: C = -I -> sum (1 - (-1))^2 = 4 per dimension
    assert barlow_twins_loss(_Z, -_Z, lambd=5e-3).item() == pytest.approx(2 * (1 + eps_scale) ** 2, rel=1e-5)
    # swapped dimensions: C = [[0, 1], [1, 0]] -> 2 * 1 + lambda * 2
    lam = 0.25
    expected = 2 * 1.0 + lam * 2 * eps_scale ** 2
    assert barlow_twins_loss(_Z, _Z[:, [1, 0]], lambd=lam).item() == pytest.approx(expected, rel=1e-5)
    # one dimension of z2 half-correlated: column (1,1,-1,-1) vs (1,1,1,-1)
    z2 = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    a, b = _Z, z2
    an = (a - a.mean(0)) / a.std(0, unbiased=False)
    bn = (b - b.mean(0)) / b.std(0, unbiased=False)
    c = an.t() @ bn / 4
    manual = ((1 - c.diagonal()) ** 2).sum() + lam * (c ** 2).sum() - lam * (c.diagonal() ** 2).sum()
    assert barlow_twins_loss(a, b, lambd=lam).item() == pytest.approx(manual.item(), rel=1e-4)


# -- augmentations -------------------------------------------------------------------

def _no_color(**kw):
    return AugmentConfig(jitter_prob=0.0, grayscale_prob=0.0, **kw)


def test_augment_identity_flip_and_determinism():
    x = _batch(3, 24).clamp(-1.5, 1.5)
    fixed = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    assert torch.allclose(augment(x, _gen(0), _no_color(**fixed)), x, atol=1e-5)  # defaults: no flip/rotation
    assert torch.allclose(augment(x, _gen(0), _no_color(flip_prob=1.0, **fixed)), x.flip(3), atol=1e-5)
    rot = augment(x, _gen(0), _no_color(max_rotation=30.0, **fixed))
    assert not torch.allclose(rot, x, atol=1e-3)
    cfg = AugmentConfig(blur_prob=0.5)
    a, b = augment(x, _gen(5), cfg), augment(x, _gen(5), cfg)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, augment(x, _gen(6), cfg))


def test_augment_colour_stays_in_image_range_and_grayscale_is_gray():
    from hpelib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = _batch(4, 20)
    out = augment(x, _gen(0), AugmentConfig(grayscale_prob=1.0)) * std + mean
    assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="RGB"):
        augment(torch.zeros(2, 1, 8, 8))


def test_contrastive_views_are_two_different_augmentations():
    x = _batch(3, 32)
    for name in ("simclr", "barlow"):
        views, targets = build_task(name, 8).make_views(x, _gen(0))
        assert torch.equal(targets, torch.tensor([0, 1, 2, 0, 1, 2]))
        assert not torch.allclose(views[:3], views[3:])
