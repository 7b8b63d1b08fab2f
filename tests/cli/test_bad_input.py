"""Bad input through the CLI: every user mistake is one line on stderr and exit code 2, no traceback.

Each case builds its bad input on the fly in tmp_path (tiny PNGs, a 2-image COCO file, a YOLO yaml, weights of
a test_resnet detector trained for one step) and checks the exit code, that stderr is exactly one line naming
the file or option with a word specific to the case, and that no traceback leaks. Mistakes the user obviously
wants skipped (a missing image among many, a box outside the image) are a warning with counts instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from fcos_cli.cli import app

runner = CliRunner()
TINY = ["--no-pretrained", "--backbone", "test_resnet", "--img-size", "64", "--fpn-channels", "32", "--head-convs", "1",
        "--batch-size", "2", "--workers", "0", "--optimizer", "adamw", "--warmup-steps", "0"]
SIZE = (64, 48)  # (W, H) of each test image


# ---------------------------------------------------------------- inputs, written on the fly


def write_coco(root: Path, mutate: Callable[[dict], object] | None = None, name: str = "train.json",
               classes: tuple[str, ...] = ("cat",)) -> Path:
    """root/images/{a,b}.png and a COCO file with one box on each; `mutate` edits the dict before writing."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, stem in enumerate("ab"):
        if not (root / "images" / f"{stem}.png").exists():
            Image.new("RGB", SIZE, (40 + 80 * i, 90, 160)).save(root / "images" / f"{stem}.png")
        images.append({"id": i + 1, "file_name": f"{stem}.png", "width": SIZE[0], "height": SIZE[1]})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 6, 30, 24], "iscrowd": 0})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
    if mutate is not None:
        mutate(data)
    path = root / name
    path.write_text(json.dumps(data))
    return path


