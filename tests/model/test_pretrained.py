"""Starting points: timm weights through a local Hugging Face cache (no network), the offline error, the freezing
rules of the original recipe, and published COCO detectors fetched from file:// URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision.ops.misc import FrozenBatchNorm2d
from typer.testing import CliRunner

import fcos_cli
from fcos_cli import zoo
from fcos_cli.atomic import sha256
from fcos_cli.cli import app
from fcos_cli.config import preset
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.errors import UserError
from fcos_cli.model import build_model
from fcos_cli.model.backbone import Backbone
from fcos_cli.pipeline import loss_for

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAG = "test_resnet.r160_in1k"  # timm's default pretrained tag of test_resnet, repo timm/test_resnet.r160_in1k


def make_hf_cache(home: Path, name: str = "test_resnet") -> dict[str, torch.Tensor]:
    """`model.safetensors` of timm `name` under its real repo id in a Hugging Face cache at `home` (HF_HOME), laid
    out as huggingface_hub writes it (refs/main -> snapshots/COMMIT/). Values shifted so no init can match."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    torch.manual_seed(3)
    state = {k: (v + 0.25 if v.is_floating_point() else v).contiguous()
             for k, v in timm.create_model(name).state_dict().items()}
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    save_file(state, str(folder / "snapshots" / COMMIT / "model.safetensors"))
    return state


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """In this process: huggingface_hub reads its cache location and offline flag once, at import."""
    state = make_hf_cache(tmp_path / "hf")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return state


def _tiny(backbone: str = "test_resnet", pretrained: bool | None = True):
    cfg = preset("improved")
    m = cfg.model
    m.num_classes, m.fpn.out_channels, m.head.num_groups, m.head.num_convs = 2, 32, 8, 1
    m.backbone.name, m.backbone.pretrained = backbone, pretrained
    cfg.targets.size_ranges = (32, 64, 128, 256)
    return cfg


# ---- timm weights from the hub cache ----------------------------------------------------------------------------


def test_backbone_loads_the_hub_weights_of_the_default_tag(hub_cache, tmp_path):
    backbone = Backbone("test_resnet", pretrained=True)
    loaded = backbone.body.state_dict()
    assert loaded and set(loaded) <= set(hub_cache)
    for key, value in loaded.items():
        assert torch.equal(value, hub_cache[key]), key
    assert backbone.pretrained_tag == TAG
    assert backbone.pretrained_sha256 == sha256(next((tmp_path / "hf").rglob("model.safetensors")))
    total = sum(not k.startswith("fc.") and not k.endswith("num_batches_tracked") for k in hub_cache)
    assert backbone.start == f"pretrained weights {TAG} ({total}/{total} tensors)"


def test_build_model_records_where_the_backbone_started(hub_cache):
    cfg = _tiny()
    build_model(cfg.model)
    bc = cfg.model.backbone
    assert (bc.pretrained_tag, len(bc.pretrained_sha256), bc.freeze_stages, bc.freeze_bn) == (TAG, 64, 1, True)


def test_explicit_tag_and_an_uncached_one(hub_cache):
    assert Backbone(TAG, pretrained=True).pretrained_tag == TAG
    with pytest.raises(UserError) as info:  # another tag of the same model: not in the cache, and offline
        Backbone("test_convnext", pretrained=True)
    text = str(info.value)
    assert "test_convnext.r160_in1k" in text and "--no-pretrained" in text and "HF_ENDPOINT" in text
    assert "--pretrained-file" in text and "\n" not in text


def _frozen_names(body: torch.nn.Module) -> set[str]:
    """Parameters without gradients and every FrozenBatchNorm2d tensor: what training must leave bit-identical."""
    names = {n for n, p in body.named_parameters() if not p.requires_grad}
    for prefix, module in body.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            names |= {f"{prefix}.{n}" for n, _ in module.named_buffers()}
    return names


