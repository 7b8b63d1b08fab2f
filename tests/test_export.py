"""ONNX export: onnxruntime gives PyTorch's detections on demo images at two sizes, and the export's own check
fails a wrong graph; fp16 safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.config import PRESETS, preset
from fcos_cli.data.dataset import read_image
from fcos_cli.data.synthetic import demo_scene
from fcos_cli.data.transforms import build_transform
from fcos_cli.engine.predict import OnnxDetector
from fcos_cli.errors import UserError
from fcos_cli.export import check_onnx, export_onnx
from fcos_cli.model import build_model
from fcos_cli.pipeline import detections_for


def test_onnx_equals_pytorch_on_demo_images(overfit, tmp_path: Path) -> None:
    result, root = overfit
    out = tmp_path / "model.onnx"
    run = CliRunner().invoke(app, ["export", "-w", str(result.best), "--output", str(out), "--check-images",
                                   str(root / "images")])
    assert run.exit_code == 0, run.output
    compared = re.search(r"on (\d+) images from .* (\d+) detections with score >= 0.25 compared", run.output)
    assert compared and int(compared[1]) == 4 and int(compared[2]) >= 10, run.output
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "fcos_cli.config" in metadata and "ellipse" in metadata["fcos_cli.class_names"]
    model, cfg, _ = checkpoint.load(result.best)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = sorted((root / "images").glob("*.jpg"))  # the demo's train and val images
    checked = 0
    for size in (256, 200):  # two input sizes, neither the export's sample size for 200
        for path in images:
            pixels = build_transform(size, train=False)(image=read_image(path), bboxes=np.zeros((0, 4)), labels=[])["image"]
            image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                ref = detections_for(model(image), model.strides, [tuple(image.shape[-2:])], cfg)[0]
            boxes, scores, labels = session.run(None, {"images": image.numpy()})
            assert len(ref["boxes"]) >= 10
            assert labels.tolist() == ref["labels"].tolist()
            np.testing.assert_allclose(boxes, ref["boxes"].numpy(), rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(scores, ref["scores"].numpy(), rtol=0, atol=1e-4)
            checked += 1
    assert checked == 2 * len(images)


def test_half_safetensors_export_loads(overfit, tmp_path: Path) -> None:
    result, _ = overfit
    out = tmp_path / "half.safetensors"
    run = CliRunner().invoke(app, ["export", "-w", str(result.best), "--format", "safetensors", "--half",
                                   "--output", str(out)])
    assert run.exit_code == 0, run.output
    assert out.stat().st_size < 0.6 * result.best.stat().st_size
    model, _, _ = checkpoint.load(out)
    reference, _, _ = checkpoint.load(result.best)
    image = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(image).cls_logits[0], reference(image).cls_logits[0], atol=0.05, rtol=0.05)


def test_predict_with_the_onnx_file_matches_the_weights(overfit, tmp_path: Path) -> None:
    """`fcos predict` with the ONNX file gives the weights' detections, with the defaults and with --conf below the
    stored gate, --iou, --max-det and --img-size (NMS settings are graph inputs; the resize happens outside)."""
    import json

    result, root = overfit
    onnx_path = tmp_path / "m.onnx"
    runner = CliRunner()
    assert runner.invoke(app, ["export", "-w", str(result.best), "--output", str(onnx_path), "--check-images",
                               str(root / "images")]).exit_code == 0
    source = str(root / "images" / "train_*.jpg")
    for i, options in enumerate((["--conf", "0.2"],
                                 ["--conf", "0.01", "--iou", "0.3", "--max-det", "7", "--img-size", "192"])):
        outputs = {}
        for name, weights in ((f"torch{i}", result.best), (f"onnx{i}", onnx_path)):
            # Batch 1 in both: a batch pads smaller images to the largest, which shifts border features a little.
            # --fp32: the ONNX graph is float32, while `fcos predict` defaults to bf16 on CPUs that have it.
            precision = ["--fp32"] if name.startswith("torch") else []
            run = runner.invoke(app, ["predict", source, "-w", str(weights), *options, "--no-save-images",
                                      "--batch-size", "1", "--project", str(tmp_path), "--name", name, *precision])
            assert run.exit_code == 0 and run.stderr == "", run.output
            outputs[name[:-1]] = json.loads((tmp_path / name / "predictions.json").read_text())
        assert len(outputs["onnx"]) == len(outputs["torch"]) >= 4
        for a, b in zip(outputs["onnx"], outputs["torch"], strict=True):
            assert (a["file_name"], a["category_id"]) == (b["file_name"], b["category_id"])
            np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.02)
            assert abs(a["score"] - b["score"]) < 1e-4
    per_image = {}
    for p in outputs["onnx"]:
        per_image[p["file_name"]] = per_image.get(p["file_name"], 0) + 1
    assert max(per_image.values()) == 7
    detector = OnnxDetector(onnx_path)  # each setting reaches the graph: a gate below the stored 0.05, the IoU
    image = read_image(sorted((root / "images").glob("train_*.jpg"))[0])
    post = detector.cfg.post
    post.max_detections, found = 5000, {}
    for gate, iou in ((post.score_thresh, post.nms_iou), (0.01, post.nms_iou), (0.01, 0.3)):
        post.score_thresh, post.nms_iou = gate, iou
        found[gate, iou] = len(detector([image])[0]["scores"])
    stored, lower_gate, lower_iou = found.values()
    assert 7 < stored < lower_gate and lower_iou < lower_gate, found


def test_onnx_metadata_carries_the_short_long_resize(overfit, tmp_path: Path) -> None:
    """An ONNX file of weights with max_size resizes as the weights do: short side, capped long side."""
    from fcos_cli.engine.predict import predict

    result, _ = overfit
    model, cfg, names = checkpoint.load(result.best)
    cfg.data.img_size, cfg.data.max_size = 160, 200
    export_onnx(model, cfg, names, tmp_path / "m.onnx", torch.rand(1, 3, 160, 192))
    seen = []
    detector = OnnxDetector(tmp_path / "m.onnx")

    class Recording:  # the session, recording the size of what it is given
        def run(self, outputs, feeds, session=detector.session):
            seen.append(feeds["images"].shape[-2:])
            return session.run(outputs, feeds)

    detector.session = Recording()
    image = np.random.default_rng(0).integers(0, 256, (120, 300, 3), dtype=np.uint8)
    ours = detector([image])[0]
    assert seen == [(80, 200)]  # short side 160 would make it 400 wide: the 200 cap wins
    reference = predict(model, cfg, [image])[0]
    assert len(ours["boxes"]) == len(reference["boxes"])
    torch.testing.assert_close(ours["boxes"], reference["boxes"], atol=0.05, rtol=1e-3)


def test_check_fails_a_graph_with_one_perturbed_weight(overfit, tmp_path: Path) -> None:
    result, root = overfit
    model, cfg, names = checkpoint.load(result.best)
    export_onnx(model, cfg, names, tmp_path / "m.onnx", torch.rand(1, 3, 256, 256))
    images = [read_image(p) for p in sorted((root / "images").glob("*.jpg"))[:2]]
    assert check_onnx(tmp_path / "m.onnx", model, cfg, images, 0.25).num_detections >= 10
    proto = onnx.load(str(tmp_path / "m.onnx"))
    weights = [w for w in proto.graph.initializer if w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 4]
    largest = max(weights, key=lambda w: np.prod(w.dims))  # a conv kernel
    kernel = onnx.numpy_helper.to_array(largest)
    perturbed = kernel + np.random.default_rng(0).normal(0, 0.1 * kernel.std(), kernel.shape)  # noise: no norm undoes it
    largest.CopyFrom(onnx.numpy_helper.from_array(perturbed.astype(np.float32), largest.name))
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(UserError, match="onnxruntime disagrees with PyTorch"):
        check_onnx(tmp_path / "broken.onnx", model, cfg, images, 0.25)


@pytest.mark.parametrize("preset_name", list(PRESETS))
def test_check_passes_every_preset(preset_name: str, tmp_path: Path) -> None:
    """An untrained model of each preset (its own score rule, gate, box scaling and point grid) on a generated demo
    scene at another size than the trace's, --conf 0 (gate 0): about a hundred detections compared."""
    cfg = preset(preset_name)
    m = cfg.model
    m.backbone.name, m.backbone.pretrained, m.fpn.out_channels, m.head.num_groups, m.head.num_convs = \
        "test_resnet", False, 32, 8, 1
    m.num_classes, cfg.data.img_size, cfg.post.score_thresh = 3, 160, 0.0
    torch.manual_seed(0)
    model = build_model(m).eval()
    export_onnx(model, cfg, ["a", "b", "c"], tmp_path / "m.onnx", torch.rand(1, 3, 160, 160))
    check = check_onnx(tmp_path / "m.onnx", model, cfg, [np.asarray(demo_scene(1, 200))], conf=0.0)
    assert check.num_detections >= 10 and check.raw < 1e-4 and check.box < 0.05 and check.score < 1e-4


def test_export_refuses_half_onnx_and_a_check_on_nothing(overfit, tmp_path: Path) -> None:
    result, root = overfit
    runner = CliRunner()
    run = runner.invoke(app, ["export", "-w", str(result.best), "--half", "--output", str(tmp_path / "m.onnx")])
    assert run.exit_code == 2 and "--half" in run.stderr and "--format safetensors" in run.stderr
    assert not (tmp_path / "m.onnx").exists()
    blank = tmp_path / "blank"
    blank.mkdir()
    from PIL import Image

    Image.new("RGB", (120, 90), (128, 128, 128)).save(blank / "grey.png")
    run = runner.invoke(app, ["export", "-w", str(result.best), "--output", str(tmp_path / "m.onnx"),
                              "--check-images", str(blank), "--conf", "0.9"])  # nothing on grey scores that
    assert run.exit_code == 2 and "compared none" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()  # removed: it was never proven