def write_yolo(root: Path, yaml_text: str = "path: .\ntrain: images\nval: images\nnames: [cat]\n",
               label: str = "0 0.5 0.5 0.4 0.4\n") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, (90, 90, 90)).save(root / "images" / "a.png")
    (root / "labels" / "a.txt").write_text(label)
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def _truncate(path: Path, keep: int = 120) -> None:
    """A PNG whose header is intact but whose pixels stop early: only decoding finds out."""
    big = Image.effect_noise(SIZE, 60).convert("RGB")
    big.save(path)
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real run folder from one training step on two tiny images: last/best.safetensors and their state."""
    root = tmp_path_factory.mktemp("run")
    data = write_coco(root / "data")
    result = runner.invoke(app, ["train", "--data", str(data), "--val-data", str(data), *TINY, "--epochs", "1",
                                 "--project", str(root / "runs"), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    return root / "runs" / "tiny"


def _with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    with safe_open(str(src), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    save_file(tensors, str(dst), metadata={**metadata, **changes})
    return dst


# ------------------------------------------------------------------- the matrix of mistakes
# Each case: (id, setup(tmp, run) -> argv with {placeholders} resolved, words that the one line must contain).


def _data(mutate=None, **kw):
    return lambda tmp, run: ["inspect-targets", "--data", str(write_coco(tmp, mutate, **kw)), "--no-draw"]


def _raw_data(text: str | bytes, suffix: str = ".json"):
    def setup(tmp: Path, run: Path) -> list[str]:
        path = tmp / f"ann{suffix}"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["inspect-targets", "--data", str(path), "--no-draw"]
    return setup


def _yolo(**kw):
    return lambda tmp, run: ["inspect-targets", "--data", str(write_yolo(tmp, **kw)), "--no-draw"]


def _yolo_train(**kw):  # train opens the val split too
    return lambda tmp, run: ["train", "--data", str(write_yolo(tmp, **kw)), *TINY]


VOC_XML = ("<annotation><filename>a.jpg</filename><object><name>cat</name><difficult>0</difficult>"
           "<bndbox><xmin>9</xmin><ymin>7</ymin><xmax>38</xmax><ymax>30</ymax></bndbox></object></annotation>")


def _voc(xml: str = VOC_XML, listed: str = "a\n", command: str = "inspect-targets"):
    """A VOC root: JPEGImages/a.jpg, Annotations/a.xml, ImageSets/Main/train.txt (no val.txt)."""
    def setup(tmp: Path, run: Path) -> list[str]:
        for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZE, (90, 90, 90)).save(tmp / "JPEGImages" / "a.jpg")
        (tmp / "Annotations" / "a.xml").write_text(xml)
        (tmp / "ImageSets" / "Main" / "train.txt").write_text(listed)
        return [command, "--data", str(tmp), *(["--no-draw"] if command == "inspect-targets" else TINY)]
    return setup


def _yolo_without_images(tmp: Path, run: Path) -> list[str]:
    path = write_yolo(tmp)
    (tmp / "images" / "a.png").unlink()
    return ["inspect-targets", "--data", str(path), "--no-draw"]


def _all_missing(tmp: Path, run: Path) -> list[str]:
    path = write_coco(tmp)
    shutil.rmtree(tmp / "images")
    (tmp / "images").mkdir()
    return ["train", "--data", str(path), "--images", str(tmp / "images"), *TINY]


def _truncated_training_image(workers: str):
    def setup(tmp: Path, run: Path) -> list[str]:
        path = write_coco(tmp)
        _truncate(tmp / "images" / "b.png")
        return ["train", "--data", str(path), *TINY, "--workers", workers, "--epochs", "1"]
    return setup


def _weights(kind: str):
    """A weights file that is not ours: random bytes, a torch pickle, safetensors without our metadata, truncated."""
    def make(tmp: Path, run: Path) -> Path:
        path = tmp / ("w.pth" if kind == "pickle" else "w.safetensors")
        if kind == "random":
            path.write_bytes(os.urandom(2048))
        elif kind == "pickle":
            torch.save({"w": torch.zeros(3)}, path)
        elif kind == "plain":
            save_file({"w": torch.zeros(3)}, str(path))
        elif kind == "truncated":
            data = (run / "best.safetensors").read_bytes()
            path.write_bytes(data[: len(data) // 2])
        return path
    return make


def _with_weights(command: list[str], kind: str):
    def setup(tmp: Path, run: Path) -> list[str]:
        weights = _weights(kind)(tmp, run)
        data = write_coco(tmp / "d")
        extra = {"train": ["--data", str(data), *TINY], "eval": ["--data", str(data)],
                 "predict": [str(tmp / "d" / "images")], "export": [], "inspect-targets": ["--data", str(data)]}
        return [*command, "--weights", str(weights), *extra[command[0]]]
    return setup


def _other_backbone(tmp: Path, run: Path) -> list[str]:
    data = write_coco(tmp)
    tiny = [a if a != "test_resnet" else "test_convnext" for a in TINY]
    return ["train", "--data", str(data), "--weights", str(run / "best.safetensors"), *tiny]


def _other_classes(tmp: Path, run: Path) -> list[str]:
    return ["eval", "-w", str(run / "best.safetensors"), "--data", str(write_coco(tmp, classes=("dog",)))]


def _resume_without_state(tmp: Path, run: Path) -> list[str]:
    (tmp / "r").mkdir()
    shutil.copy(run / "last.safetensors", tmp / "r" / "last.safetensors")
    return ["train", "--resume", str(tmp / "r" / "last.safetensors")]


def _resume_other_checkpoint(tmp: Path, run: Path) -> list[str]:
    shutil.copytree(run, tmp / "r")
    _with_metadata(run / "last.safetensors", tmp / "r" / "last.safetensors", **{"fcos_cli.checkpoint_id": "0-0-other"})
    return ["train", "--resume", str(tmp / "r" / "last.safetensors")]


def _resume_best(tmp: Path, run: Path) -> list[str]:
    shutil.copytree(run, tmp / "r")
    return ["train", "--resume", str(tmp / "r" / "best.safetensors")]


def _resume_with_options(tmp: Path, run: Path) -> list[str]:
    shutil.copytree(run, tmp / "r")
    return ["train", "--resume", str(tmp / "r" / "last.safetensors"), "--epochs", "50", "--workers", "0", "--lr", "1"]


def _resume_foreign(tmp: Path, run: Path) -> list[str]:
    return ["train", "--resume", str(_weights("random")(tmp, run))]


def _no_weights(command: str):
    def setup(tmp: Path, run: Path) -> list[str]:  # the test runs in tmp: no runs/train to default to
        extra = {"eval": [], "predict": [str(tmp)], "export": []}[command]
        return [command, *extra]
    return setup


def _bad_onnx(tmp: Path, run: Path) -> list[str]:
    (tmp / "m.onnx").write_bytes(b"\x08\x07garbage" * 50)
    Image.new("RGB", SIZE).save(tmp / "x.png")
    return ["predict", str(tmp / "x.png"), "-w", str(tmp / "m.onnx")]


def _option(*argv: str, data: bool = False):
    """A command with one bad option; `data` adds a valid --data so that only the option is wrong."""
    def setup(tmp: Path, run: Path) -> list[str]:
        args = [a.replace("{weights}", str(run / "best.safetensors")).replace("{tmp}", str(tmp)) for a in argv]
        return args + (["--data", str(write_coco(tmp))] if data else [])
    return setup


def _predict(*argv: str):
    """`fcos predict` of one tiny image with the module's weights and one bad option."""
    def setup(tmp: Path, run: Path) -> list[str]:
        Image.new("RGB", SIZE).save(tmp / "x.png")
        return ["predict", str(tmp / "x.png"), "-w", str(run / "best.safetensors"), *argv]
    return setup