def _train_cli(tmp_path: Path, hf_home: Path, *extra: str) -> subprocess.CompletedProcess:
    """`fcos train` as a user runs it, on a COCO file (not the demo): pretrained by default, offline."""
    data = tmp_path / "data"
    if not data.exists():
        write_demo_data(data, num_train=2, num_val=1, max_side=64, seed=1)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    argv = [sys.executable, "-m", "fcos_cli", "train", "--data", str(data / "train.json"), "--backbone", "test_resnet",
            "--img-size", "64", "--fpn-channels", "32", "--head-convs", "1", "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--warmup-steps", "0", "--optimizer", "adamw", "--lr", "1e-12",
            "--project", str(tmp_path / "runs"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_cli_trains_from_the_cached_weights_and_says_so(tmp_path):
    state = make_hf_cache(tmp_path / "hf")
    proc = _train_cli(tmp_path, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr
    total = sum(1 for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert f"backbone test_resnet: pretrained weights {TAG} ({total}/{total} tensors)" in proc.stdout
    assert "FrozenBatchNorm2d" in proc.stdout and "frozen: stem, layer1" in proc.stdout
    last = tmp_path / "runs" / "exp" / "last.safetensors"
    with safe_open(str(last), "pt") as f:
        weights = {k.removeprefix("backbone.body."): f.get_tensor(k) for k in f.keys() if k.startswith("backbone.body.")}
    assert len(weights) == total
    frozen = _frozen_names(fcos_cli.load(last)[0].backbone.body)
    assert {"layer1.0.conv1.weight", "bn1.running_var", "layer4.0.bn1.weight"} <= frozen
    assert any(k.startswith("conv1.") for k in frozen)  # the stem
    for key, value in weights.items():
        if key in frozen:
            assert torch.equal(value, state[key]), key  # frozen: bit-identical after training
        else:  # trained at lr 1e-12: equal up to that step
            torch.testing.assert_close(value, state[key], rtol=0, atol=1e-6)
    config = subprocess.run([sys.executable, "-m", "fcos_cli", "config", "-w",
                             str(tmp_path / "runs" / "exp" / "last.safetensors")], capture_output=True, text=True)
    assert f'"pretrained_tag": "{TAG}"' in config.stdout and '"freeze_bn": true' in config.stdout


def test_cli_offline_without_the_cache_is_one_line_and_no_run_folder(tmp_path):
    proc = _train_cli(tmp_path, tmp_path / "empty-hf")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr
    assert all(way in lines[0] for way in (TAG, "HF_ENDPOINT", "--pretrained-file", "--no-pretrained"))
    assert not (tmp_path / "runs").exists()
    scratch = _train_cli(tmp_path, tmp_path / "empty-hf", "--no-pretrained")
    assert scratch.returncode == 0, scratch.stderr
    assert "backbone test_resnet: random init (--no-pretrained)" in scratch.stdout


# ---- freezing: the original recipe from trained weights, everything trains from scratch --------------------------


def _one_step(model: torch.nn.Module, cfg) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                                weight_decay=1e-4)
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0]]), torch.tensor([[10.0, 10.0, 60.0, 30.0]])]
    losses = loss_for(model(images), model.strides, boxes, [torch.tensor([0]), torch.tensor([1])], cfg)
    losses.total.backward()
    optimizer.step()


def test_pretrained_cnn_freezes_batch_norm_stem_and_first_stage(hub_cache):
    torch.manual_seed(0)
    cfg = _tiny()
    model = build_model(cfg.model)
    body = model.backbone.body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) > 0
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    assert {n for n, _ in body.named_parameters() if n.startswith(("conv1.", "layer1."))} <= frozen
    before = {k: v.clone() for k, v in body.state_dict().items()}
    _one_step(model, cfg)
    after = body.state_dict()
    for key in _frozen_names(body):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])  # the rest trains


