"""hpelib.models: config, backbones and init, pose heads, the HMTL model's losses."""
import math
import urllib.error

import pytest
import torch

from hpelib.angles import euler_to_matrix, matrix_to_sixd
from hpelib.models import ModelConfig, build_model, load_model
from hpelib.models import backbones as backbones_mod
from hpelib.models.backbones import build_backbone
from hpelib.models.heads import BinnedHead, RegressionHead, SixDHead, geodesic_loss

NARROW = dict(backbone="resnet18-narrow", init="random")


def _data(b=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, s, s, generator=g)
    poses = (torch.rand(b, 3, generator=g) * 2 - 1) * torch.tensor([80.0, 40.0, 30.0])
    return x, poses


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**NARROW, **kw}))


# -- config -----------------------------------------------------------------------

def test_config_round_trip_and_errors():
    d = {**NARROW, "pose_head": "6d", "ssl_tasks": {"rotation": {"weight": 0.5, "mode": "random"}}}
    cfg = ModelConfig.from_dict(d)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.task_weights() == {"rotation": 0.5}
    with pytest.raises(ValueError, match="valid keys.*backbone"):
        ModelConfig.from_dict({"backbone": "resnet18", "lr": 0.1})
    with pytest.raises(ValueError, match="unknown backbone .vgg16.; valid names.*resnet18-narrow"):
        ModelConfig.from_dict({"backbone": "vgg16"})
    with pytest.raises(ValueError, match="unknown pose head .bins.; valid names.*binned"):
        ModelConfig.from_dict({"pose_head": "bins"})
    with pytest.raises(ValueError, match="unknown SSL task .colorization.; valid names.*jigsaw_perm"):
        ModelConfig.from_dict({"ssl_tasks": {"colorization": {}}})
    with pytest.raises(ValueError, match="valid options"):
        ModelConfig.from_dict({"ssl_tasks": {"simclr": {"temp": 0.1}}})
    with pytest.raises(ValueError, match="valid options"):
        build_model({**NARROW, "pose_options": {"bins": 10}})
    with pytest.raises(ValueError, match="nothing to train"):
        ModelConfig.from_dict({"pose_head": None})
    assert ModelConfig.from_dict({"pose_head": "none", "ssl_tasks": ["rotation"]}).pose_head is None


# -- backbones and init ---------------------------------------------------------------

def test_backbone_feature_dims():
    narrow = build_backbone("resnet18-narrow")
    assert narrow.feat_dim == 256 and narrow(torch.randn(2, 3, 40, 40)).shape == (2, 256)
    assert build_backbone("resnet18").feat_dim == 512
    assert build_backbone("resnet50").feat_dim == 2048
    n18 = sum(p.numel() for p in build_backbone("resnet18").parameters())
    assert sum(p.numel() for p in narrow.parameters()) < n18 / 3


@pytest.mark.parametrize("size", [32, 48, 64, 224])
def test_stems_keep_the_resolution_they_promise(size):
    """The ImageNet stem divides the input by 4 before layer1, the CIFAR stem keeps it; both end pooled."""
    x = torch.randn(2, 3, size, size)
    for stem, factor in (("imagenet", 4), ("cifar", 1)):
        net = build_backbone("resnet18-narrow", stem=stem).eval()
        stem_out = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        assert stem_out.shape[-1] == size // factor, stem
        assert net.layer4(net.layer3(net.layer2(net.layer1(stem_out)))).shape[-1] == math.ceil(size / factor / 8)
        assert net(x).shape == (2, 256)
    cifar = build_backbone("resnet18", stem="cifar")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)


