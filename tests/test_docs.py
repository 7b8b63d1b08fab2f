"""The README and docs/ run: every command in their code blocks and command table, for real, at a tiny size.

Lines are parsed from the markdown, so a new line in the docs is tested without touching this file:
- ```bash blocks and the README's command table: every `fcos ...`, `torchrun ...` and `python -c ...` line
  runs in one shared workspace (tmp) with tiny overrides appended (Click keeps the last value of an option),
  after the files it names were created there (FIXTURES: a tiny COCO/YOLO dataset, a trained run, ...).
- ```python blocks run with `exec` in the workspace.
- ```console blocks of the Troubleshooting section: each `$ fcos ...` must fail with exactly the quoted line.
- The ```json / ```yaml / label-line examples of the README's dataset section are the datasets the workspace
  uses, so they are proven to load.
Lines that cannot run here are listed in NOT_RUNNABLE with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Appended to every `fcos train` / `torchrun ... train` line: a tiny model, one epoch.
TINY = ["--no-pretrained", "--backbone", "test_resnet", "--img-size", "128", "--fpn-channels", "32", "--head-convs", "2",
        "--size-ranges", "32,64,128,256", "--epochs", "1", "--batch-size", "2", "--workers", "0",
        "--warmup-steps", "0"]
TINY_DATA = ["--data", "train.json", "--val-data", "val.json"]  # lines without --data would train on `demo`
OVERRIDES = {  # appended per command
    "inspect-targets": ["--num-images", "2", "--img-size", "256"],
    "predict": ["--img-size", "256"],  # imported COCO weights would predict at 800 / 1333 px
    "export": ["--conf", "0"],  # the workspace's 2-epoch model finds nothing at 0.25: its check compares all boxes
    "demo-data": ["--num-train", "2", "--num-val", "1"],
    "backbones": ["--limit", "3"],
}
NOT_RUNNABLE = {  # line (as written) -> why it is not run here
    "fcos weights --download resnet50":
        "downloads from the Hugging Face hub; tests/model/test_pretrained.py proves that loader on a local hub cache",
    'pip install -e ".[test]" && python -m pytest -m "not cuda" --durations=15':
        "it is this test suite (the Quickstart's `pip install -e .` part is skipped the same way)",
    "torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --nproc_per_node=8 "
    "-m fcos_cli train --data data.yaml --backbone resnet50 --epochs 12":
        "needs a second machine; the single-machine torchrun line runs with 2 CPU processes",
    "torchrun --nnodes=2 --node_rank=1 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --nproc_per_node=8 "
    "-m fcos_cli train --data data.yaml --backbone resnet50 --epochs 12":
        "the second machine of the line above",
}
CUDA_ONLY = {  # marked `cuda`: run where there is a GPU, deselected by the README's command
    "fcos train --data data.yaml --backbone resnet50 --amp --device cuda",
}
SKIPPED_PARTS = ("pip install",)  # parts of `a && b` lines that are installation, not usage


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Line:
    source: str  # README.md:12
    text: str  # as written


def _blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    """(first line number, body) of each ```lang block."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, textwrap.dedent(m.group(2)))
            for m in re.finditer(rf"^([ \t]*)```{lang}\n(.*?)^\1```", text, flags=re.M | re.S)]


def _commands(body: str) -> list[tuple[int, str]]:
    """Lines of a bash block, `\\`-continuations joined, comments dropped: (offset, line)."""
    out, buffer, start = [], "", 0
    for i, raw in enumerate(body.splitlines()):
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not buffer:
            start = i
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            out.append((start, buffer.strip()))
        buffer = ""
    return out


def doc_lines() -> list[Line]:
    lines = []
    for path in DOC_FILES:
        for first, body in _blocks(path, "bash"):
            for offset, text in _commands(body):
                if text.startswith(("fcos ", "torchrun ", "python -c", "pip install")):
                    lines.append(Line(f"{path.name}:{first + offset}", text))
    readme = (ROOT / "README.md").read_text().splitlines()
    for number, row in enumerate(readme, 1):  # the command table: | `fcos x` | `fcos x ...` (what it does) |
        cells = row.split("|")
        if len(cells) > 3 and cells[1].strip().startswith("`fcos"):
            for example in re.findall(r"`(fcos [^`]+)`", cells[2]):
                lines.append(Line(f"README.md:{number}", example))
    return lines