def test_from_scratch_batch_norm_trains():
    torch.manual_seed(0)
    cfg = _tiny(pretrained=False)
    model = build_model(cfg.model)
    body = model.backbone.body
    assert (cfg.model.backbone.freeze_stages, cfg.model.backbone.freeze_bn) == (-1, False)
    assert all(p.requires_grad for p in body.parameters())
    bn = next(m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    _one_step(model, cfg)
    assert bn.training and not torch.equal(bn.running_mean, mean) and not torch.equal(bn.weight.detach(), weight)


def test_layer_norm_backbone_is_not_frozen_even_when_trained():
    """The recipe is for BatchNorm CNNs: a ConvNeXt (LayerNorm) from trained weights trains whole."""
    backbone = Backbone("test_convnext", freeze_stages=None, freeze_bn=None, trained=True)
    assert (backbone.freeze_stages, backbone.freeze_bn, backbone.frozen) == (-1, False, [])
    assert all(p.requires_grad for p in backbone.parameters())


def test_flags_override_the_recipe(hub_cache):
    cfg = _tiny()
    cfg.model.backbone.freeze_stages, cfg.model.backbone.freeze_bn = -1, False
    body = build_model(cfg.model).backbone.body
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())


# ---- published detectors by name -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> Path:
    """A torchvision FCOS checkpoint named as torchvision names them: `NAME-<sha256 prefix>.pth`."""
    folder = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    path = folder / "fcos.pth"
    torch.save(torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), path)
    return path.rename(folder / f"fcos_resnet50_fpn_coco-{sha256(path)[:8]}.pth")


def _publish(monkeypatch, tmp_path: Path, file: Path) -> str:
    name = "torchvision:fcos_resnet50_fpn_coco"
    monkeypatch.setitem(zoo.DETECTORS, name, zoo.Published("torchvision", file.as_uri(), "auto", 39.2, "R-50"))
    monkeypatch.setenv("FCOS_CLI_CACHE", str(tmp_path / "cache"))
    return name


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (96, 64), (120, 80, 40)).save(tmp_path / "photo.jpg")
    return tmp_path / "photo.jpg"


def test_published_detector_downloads_imports_predicts_and_caches(tmp_path, monkeypatch, torchvision_file):
    name = _publish(monkeypatch, tmp_path, torchvision_file)
    argv = ["predict", str(_image(tmp_path)), "-w", name, "--img-size", "128", "--project", str(tmp_path / "p")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    cached = tmp_path / "cache" / "detectors" / "torchvision__fcos_resnet50_fpn_coco.safetensors"
    assert cached.is_file() and list((tmp_path / "cache" / "downloads").iterdir()) == []
    assert (tmp_path / "p" / "exp" / "predictions.json").is_file()

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    again = CliRunner().invoke(app, [*argv[:-2], "--project", str(tmp_path / "q")])
    assert again.exit_code == 0, again.output
    config = CliRunner().invoke(app, ["config", "-w", name])
    assert '"name": "resnet50"' in config.output


def test_corrupt_download_fails_its_hash_and_leaves_nothing(tmp_path, monkeypatch, torchvision_file):
    bad = tmp_path / torchvision_file.name
    bad.write_bytes(torchvision_file.read_bytes()[: 1 << 20])  # truncated: its name keeps the full file's hash
    name = _publish(monkeypatch, tmp_path, bad)
    result = CliRunner().invoke(app, ["eval", "-w", name])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # after the progress bar
    assert len(errors) == 1 and "corrupt or truncated" in errors[0] and "Traceback" not in result.output
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_unreachable_url_names_the_url_and_the_import_command(tmp_path, monkeypatch):
    name = _publish(monkeypatch, tmp_path, tmp_path / "absent" / "fcos_resnet50_fpn_coco-99b0c9b7.pth")
    result = CliRunner().invoke(app, ["export", "-w", name])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "absent/fcos_resnet50_fpn_coco-99b0c9b7.pth" in result.output
    assert "fcos import-weights fcos_resnet50_fpn_coco-99b0c9b7.pth --from torchvision" in result.output


def test_unknown_detector_name_suggests_the_close_one():
    result = CliRunner().invoke(app, ["predict", ".", "-w", "torchvision:fcos_resnet50_fpn"])
    assert result.exit_code == 2 and "did you mean torchvision:fcos_resnet50_fpn_coco" in result.output
