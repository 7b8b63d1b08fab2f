"""COCO-trained FCOS detectors by name (`torchvision:fcos_resnet50_fpn_coco`): download, check, import, cache."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

from .atomic import sha256
from .errors import UserError, one_line

__all__ = ["Published", "DETECTORS", "cache_dir", "is_detector_name", "cached_path", "resolve_weights"]

MMDET = "https://download.openmmlab.com/mmdetection/v2.0/fcos/"


@dataclass(frozen=True)
class Published:
    """A checkpoint as its publisher lists it: the file name carries the sha256 prefix (torch.hub's rule)."""

    source: str  # an `fcos import-weights --from` value
    url: str
    variant: str  # an `fcos import-weights --variant` value
    box_ap: float  # COCO val2017 box AP the publisher reports
    backbone: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        return self.filename.rsplit("-", 1)[-1].split(".")[0]


DETECTORS: dict[str, Published] = {
    "torchvision:fcos_resnet50_fpn_coco": Published(
        "torchvision", "https://download.pytorch.org/models/fcos_resnet50_fpn_coco-99b0c9b7.pth", "auto", 39.2,
        "ResNet-50"),
    # mmdetection's model zoo (configs/fcos/metafile.yml); its X-101 and DCN models use layers fcos_cli lacks.
    "mmdet:fcos_r50-caffe_fpn_gn-head_1x_coco": Published(
        "mmdet", MMDET + "fcos_r50_caffe_fpn_gn-head_1x_coco/fcos_r50_caffe_fpn_gn-head_1x_coco-821213aa.pth",
        "paper", 36.6, "ResNet-50 (caffe)"),
    "mmdet:fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco": Published(
        "mmdet", MMDET + "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco/"
        "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco-0a0d75a8.pth", "improved", 38.7,
        "ResNet-50 (caffe)"),
    "mmdet:fcos_r101-caffe_fpn_gn-head-1x_coco": Published(
        "mmdet", MMDET + "fcos_r101_caffe_fpn_gn-head_1x_coco/fcos_r101_caffe_fpn_gn-head_1x_coco-0e37b982.pth",
        "paper", 39.1, "ResNet-101 (caffe)"),
    "mmdet:fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco": Published(
        "mmdet", MMDET + "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco/"
        "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco-d92ceeea.pth", "paper", 38.5, "ResNet-50 (caffe)"),
    "mmdet:fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco": Published(
        "mmdet", MMDET + "fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/"
        "fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth", "paper", 40.8, "ResNet-101 (caffe)"),
}


def cache_dir() -> Path:
    """`$FCOS_CLI_CACHE`, else ~/.cache/fcos_cli: `downloads/` (published files), `detectors/` (ours)."""
    return Path(os.environ.get("FCOS_CLI_CACHE") or Path.home() / ".cache" / "fcos_cli")


def is_detector_name(spec: str) -> bool:
    """`source:name` as opposed to a file path: what `-w` takes besides files."""
    return spec.split(":", 1)[0] in {name.split(":", 1)[0] for name in DETECTORS} and ":" in spec


def check_detector_name(spec: str) -> None:
    if spec not in DETECTORS:
        close = difflib.get_close_matches(spec, list(DETECTORS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; `fcos weights` lists them"
        raise UserError(f"unknown published detector {spec!r}{hint}")


def cached_path(spec: str) -> Path:
    """Where the converted weights of a published detector live once fetched."""
    return cache_dir() / "detectors" / f"{spec.replace(':', '__')}.safetensors"


def _download(spec: str, pub: Published, path: Path, progress: bool) -> None:
    """The published file at `path`, its sha256 prefix checked; a bad or partial file never stays behind."""
    import torch.hub

    command = (f"fcos import-weights {pub.filename} --from {pub.source} --variant {pub.variant} "
               f"--output {cached_path(spec)}")
    if path.is_file():  # copied here by hand (the offline recipe): check it like a download
        if not sha256(path).startswith(pub.sha256_prefix):
            path.unlink()
            raise UserError(f"{path} does not have the published sha256 prefix {pub.sha256_prefix} (corrupt or "
                            f"truncated): removed it; fetch {pub.url} again")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # writes a temporary file in the same folder and moves it into place only when the hash matches
        torch.hub.download_url_to_file(pub.url, str(path), hash_prefix=pub.sha256_prefix, progress=progress)
    except RuntimeError as e:  # torch.hub's hash check
        raise UserError(f"the download of {pub.url} does not have its published sha256 prefix {pub.sha256_prefix}: "
                        f"the file is corrupt or truncated and was removed; try again") from e
    except (URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot download {spec} ({one_line(str(reason))}): fetch {pub.url} on a connected machine, "
                        f"then copy it to {path} and run again, or run: {command}") from e


def resolve_weights(spec: str | Path, progress: bool = True) -> Path:
    """A weights file for `-w`: a published detector name is fetched, imported and cached once; a path is itself."""
    spec = str(spec)
    if not is_detector_name(spec):
        return Path(spec)
    check_detector_name(spec)
    out = cached_path(spec)
    if out.is_file():
        return out
    pub = DETECTORS[spec]
    download = cache_dir() / "downloads" / pub.filename
    _download(spec, pub, download, progress)
    from .import_weights import import_weights

    out.parent.mkdir(parents=True, exist_ok=True)
    report = import_weights(download, pub.source, out, pub.variant)
    if report.written is None:
        raise UserError(f"{pub.url} did not import completely ({len(report.left_over)} tensors left over, "
                        f"{len(report.unfilled)} unfilled); see `fcos import-weights {download} --from {pub.source}`")
    download.unlink()  # the converted file is the cache; the .pth is no longer needed
    return out