def python_blocks() -> list[Line]:
    return [Line(f"{p.name}:{first}", body) for p in DOC_FILES for first, body in _blocks(p, "python")]


def troubleshooting() -> list[tuple[Line, str]]:
    """(command, the one error line quoted under it) from the README's ```console blocks."""
    cases = []
    for first, body in _blocks(ROOT / "README.md", "console"):
        lines = body.splitlines()
        for i, text in enumerate(lines):
            if text.startswith("$ fcos "):
                cases.append((Line(f"README.md:{first + i}", text[2:]), lines[i + 1]))
    return cases


# ------------------------------------------------------------------------------------------ workspace


def _readme_block(lang: str, contains: str) -> str:
    return next(body for _, body in _blocks(ROOT / "README.md", lang) if contains in body)


def _coco_example(ws: Path) -> None:
    """The README's minimal COCO file, with an image of the size it states."""
    data = json.loads(_readme_block("json", '"categories"'))
    for image in data["images"]:
        (ws / "images").mkdir(exist_ok=True)
        Image.open(ws / "images" / "train_0000.jpg").convert("RGB").resize((image["width"], image["height"])).save(
            ws / "images" / image["file_name"])
    (ws / "instances_train.json").write_text(json.dumps(data))
    shutil.copy(ws / "instances_train.json", ws / "mine.json")


def _yolo_example(ws: Path) -> None:
    """The README's data.yaml and label line, with one image in each split."""
    yaml_text = _readme_block("yaml", "names:")
    (ws / "data.yaml").write_text(yaml_text)
    label = _readme_block("text", "0.").strip().splitlines()[-1]
    for split in ("train", "val"):
        for folder in ("images", "labels"):
            (ws / folder / split).mkdir(parents=True, exist_ok=True)
        Image.open(ws / "images" / "train_0001.jpg").save(ws / "images" / split / "cat_001.jpg")
        (ws / "labels" / split / "cat_001.txt").write_text(label + "\n")


def _torchvision_fcos(ws: Path) -> None:
    import torch
    import torchvision

    state = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save(state, ws / "fcos_resnet50_fpn_coco-99b0c9b7.pth")


def _published_detector(ws: Path) -> None:
    """What `-w torchvision:fcos_resnet50_fpn_coco` fetches, already in the workspace's FCOS_CLI_CACHE: the docs run
    offline (tests/model/test_pretrained.py tests the download itself from a file:// URL)."""
    from fcos_cli import zoo
    from fcos_cli.import_weights import import_weights

    out = zoo.cached_path(PUBLISHED)
    if not out.is_file():
        _prepare(ws, "fcos_resnet50_fpn_coco-99b0c9b7.pth")
        out.parent.mkdir(parents=True, exist_ok=True)
        import_weights(ws / "fcos_resnet50_fpn_coco-99b0c9b7.pth", "torchvision", out)


def _torchvision_resnet(ws: Path) -> None:
    """Stands in for torchvision's resnet50-0676ba61.pth: timm's test_resnet has torchvision's names too."""
    import timm
    import torch

    torch.save(timm.create_model("test_resnet").state_dict(), ws / "resnet50-0676ba61.pth")