def test_stem_is_saved_checked_and_loaded(tmp_path):
    m = _model(seed=4, stem="cifar").eval()
    path = tmp_path / "cifar.pt"
    torch.save({"model_config": m.config.to_dict(), "model": m.state_dict(), "epoch": 1}, path)
    again = load_model(path).eval()
    assert again.config.stem == "cifar" and again.backbone.conv1.stride == (1, 1)
    x, _ = _data(s=32)
    assert torch.equal(again.predict(x), m.predict(x))
    dst = _model(seed=5, stem="cifar", init=str(path))  # fine-tuning from a CIFAR-stem checkpoint
    assert torch.equal(dst.backbone.conv1.weight, m.backbone.conv1.weight)
    with pytest.raises(ValueError, match=r"cifar\.pt.*stem 'cifar'.*stem 'imagenet'"):
        _model(init=str(path))
    with pytest.raises(ValueError, match="stem must be one of .*cifar"):
        ModelConfig.from_dict({**NARROW, "stem": "tiny"})
    with pytest.raises(ValueError, match="needs stem='imagenet'"):
        ModelConfig.from_dict({"backbone": "resnet18", "init": "imagenet", "stem": "cifar"})
    old = {k: v for k, v in m.config.to_dict().items() if k != "stem"}  # checkpoints written before the option
    assert ModelConfig.from_dict(old).stem == "imagenet"


def test_imagenet_init_offline_gives_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(backbones_mod, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"(?s)network.*checkpoints.*init='random'"):
        build_model({"backbone": "resnet18", "init": "imagenet"})
    with pytest.raises(ValueError, match="not available.*resnet18-narrow"):
        build_model({"backbone": "resnet18-narrow", "init": "imagenet"})


def test_imagenet_init_loads_the_weights_it_gets(monkeypatch):
    torch.manual_seed(1)
    reference = torch.hub.load_state_dict_from_url  # never called: replaced below
    ref = {k: torch.randn_like(v) if v.is_floating_point() else v
           for k, v in __import__("torchvision").models.resnet18().state_dict().items()}
    monkeypatch.setattr(backbones_mod, "load_state_dict_from_url", lambda *a, **k: ref)
    m = build_model({"backbone": "resnet18", "init": "imagenet", "pose_head": "regression"})
    assert torch.equal(m.backbone.conv1.weight, ref["conv1.weight"])
    assert reference is torch.hub.load_state_dict_from_url