def _onnx_predict(*argv: str, older: bool = False):
    """`fcos predict` of one tiny image with the module's weights exported to ONNX and one bad option; `older`: a
    file whose NMS settings are constants (as exports were before they became inputs)."""
    def setup(tmp: Path, run: Path) -> list[str]:
        import onnx

        from fcos_cli import checkpoint
        from fcos_cli.export import export_onnx

        model, cfg, names = checkpoint.load(run / "best.safetensors")
        export_onnx(model, cfg, names, tmp / "m.onnx", torch.rand(1, 3, 64, 64))
        if older:  # an initializer that is no graph input is a constant
            proto = onnx.load(str(tmp / "m.onnx"))
            kept = [i for i in proto.graph.input if i.name == "images"]
            del proto.graph.input[:]
            proto.graph.input.extend(kept)
            onnx.save(proto, str(tmp / "m.onnx"))
        Image.new("RGB", SIZE).save(tmp / "x.png")
        return ["predict", str(tmp / "x.png"), "-w", str(tmp / "m.onnx"), *argv]
    return setup


def _config_file(text: str):
    def setup(tmp: Path, run: Path) -> list[str]:
        (tmp / "run.yaml").write_text(text)
        return ["train", "--config", str(tmp / "run.yaml")]
    return setup

def _recorded_data_gone(tmp: Path, run: Path) -> list[str]:
    """Weights whose recorded validation file has since moved: eval without --data names it."""
    cfg = json.loads(safe_open(str(run / "best.safetensors"), framework="pt").metadata()["fcos_cli.config"])
    cfg["data"]["val"] = str(tmp / "gone.json")
    weights = _with_metadata(run / "best.safetensors", tmp / "w.safetensors", **{"fcos_cli.config": json.dumps(cfg)})
    return ["eval", "-w", str(weights)]