def _demo_video(ws: Path) -> None:
    """clip.mp4: a demo image's shapes sliding across 12 frames, written with OpenCV."""
    import cv2
    import numpy as np

    image = cv2.imread(str(ws / "images" / "train_0000.jpg"))
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    writer = cv2.VideoWriter(str(ws / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for i in range(12):
        writer.write(np.roll(image[:height, :width], 6 * i, axis=1))
    writer.release()


# The files the docs name and how the workspace gets them (created when a line first needs them).
PUBLISHED = "torchvision:fcos_resnet50_fpn_coco"
FIXTURES: dict[str, Callable[[Path], object]] = {
    PUBLISHED: _published_detector,
    "fcos_resnet50_fpn_coco-99b0c9b7.pth": _torchvision_fcos,
    "coco.safetensors": lambda ws: _fcos(ws, "import-weights fcos_resnet50_fpn_coco-99b0c9b7.pth --from torchvision "
                                             "--output coco.safetensors"),
    "resnet50-0676ba61.pth": _torchvision_resnet,
    "resnet50_tv.safetensors": lambda ws: _python_c(ws, next(
        line.text for line in doc_lines() if "resnet50_tv.safetensors')\"" in line.text)),
    "model.onnx": lambda ws: _fcos(ws, "export -w best.safetensors --output model.onnx --conf 0"),
    "run.json": lambda ws: _fcos(ws, "config --size s > run.json"),
    "clip.mp4": _demo_video,
}


def _fcos(ws: Path, line: str) -> None:
    line, _, target = line.partition(" > ")  # `fcos config > run.json`: the output is the file
    result = CliRunner().invoke(_app(), shlex.split(line), prog_name="fcos")
    assert result.exit_code == 0, f"fixture `fcos {line}`:\n{result.output}"
    if target:
        (ws / target).write_text(result.stdout)


def _python_c(ws: Path, line: str) -> None:
    proc = subprocess.run(shlex.split(line.replace("python", sys.executable, 1)), cwd=ws, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _app():
    from fcos_cli.cli import app

    return app


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A folder with what the docs' lines expect: tiny demo data (train.json, val.json, images/), the README's
    COCO and YOLO examples, a trained run at runs/train/exp, best.safetensors, photos/ and photo.jpg."""
    from fcos_cli.data import synthetic

    ws = tmp_path_factory.mktemp("docs")
    patch = pytest.MonkeyPatch()
    demo = tmp_path_factory.mktemp("demo_cache")
    patch.setattr(synthetic, "DEFAULT_DEMO_DIR", demo)  # `--data demo` in this process
    patch.setenv("FCOS_DEMO_DIR", str(demo))  # ... and in subprocesses
    patch.setenv("FCOS_CLI_CACHE", str(tmp_path_factory.mktemp("fcos_cli_cache")))  # published detectors
    patch.setenv("COLUMNS", "150")
    patch.chdir(ws)
    synthetic.write_demo_data(ws, num_train=4, num_val=2, max_side=256, seed=6)
    _coco_example(ws)
    _yolo_example(ws)
    (ws / "photos").mkdir()
    for name in ("train_0000.jpg", "val_0000.jpg"):
        shutil.copy(ws / "images" / name, ws / "photos" / name)
    shutil.copy(ws / "images" / "val_0001.jpg", ws / "photo.jpg")
    (ws / "docs").symlink_to(ROOT / "docs")  # lines that name docs/data/...
    _fcos(ws, " ".join(["train", *TINY_DATA, *TINY, "--epochs", "2", "--name", "exp"]))
    shutil.copy(ws / "runs/train/exp/best.safetensors", ws / "best.safetensors")
    yield ws
    patch.undo()


def _prepare(ws: Path, text: str) -> None:
    for name, make in FIXTURES.items():
        if name in text and not (ws / name).exists():
            make(ws)


def _tiny(argv: list[str]) -> list[str]:
    """Overrides for an `fcos ...` argument list (without `fcos`)."""
    command = argv[0]
    if command == "train":
        if "--resume" in argv and argv[argv.index("--resume") + 1] != "auto":
            return []  # a resumed run takes everything from its own config
        if PUBLISHED in argv:  # fine-tuning keeps the detector's R-50 model
            return ["--img-size", "128", "--epochs", "1", "--batch-size", "2", "--workers", "0"]
        return TINY + ([] if "--data" in argv else TINY_DATA)
    return OVERRIDES.get(command, [])


# ------------------------------------------------------------------------------------------ tests

LINES = doc_lines()


def test_docs_have_lines_and_exceptions_are_current() -> None:
    texts = [line.text for line in LINES]
    assert len(texts) > 20
    stale = [t for t in [*NOT_RUNNABLE, *CUDA_ONLY] if t not in texts]
    assert not stale, f"NOT_RUNNABLE lists lines the docs no longer have: {stale}"


@pytest.mark.parametrize("line", [pytest.param(line, marks=[pytest.mark.cuda] if line.text in CUDA_ONLY else [])
                                  for line in LINES if line.text not in NOT_RUNNABLE],
                         ids=lambda line: f"{line.source} {line.text[:60]}")
def test_doc_line_runs(line: Line, ws: Path) -> None:
    _prepare(ws, line.text)
    for part in (p.strip() for p in line.text.split("&&")):
        if part.startswith(SKIPPED_PARTS):
            continue
        if part.startswith("python -c"):
            _python_c(ws, part)
            continue
        argv = shlex.split(part)
        if argv[0] == "torchrun":  # 2 CPU processes (gloo) instead of the GPUs of the line
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    *[("--nproc_per_node=2" if a.startswith("--nproc_per_node") else a) for a in argv[1:]]]
            args = argv[argv.index("fcos_cli") + 1:]
            proc = subprocess.run(argv + _tiny(args), cwd=ws, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
            assert "Traceback" not in proc.stderr
            continue
        assert argv[0] == "fcos", part
        if ">" in argv:  # a redirected command writes its output file, as the shell would
            _fcos(ws, part.removeprefix("fcos "))
            continue
        result = CliRunner().invoke(_app(), argv[1:] + _tiny(argv[1:]), prog_name="fcos")
        assert result.exit_code == 0, f"{line.source}: {part}\n{result.output[-3000:]}"


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.source)
def test_doc_python_block_runs(block: Line, ws: Path) -> None:
    _prepare(ws, block.text)
    exec(compile(block.text, block.source, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("case", troubleshooting(), ids=lambda c: f"{c[0].source} {c[0].text[:50]}")
def test_troubleshooting_message_is_current(case: tuple[Line, str], ws: Path, monkeypatch) -> None:
    line, quoted = case
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the quoted messages are a CPU machine's
    _prepare(ws, line.text)
    argv = shlex.split(line.text)
    result = CliRunner().invoke(_app(), argv[1:], prog_name="fcos")
    assert result.exit_code == 2, result.output
    errors = [out for out in result.output.splitlines() if out.startswith("error:")]
    pattern = ".*".join(map(re.escape, quoted.split("...")))  # `...`: a detail that varies (a library's words)
    assert len(errors) == 1 and re.fullmatch(pattern, errors[0]), \
        f"{line.source}: the README quotes\n  {quoted}\nbut fcos prints\n  {errors}"


def test_every_image_in_the_docs_exists() -> None:
    for path in DOC_FILES:
        images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text())
        assert images or path.name == "ARCHITECTURE.md", f"{path.name} shows at least one figure"  # not the map
        for image in images:
            file = (path.parent / image).resolve()
            assert file.is_file(), f"{path.name}: {image}"
            assert file.stat().st_size < 200_000, f"{image}: {file.stat().st_size} bytes (keep figures < 200 KB)"


def test_preset_table_matches_the_code() -> None:
    """docs/fcos.md's `| field | paper | improved |` table says what `preset()` sets."""
    from fcos_cli.config import preset

    text = (ROOT / "docs" / "fcos.md").read_text()
    rows = [[c.strip().strip("`") for c in row.split("|")[1:4]]
            for row in text.splitlines() if re.match(r"\| `[a-z_]+\.[a-z_.]+` \|", row)]
    assert len(rows) == 5, rows
    for field, *written in rows:
        for name, cell in zip(("paper", "improved"), written, strict=True):
            value = preset(name)
            for part in field.split("."):
                value = getattr(value, part)
            first = cell.split()[0].strip("`")
            assert str(value).lower() == first.lower() or float(first) == value, (field, name, value, cell)


def test_make_figures_quick(tmp_path: Path) -> None:
    """docs/make_figures.py regenerates every figure the docs show (tiny settings, into tmp_path)."""
    env = {**os.environ, "FCOS_DEMO_DIR": str(tmp_path / "demo")}
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_figures.py"), "--quick", "--out",
                           str(tmp_path / "figures")], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = {p.name for p in (tmp_path / "figures").glob("*.png")}
    shown = {Path(image).name for path in DOC_FILES
             for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text())}
    assert shown <= made, f"figures the docs show but make_figures.py does not make: {shown - made}"
    assert all((tmp_path / "figures" / name).stat().st_size < 200_000 for name in made)