def test_checkpoint_init_loads_backbone_weights(tmp_path):
    src = _model(seed=1, pose_head=None, ssl_tasks={"rotation": {}})
    path = tmp_path / "pre.pt"
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # as saved from a DDP wrapper
    torch.save({"model_config": src.config.to_dict(), "model": state, "epoch": 3}, path)
    dst = _model(seed=2, init=str(path), pose_head="binned")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        _model(init=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match=r"pre\.pt.*resnet18-narrow"):
        build_model({"backbone": "resnet18", "init": str(path)})
    bad = tmp_path / "bad.pt"
    torch.save({"model_config": {"backbone": "resnet18-narrow"}, "model": {"backbone.conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        _model(init=str(bad))


def test_load_model_round_trip(tmp_path):
    m = _model(seed=3, pose_head="6d", ssl_tasks={"jigsaw": {"weight": 0.1}}).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model_config": m.config.to_dict(), "model": m.state_dict(), "epoch": 1}, path)
    again = load_model(path).eval()
    x, _ = _data()
    assert torch.equal(again.predict(x), m.predict(x))


# -- pose heads ------------------------------------------------------------------------

def test_binned_expected_value_of_peaked_logits_is_the_bin_centre():
    head = BinnedHead(8)
    poses = torch.tensor([[-97.5, 0.0 + 1.5, 97.5], [31.5, -43.5, 4.5]])  # bin centres
    idx = head.bin_index(poses)
    logits = torch.full((2, 3, 66), -1e4).scatter(2, idx.unsqueeze(-1), 50.0)
    assert torch.allclose(head.predict(logits), poses, atol=1e-4)
    # the loss of a perfect one-hot prediction is ~0
    assert head.loss(logits, poses).item() == pytest.approx(0.0, abs=1e-3)
    # out-of-range labels are clamped into the first/last bin and do not crash
    far = torch.tensor([[150.0, -180.0, 99.0]])
    assert head.bin_index(far).tolist() == [[65, 0, 65]]
    assert torch.isfinite(head.loss(torch.randn(1, 3, 66), far))


def test_binned_loss_is_hopenet_ce_plus_alpha_mse_summed_over_angles():
    head = BinnedHead(8, alpha=0.5)
    logits, poses = torch.randn(5, 3, 66), torch.rand(5, 3) * 100 - 50
    ce = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1), head.bin_index(poses))  # mean over all
    mse = ((head.expected(logits) - poses) ** 2).mean()
    assert head.loss(logits, poses).item() == pytest.approx(3 * (ce + 0.5 * mse).item(), rel=1e-5)


def test_regression_head_losses():
    out, poses = torch.randn(4, 3) * 20, torch.randn(4, 3) * 20
    assert RegressionHead(8).loss(out, poses).item() == pytest.approx((out - poses).abs().mean().item(), rel=1e-6)
    assert RegressionHead(8, loss="mse").loss(out, poses).item() == pytest.approx(((out - poses) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="l1"):
        RegressionHead(8, loss="huber")


def test_sixd_head_round_trip():
    head = SixDHead(4)
    pose = torch.tensor([[35.0, -20.0, 10.0]])
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.copy_(matrix_to_sixd(euler_to_matrix(pose))[0])
    mats = head(torch.randn(3, 4))
    assert torch.allclose(head.predict(mats), pose.expand(3, 3), atol=1e-4)
    assert head.loss(mats, pose.expand(3, 3)).item() == pytest.approx(0.0, abs=1e-3)
    other = euler_to_matrix(torch.tensor([[35.0, -20.0, 40.0]]))  # 30 degrees of roll away
    assert geodesic_loss(mats[:1], other).item() == pytest.approx(math.radians(30), rel=1e-3)


@pytest.mark.parametrize("head", ["binned", "regression", "6d"])
def test_each_head_overfits_a_tiny_batch(head):
    m = _model(seed=0, pose_head=head).train()
    x, poses = _data(4, 32)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(12):
        loss = m.losses(x, poses)["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.losses(x, poses)["total"].item() < 0.7 * first
    m.eval()
    pred = m.predict(x)
    assert pred.shape == (4, 3) and pred.dtype == torch.float32 and not pred.requires_grad
    limit = {"binned": 97.5, "regression": 1e4, "6d": 180.0}[head]
    assert pred.abs().max() <= limit + 1e-4
    if head == "6d":
        assert pred[:, 0].abs().max() <= 90.0 + 1e-4


# -- HMTL ---------------------------------------------------------------------------------

def test_pose_loss_ignores_unlabelled_samples():
    m = _model(seed=0, pose_head="binned", ssl_tasks={"rotation": {"weight": 1.0}}).train()
    x, poses = _data(6, 32)
    poses[[1, 4]] = float("nan")
    mixed = m.losses(x, poses, torch.Generator().manual_seed(0))
    keep = [0, 2, 3, 5]
    only = m.losses(x[keep], poses[keep], torch.Generator().manual_seed(0))
    assert torch.allclose(mixed["pose"], only["pose"], rtol=1e-5)
    assert set(mixed) == {"pose", "rotation", "total"}
    assert torch.allclose(mixed["total"], mixed["pose"] + mixed["rotation"])


def test_zero_ssl_weights_give_the_pose_only_loss():
    pose_only = _model(seed=5, pose_head="6d").train()
    hmtl = _model(seed=9, pose_head="6d", ssl_tasks={"rotation": {"weight": 0.0}, "jigsaw": {"weight": 0.0}}).train()
    missing, unexpected = hmtl.load_state_dict(pose_only.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("ssl.") for k in missing)
    x, poses = _data(4, 32)
    a = pose_only.losses(x, poses)
    b = hmtl.losses(x, poses, torch.Generator().manual_seed(0))
    assert torch.allclose(a["total"], b["total"], rtol=1e-5) and torch.allclose(a["pose"], b["pose"], rtol=1e-5)
    assert b["rotation"] > 0 and b["jigsaw"] > 0


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _train_three_steps(model, x, poses):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        loss = model.losses(x, poses, gen)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_ssl_weight_zero_trains_exactly_the_pose_only_model():
    """Same init, same batches: weights, BatchNorm running statistics and eval predictions bit-identical."""
    x, poses = _data(8, 32)
    pose_only = _train_three_steps(_model(seed=4).train(), x, poses)
    hmtl = _train_three_steps(_model(seed=4, ssl_tasks={"rotation": {"weight": 0.0}}).train(), x, poses)
    a, b = pose_only.state_dict(), hmtl.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(pose_only.predict(x), hmtl.predict(x))


def test_ssl_views_leave_running_batchnorm_statistics_alone(monkeypatch):
    """With a pose head only the clean pose batch moves the running statistics; the old behaviour (views
    normalised in plain train mode) moves them, so this check can fail."""
    from hpelib.models import hmtl as hmtl_mod

    x, poses = _data(8, 32)
    pose_only = _model(seed=1).train()
    pose_only.losses(x, poses)
    hmtl = _model(seed=1, ssl_tasks={"rotation": {"weight": 1.0}, "simclr": {"weight": 1.0}}).train()
    hmtl.losses(x, poses, torch.Generator().manual_seed(0))
    want, got = _bn_buffers(pose_only), _bn_buffers(hmtl)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert all(m.track_running_stats for m in hmtl.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # the old behaviour, for contrast
    monkeypatch.setattr(hmtl_mod, "batch_statistics_only", lambda module: hmtl_mod.nullcontext())
    old = _model(seed=1, ssl_tasks={"rotation": {"weight": 1.0}, "simclr": {"weight": 1.0}}).train()
    old.losses(x, poses, torch.Generator().manual_seed(0))
    moved = _bn_buffers(old)
    assert not torch.equal(moved["layer4.1.bn2.running_var"], want["layer4.1.bn2.running_var"])


def test_pretraining_views_do_update_running_statistics():
    """Without a pose head the views are the model's only inputs: they update the running statistics."""
    m = _model(seed=2, pose_head=None, ssl_tasks={"rotation": {"weight": 1.0}}).train()
    before = _bn_buffers(m)
    m.losses(_data(4, 32)[0], None, torch.Generator().manual_seed(0))
    after = _bn_buffers(m)
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert int(after["bn1.num_batches_tracked"]) == 1


def test_backbone_gradient_norms_measure_each_unweighted_loss():
    from hpelib.models import backbone_gradient_norms

    x, poses = _data(4, 32)
    hmtl = _model(seed=6, ssl_tasks={"rotation": {"weight": 0.25}}).train()
    norms = backbone_gradient_norms(hmtl, x, poses, torch.Generator().manual_seed(0))
    assert set(norms) == {"pose", "rotation"} and all(p.grad is None for p in hmtl.parameters())
    # the pose norm is that of the pose-only model's backbone gradient (same weights, same batch)
    pose_only = _model(seed=6).train()
    pose_only.load_state_dict(hmtl.state_dict(), strict=False)
    pose_only.losses(x, poses)["pose"].backward()
    want = torch.sqrt(sum((p.grad ** 2).sum() for p in pose_only.backbone.parameters()))
    assert norms["pose"] == pytest.approx(float(want), rel=1e-4)
    # a larger MSE weight in the binned head pulls harder: the ratio of an SSL task falls
    heavy = _model(seed=6, pose_options={"alpha": 10.0}, ssl_tasks={"rotation": {"weight": 0.25}}).train()
    heavy_norms = backbone_gradient_norms(heavy, x, poses, torch.Generator().manual_seed(0))
    assert heavy_norms["rotation"] == pytest.approx(norms["rotation"], rel=1e-4)
    assert heavy_norms["pose"] > 2 * norms["pose"]


def test_gradients_reach_every_ssl_head_and_unlabelled_batches_work():
    tasks = {name: {"weight": 0.5} for name in ("rotation", "jigsaw", "jigsaw_perm", "simclr", "barlow")}
    m = _model(seed=0, pose_head="binned", ssl_tasks=tasks).train()
    x, _ = _data(4, 32)
    nan = torch.full((4, 3), float("nan"))
    out = m.losses(x.contiguous(memory_format=torch.channels_last), nan, torch.Generator().manual_seed(1))
    assert out["pose"].item() == 0.0 and out["pose"].dim() == 0
    out["total"].backward()
    for name in tasks:
        grads = [p.grad for p in m.ssl[name].parameters() if p.dim() > 1]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in m.pose_head.parameters())
    assert m.backbone.conv1.weight.grad.abs().sum() > 0
    # poses=None is the same as all-unlabelled; a pose-only model still backpropagates a zero
    pose_only = _model(pose_head="regression")
    z = pose_only.losses(x, None)
    assert z["total"].item() == 0.0
    z["total"].backward()


def test_ssl_pretraining_model_losses_decrease():
    m = _model(seed=0, pose_head=None, ssl_tasks={"rotation": {}, "jigsaw_perm": {"weight": 0.5}}).train()
    x, _ = _data(4, 32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        out = m.losses(x, None, torch.Generator().manual_seed(0))  # fixed views: an overfitting check
        assert "pose" not in out
        losses.append(out["total"].item())
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(RuntimeError, match="no pose head"):
        m.predict(x)


def test_forward_dispatch_and_views_are_deterministic():
    m = _model(seed=0, pose_head="regression", ssl_tasks={"simclr": {}}).train()
    x, poses = _data(4, 32)
    a = m(x, poses, torch.Generator().manual_seed(7))
    b = m.losses(x, poses, torch.Generator().manual_seed(7))
    assert torch.allclose(a["simclr"], b["simclr"]) and torch.allclose(a["total"], b["total"])
    assert m(x).shape == (4, 3) and m(x).requires_grad


class _NotATensor:
    pass


def test_checkpoint_files_are_read_without_running_pickled_code(tmp_path):
    from hpelib.models.files import plain_state_dict, read_checkpoint

    bad = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": {}, "payload": _NotATensor()}, bad)
    with pytest.raises(ValueError, match="evil.pt.*weights_only"):
        read_checkpoint(bad)
    with pytest.raises(ValueError, match="init checkpoint .*evil.pt"):
        build_model(ModelConfig(backbone="resnet18-narrow", init=str(bad)))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    assert plain_state_dict({"module._orig_mod.backbone.w": 1, "pose_head.b": 2}) == {"backbone.w": 1, "pose_head.b": 2}


EXPECTED_CHECKPOINT = ("expected an hpelib model.pt or checkpoint.pt written by hpelib "
                       "(torch.save of a dict with model_config and model)")


def _unreadable_message(path) -> str:
    from hpelib.models.files import read_checkpoint

    with pytest.raises(ValueError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and EXPECTED_CHECKPOINT in msg
    assert "file an issue" not in msg and "Weights only load failed" not in msg and "\n" not in msg
    err = info.value  # PyTorch's own long text is not chained into the traceback either
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return msg


def test_unreadable_checkpoint_files_get_one_clear_message(tmp_path):
    good = tmp_path / "model.pt"
    torch.save({"model_config": {}, "model": {"w": torch.ones(1000)}}, good)
    data = good.read_bytes()

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "empty.pt (0 bytes) is empty;" in _unreadable_message(empty)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 20)
    assert "(340 bytes) is not a PyTorch zip file" in _unreadable_message(garbage)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    msg = _unreadable_message(truncated)
    assert "truncated.pt (2.7 KiB) is truncated" in msg and "copy it again or train again" in msg

    evil = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": {}, "payload": _NotATensor()}, evil)
    msg = _unreadable_message(evil)
    assert "holds a pickled Python object (test_models._NotATensor)" in msg and "weights_only=True" in msg

    plain = tmp_path / "state_dict.pt"
    torch.save({"conv.weight": torch.ones(2)}, plain)
    msg = _unreadable_message(plain)
    assert "is a dict with keys ['conv.weight']" in msg and "'model_config'" in msg