def _project_is_a_file(tmp: Path, run: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["inspect-targets", "--data", str(write_coco(tmp)), "--no-draw", "--project", str(tmp / "afile")]


def _demo_into_a_file(tmp: Path, run: Path) -> list[str]:
    (tmp / "taken").write_text("x")
    return ["demo-data", str(tmp / "taken")]


CASES = [
    # --data and annotation files
    ("data-nowhere", _option("train", "--data", "{tmp}/nowhere.json"), ["--data", "nowhere.json", "no such file"]),
    ("val-data-nowhere", _option("train", "--val-data", "{tmp}/gone.json", *TINY, data=True),
     ["--val-data", "gone.json", "no such file"]),
    ("data-not-an-annotation-file", _raw_data("x", ".txt"), ["ann.txt", "expected", "a COCO .json", "VOC"]),
    ("images-folder-nowhere", _option("train", *TINY, "--images", "{tmp}/none", data=True), ["--images", "none"]),
    ("coco-not-json", _raw_data("{not json"), ["ann.json", "not valid JSON"]),
    ("coco-binary-file", _raw_data(b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), ["ann.json", "not valid JSON"]),
    ("coco-not-an-object", _raw_data("[1, 2]"), ["ann.json", "expected a COCO object"]),
    ("coco-no-images-key", _data(lambda d: d.pop("images")), ["train.json", "'images'"]),
    ("coco-no-annotations-key", _data(lambda d: d.pop("annotations")), ["train.json", "'annotations'"]),
    ("coco-no-categories-key", _data(lambda d: d.pop("categories")), ["train.json", "'categories'"]),
    ("coco-annotation-without-bbox", _data(lambda d: d["annotations"][0].pop("bbox")), ["train.json", "'bbox'"]),
    ("coco-bbox-of-three-numbers", _data(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
     ["train.json", "bbox", "[x, y, width, height]"]),
    ("coco-image-without-file-name", _data(lambda d: d["images"][1].pop("file_name")), ["train.json", "'file_name'"]),
    ("coco-repeated-image-ids", _data(lambda d: d["images"][1].update(id=1)), ["train.json", "unique"]),
    ("coco-unknown-category-id", _data(lambda d: d["annotations"][0].update(category_id=5)),
     ["train.json", "category id 5", "categories"]),
    ("coco-empty-dataset", _data(lambda d: d.update(images=[], annotations=[])), ["train.json", "no images"]),
    ("coco-path-escapes-root", _data(lambda d: d["images"][0].update(file_name="../../etc/passwd")),
     ["train.json", "'../../etc/passwd'", "not inside the image folder"]),
    ("coco-absolute-path", _data(lambda d: d["images"][0].update(file_name="/etc/passwd")),
     ["train.json", "'/etc/passwd'", "not inside the image folder"]),
    ("coco-every-image-missing", _all_missing, ["train.json", "none of its 2 images", "a.png"]),
    ("yaml-not-yaml", _yolo(yaml_text="train: [images\nnames: {"), ["data.yaml", "not valid YAML"]),
    ("yaml-without-names", _yolo(yaml_text="train: images\nval: images\n"), ["data.yaml", "'names'"]),
    ("yaml-without-train", _yolo(yaml_text="val: images\nnames: [cat]\n"), ["data.yaml", "'train'"]),
    ("yaml-without-val", _yolo_train(yaml_text="train: images\nnames: [cat]\n"), ["data.yaml", "'val'"]),
    ("yolo-no-images", _yolo_without_images, ["data.yaml", "no images for 'train'"]),
    ("yolo-label-line-malformed", _yolo(label="0 0.5 0.5 0.4 0.4\n0 0.5 0.5 0.2\n"),
     ["a.txt:2", "expected 'class cx cy w h'"]),
    ("yolo-label-class-out-of-range", _yolo(label="3 0.5 0.5 0.4 0.4\n"), ["a.txt:1", "class 3", "0..0"]),
    ("yolo-label-class-nan", _yolo(label="nan 0.5 0.5 0.4 0.4\n"), ["a.txt:1", "class nan"]),
    ("voc-not-xml", _voc(xml="<annotation><object>"), ["a.xml", "not valid XML"]),
    ("voc-listed-without-annotation", _voc(listed="a\nb\n"), ["train.txt", "b.xml", "does not exist"]),
    ("voc-box-not-a-number", _voc(xml=VOC_XML.replace("<xmin>9<", "<xmin>left<")), ["a.xml", "'cat'", "<xmin>"]),
    ("voc-object-without-name", _voc(xml=VOC_XML.replace("<name>cat</name>", "")), ["a.xml", "<name>"]),
    ("voc-root-without-val", _voc(command="train"), ["ImageSets/Main/val.txt", "val split"]),
    # images that break only when decoded, during training (in the main process and in a worker)
    ("truncated-image-in-training", _truncated_training_image("0"), ["b.png", "truncated"]),
    ("truncated-image-in-a-worker", _truncated_training_image("1"), ["b.png", "truncated"]),
    # weights
    ("train-unknown-backbone", _option("train", "--backbone", "resnet5O", data=True),
     ["resnet5O", "resnet50"]),
    ("train-weights-random-bytes", _with_weights(["train"], "random"), ["w.safetensors", "not a readable safetensors"]),
    ("eval-weights-truncated", _with_weights(["eval"], "truncated"), ["w.safetensors", "not a readable safetensors"]),
    ("predict-weights-without-metadata", _with_weights(["predict"], "plain"), ["w.safetensors", "metadata"]),
    ("export-weights-torch-pickle", _with_weights(["export"], "pickle"), ["w.pth", "not a readable safetensors"]),
    ("inspect-weights-without-metadata", _with_weights(["inspect-targets"], "plain"), ["w.safetensors", "metadata"]),
    ("predict-onnx-not-onnx", _bad_onnx, ["m.onnx", "ONNX"]),
    ("train-weights-other-backbone", _other_backbone, ["test_resnet", "test_convnext", "--backbone"]),
    ("train-weights-with-pretrained", _option("train", "-w", "{weights}", "--pretrained"),
     ["--weights", "--pretrained"]),
    ("weights-unknown-published-name", _option("predict", "{tmp}", "-w", "torchvision:fcos_resnet50"),
     ["--weights", "did you mean torchvision:fcos_resnet50_fpn_coco"]),
    ("eval-data-other-classes", _other_classes, ["cat", "dog", "classes"]),
    ("weights-file-missing", _option("eval", "-w", "{tmp}/absent.safetensors"), ["--weights", "absent.safetensors"]),
    ("weights-is-a-directory", _option("predict", "{tmp}", "-w", "{tmp}"), ["--weights", "directory"]),
    # --resume
    ("resume-state-missing", _resume_without_state, ["last.state.safetensors", "missing"]),
    ("resume-state-of-another-checkpoint", _resume_other_checkpoint, ["last.state.safetensors", "another checkpoint"]),
    ("resume-from-best-not-last", _resume_best, ["best.state.safetensors", "missing"]),
    ("resume-not-weights", _resume_foreign, ["w.safetensors", "not a readable safetensors"]),
    ("resume-changes-the-run", _resume_with_options, ["--resume", "own config", "--epochs, --lr"]),
    ("resume-file-missing", _option("train", "--resume", "{tmp}/gone.safetensors"), ["--resume", "gone", "not a file"]),
    # no --weights and no runs/train to default to
    ("eval-no-weights-no-runs", _no_weights("eval"), ["--weights", "runs/train"]),
    ("predict-no-weights-no-runs", _no_weights("predict"), ["--weights", "runs/train"]),
    ("export-no-weights-no-runs", _no_weights("export"), ["--weights", "runs/train"]),
    # option values
    ("epochs-zero", _option("train", "--epochs", "0"), ["--epochs", "positive"]),
    ("epochs-negative", _option("train", "--epochs", "-3"), ["--epochs", "positive"]),
    ("epochs-not-a-number", _option("train", "--epochs", "ten"), ["--epochs", "integer"]),
    ("img-size-zero", _option("predict", "x.png", "--img-size", "0"), ["--img-size", "positive"]),
    ("batch-size-negative", _option("eval", "--batch-size", "-1"), ["--batch-size", "positive"]),
    ("iou-above-one", _option("predict", "x.png", "--iou", "1.5"), ["--iou", "1"]),
    ("conf-below-zero", _option("predict", "x.png", "--conf", "-0.1"), ["--conf", "0"]),
    ("workers-negative", _option("train", "--workers", "-1"), ["--workers", "0 or more"]),
    ("max-size-zero", _option("train", "--max-size", "0"), ["--max-size", "positive"]),
    ("eval-max-size-negative", _option("eval", "--max-size", "-5"), ["--max-size", "positive"]),
    ("eval-conf-above-one", _option("eval", "-w", "{weights}", "--conf", "1.5", data=True), ["--conf", "1"]),
    ("eval-iou-below-zero", _option("eval", "-w", "{weights}", "--iou", "-0.2", data=True), ["--iou", "0"]),
    ("eval-max-det-zero", _option("eval", "-w", "{weights}", "--max-det", "0", data=True), ["--max-det", "positive"]),
    ("eval-split-unknown", _option("eval", "-w", "{weights}", "--split", "test", data=True),
     ["--split", "'test' is not one of 'train', 'val'"]),
    ("eval-recorded-data-gone", _recorded_data_gone, ["no --data", "gone.json", "no longer exists", "pass --data"]),
    ("time-not-a-duration", _option("train", "--time", "2x"), ["--time", "'2x'", "duration like 2h"]),
    ("time-unit-first", _option("train", "--time", "h2"), ["--time", "'h2'", "duration like 2h"]),
    ("time-negative", _option("train", "--time", "-5m"), ["--time", "'-5m'", "duration"]),
    ("time-zero", _option("train", "--time", "0"), ["--time", "positive"]),
    ("time-zero-with-unit", _option("train", "--time", "0h0m"), ["--time", "positive"]),
    ("val-fraction-one", _option("train", "--val-fraction", "1"), ["--val-fraction", "[0, 1)"]),
    ("val-fraction-negative", _option("train", "--val-fraction", "-0.2"), ["--val-fraction", "[0, 1)"]),
    ("val-fraction-leaves-nothing", _option("train", "--val-fraction", "0.9", *TINY, data=True),
     ["--val-fraction", "none for training"]),
    ("lr-zero", _option("train", "--lr", "0"), ["--lr", "positive"]),
    ("lr-negative", _option("train", "--lr", "-0.01"), ["--lr", "positive"]),
    ("head-convs-zero", _option("train", "--head-convs", "0"), ["--head-convs", "at least 1"]),
    ("warmup-steps-negative", _option("train", "--warmup-steps", "-5"), ["--warmup-steps", "0 or more"]),
    ("grad-clip-negative", _option("train", "--grad-clip", "-1"), ["--grad-clip", "0 or more"]),
    ("size-ranges-not-increasing", _option("train", "--size-ranges", "128,64,256,512", data=True),
     ["--size-ranges", "increase"]),
    ("size-ranges-too-few", _option("inspect-targets", "--size-ranges", "64,128", data=True),
     ["--size-ranges", "4 boundaries"]),
    ("size-ranges-not-numbers", _option("inspect-targets", "--size-ranges", "a,b,c,d", data=True),
     ["--size-ranges", "whole numbers"]),
    ("multi-scale-zero", _option("train", "--multi-scale", "0,320", data=True), ["--multi-scale", "positive"]),
    ("center-sampling-radius-negative", _option("inspect-targets", "--center-sampling-radius", "-1"),
     ["--center-sampling-radius", "0"]),
    ("set-unknown-key", _option("train", "--set", "train.weight_dacay=0.1"),
     ["train.weight_dacay", "did you mean train.weight_decay"]),
    ("set-bad-value", _option("train", "--set", "train.epochs=many"), ["train.epochs", "expected int"]),
    ("set-without-equals", _option("train", "--set", "train.epochs"), ["--set", "section.field=value"]),
    ("config-file-bad-key", _config_file("model:\n  fpn:\n    out_chanels: 64\n"),
     ["model.fpn.out_chanels", "did you mean model.fpn.out_channels"]),
    ("config-file-not-a-mapping", _config_file("- just\n- a list\n"), ["run.yaml", "mapping"]),
    ("config-file-broken-yaml", _config_file("model: [unclosed\n"), ["cannot read config", "run.yaml"]),
    ("config-file-missing", _option("train", "--config", "{tmp}/absent.yaml"), ["--config", "absent.yaml"]),
    ("split-unknown", _option("inspect-targets", "--split", "test"), ["--split", "'test' is not one of 'train', 'val'"]),
    ("preset-unknown", _option("train", "--preset", "fast"), ["'fast'", "preset"]),
    ("optimizer-unknown", _option("train", "--optimizer", "adam", data=True), ["--optimizer", "'adam' is not one of 'sgd', 'adamw'"]),
    ("schedule-unknown", _option("train", "--schedule", "linear", data=True), ["--schedule", "'linear' is not one of 'cosine', 'step'"]),
    ("device-cuda-without-gpu", _option("eval", "-w", "{weights}", "--device", "cuda"), ["--device cuda", "no CUDA"]),
    ("device-unknown", _option("predict", "x.png", "--device", "gpu"), ["--device", "'gpu'", "cuda:N"]),
    ("classes-not-indices", _option("predict", "x.png", "--classes", "cat,2"), ["--classes", "'cat,2'", "0,2"]),
    ("classes-out-of-range", _predict("--classes", "0,3"), ["--classes 0,3", "class 3", "0..0", "cat"]),
    ("line-width-zero", _option("predict", "x.png", "--line-width", "0"), ["--line-width", "positive"]),
    ("vid-stride-zero", _option("predict", "x.png", "--vid-stride", "0"), ["--vid-stride", "positive"]),
    ("predict-onnx-cuda-without-provider", _onnx_predict("--device", "cuda"),
     ["--device cuda", "no CUDA provider", "onnxruntime-gpu"]),
    ("predict-onnx-half", _onnx_predict("--half"), ["--half", "m.onnx", "float32", "safetensors"]),
    ("predict-onnx-older-export-iou", _onnx_predict("--iou", "0.3", older=True),
     ["m.onnx", "NMS settings baked in", "export it again", "--iou"]),
    ("export-half-onnx", _option("export", "-w", "{weights}", "--half"), ["--half", "ONNX", "--format safetensors"]),
    ("export-check-images-missing", _option("export", "-w", "{weights}", "--check-images", "{tmp}/none"),
     ["--check-images", "none", "no such file"]),
    ("export-check-compares-nothing", _option("export", "-w", "{weights}", "--output", "{tmp}/m.onnx"),
     ["m.onnx", "no detections with score >= 0.25", "compared none", "--check-images", "removed"]),
    ("export-conf-above-one", _option("export", "-w", "{weights}", "--conf", "2"), ["--conf", "1"]),
    ("export-format-unknown", _option("export", "-w", "{weights}", "--format", "tflite"),
     ["--format", "'tflite' is not one of 'onnx', 'safetensors'"]),
    ("unknown-option", _option("train", "--epoch", "3"), ["--epoch", "--epochs"]),
    ("unknown-command", _option("trian"), ["'trian'", "'train'"]),
    ("demo-data-into-a-file", _demo_into_a_file, ["taken", "is a file"]),
    # output locations
    ("export-output-folder-missing", _option("export", "-w", "{weights}", "--output", "{tmp}/nodir/x.onnx"),
     ["--output", "nodir", "does not exist"]),
    ("project-is-a-file", _project_is_a_file, ["--project", "afile", "run folder"]),
    ("name-leaves-project", _option("inspect-targets", "--name", "../escape", "--no-draw", data=True),
     ["--name", "'../escape'", "plain folder name"]),
]


def one_line(result) -> str:
    """The single non-empty stderr line of a failed command (asserting that there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
    return lines[0]


@pytest.mark.parametrize("setup, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_mistake_is_one_line_and_exit_2(setup, words: list[str], run: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    monkeypatch.chdir(tmp_path)  # run folders and defaults land in this test's own folder
    args = setup(tmp_path, run)
    if args[0] in ("train", "eval", "predict", "inspect-targets") and not {"--project", "--resume"} & set(args):
        args += ["--project", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = one_line(result)
    assert line.startswith("error:"), line
    for word in words:
        assert word in line, (word, line)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_cases_are_many_and_distinct() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) >= 25


# -------------------------------------------------------------- skipped, with a warning and counts


def test_bad_boxes_and_images_are_skipped_with_one_warning(tmp_path: Path) -> None:
    """Missing and unreadable images are left out, empty/NaN/outside boxes dropped, overhanging ones clipped."""
    def mutate(d: dict) -> None:
        d["images"] += [{"id": 3, "file_name": "gone.png", "width": 64, "height": 48},
                        {"id": 4, "file_name": "notes.png", "width": 64, "height": 48}]
        boxes = [[5, 5, 0, 10], [5, 5, -4, 10], [None, 5, 10, 10], [100, 100, 10, 10], [50, 40, 30, 30]]
        d["annotations"] += [{"id": 10 + i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes)]
        d["annotations"].append({"id": 20, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]})

    path = write_coco(tmp_path, mutate)
    (tmp_path / "images" / "notes.png").write_text("not an image")
    result = runner.invoke(app, ["inspect-targets", "--data", str(path), "--no-draw", "--img-size", "64",
                                 "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    line = one_line(result)
    assert line.startswith("warning:") and "train.json" in line
    for part in ("skipped 2 image(s)", "gone.png (missing)", "notes.png (not a readable image)",
                 "dropped 2 boxes with zero or negative size", "dropped 1 boxes with NaN",
                 "dropped 1 boxes outside the image", "clipped 1 boxes", "dropped 1 annotations of image ids"):
        assert part in line, (part, line)
    assert (tmp_path / "runs" / "exp" / "stats.json").is_file()  # the two good images are explained


def test_grey_palette_rgba_16bit_and_rotated_images_are_no_mistake(tmp_path: Path) -> None:
    """Odd image modes are converted when read; an EXIF-rotated image is measured as it will be shown."""
    path = write_yolo(tmp_path, label="0 0.5 0.5 0.4 0.4\n")
    base = Image.effect_noise(SIZE, 50)
    base.save(tmp_path / "images" / "grey.png")
    base.convert("P").save(tmp_path / "images" / "palette.png")
    base.convert("RGBA").save(tmp_path / "images" / "rgba.png")
    Image.fromarray((np.asarray(base, np.uint16) * 200).astype(np.uint16)).save(tmp_path / "images" / "deep.png")
    exif = Image.new("RGB", (40, 20)).getexif()
    exif[0x0112] = 6  # shown rotated: 20 wide, 40 high
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "images" / "rotated.jpg", exif=exif)
    (tmp_path / "labels" / "rotated.txt").write_text("0 0.5 0.5 1.0 1.0\n")
    result = runner.invoke(app, ["inspect-targets", "--data", str(path), "--no-draw", "--num-images", "6",
                                 "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "", result.stderr  # no warning: nothing skipped, dropped or clipped
    from fcos_cli.data.yolo import load_yolo

    rotated = [r for r in load_yolo(path).records if r.path.name == "rotated.jpg"][0]
    assert (rotated.width, rotated.height) == (20, 40) and rotated.boxes.tolist() == [[0, 0, 20, 40]]


def test_yolo_nan_box_and_missing_image_are_skipped(tmp_path: Path) -> None:
    path = write_yolo(tmp_path, label="0 nan 0.5 0.4 0.4\n0 0.5 0.5 0.4 0.4\n0 1.5 1.5 0.2 0.2\n")
    (tmp_path / "images" / "b.png").write_bytes(b"junk")
    result = runner.invoke(app, ["inspect-targets", "--data", str(path), "--no-draw", "--project",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    line = one_line(result)
    assert "data.yaml" in line and "b.png (not a readable image)" in line
    assert "dropped 1 boxes with NaN" in line and "dropped 1 boxes outside the image" in line


def test_predict_skips_bad_files_with_warnings_and_a_count(run: Path, tmp_path: Path) -> None:
    Image.new("RGB", SIZE).save(tmp_path / "good.png")
    _truncate(tmp_path / "cut.png")
    (tmp_path / "notes.txt").write_text("x")
    result = runner.invoke(app, ["predict", str(tmp_path), "-w", str(run / "best.safetensors"), "--no-save-images",
                                 "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("warning:") for line in lines), result.stderr
    assert any("cut.png" in line for line in lines) and any("notes.txt" in line for line in lines)
    assert "2 files skipped" in result.stdout


def test_predict_skips_a_corrupt_video_with_a_warning(run: Path, tmp_path: Path) -> None:
    """Videos that do not decode are skipped like unreadable images: a warning naming each, exit 0, no output."""
    Image.new("RGB", SIZE).save(tmp_path / "good.png")
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.mkv").write_bytes(b"")
    result = runner.invoke(app, ["predict", str(tmp_path), "-w", str(run / "best.safetensors"),
                                 "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("warning:") and "cannot read video" in line for line in lines)
    assert any("junk.mp4" in line for line in lines) and any("empty.mkv" in line for line in lines)
    assert "2 files skipped" in result.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "exp").iterdir()) == ["good.png", "predictions.json"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "inspect-targets", "--data", str(tmp_path / "nowhere.json")])
    assert result.exit_code != 0 and type(result.exception).__name__ == "UserError"


def test_real_stderr_of_python_dash_m_is_one_line(tmp_path: Path) -> None:
    """Outside CliRunner too: Click's usage errors are one line, not Typer's usage box."""
    proc = subprocess.run([sys.executable, "-m", "fcos_cli", "train", "--epochs", "0"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--epochs" in lines[0], proc.stderr
    assert "fcos train --help" in lines[0]


# ------------------------------------------------------------- run folders are never overwritten


@pytest.mark.parametrize("command", ["eval", "predict", "inspect-targets"])
def test_run_folder_is_numbered_not_overwritten(command: str, run: Path, tmp_path: Path) -> None:
    data = write_coco(tmp_path / "d")
    taken = tmp_path / "runs" / "exp"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    argv = {"eval": ["eval", "-w", str(run / "best.safetensors"), "--data", str(data)],
            "predict": ["predict", str(tmp_path / "d" / "images"), "-w", str(run / "best.safetensors")],
            "inspect-targets": ["inspect-targets", "--data", str(data), "--no-draw"]}[command]
    result = runner.invoke(app, [*argv, "--project", str(tmp_path / "runs"), "--name", "exp"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"
    assert (tmp_path / "runs" / "exp2").is_dir() and any((tmp_path / "runs" / "exp2").iterdir())


def test_train_run_folder_is_numbered_unless_exist_ok(run: Path) -> None:
    """The module's run was trained into runs/tiny; a second one gets tiny2 (the first keeps its files)."""
    before = (run / "last.safetensors").read_bytes()
    data = run.parent.parent / "data" / "train.json"
    result = runner.invoke(app, ["train", "--data", str(data), "--val-data", str(data), *TINY, "--epochs", "1",
                                 "--project", str(run.parent), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    assert (run.parent / "tiny2" / "last.safetensors").is_file()
    assert (run / "last.safetensors").read_bytes() == before
