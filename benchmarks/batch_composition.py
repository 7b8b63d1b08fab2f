"""Does a detector's mAP depend on which images share its batch? One weights file, one COCO file, four scorings:

- `alone`: one image at a time (what `fcos predict` does on a CPU);
- `batch8`: 8 images a batch in file order (what `fcos eval` does);
- `batch8_by_orientation`: 8 a batch, landscape images with landscape ones, portrait with portrait;
- `alone_padded`: one image at a time, padded as a mixed batch pads it (beside its own transpose).

A batch pads its images to the largest, and the head's GroupNorm takes its statistics over that padding too. A model
trained on random batches of landscape and portrait images learns those statistics and scores higher in such
batches than alone; trained with `data.aspect_grouping` (the default), it scores alike. Prints one JSON line.

    python benchmarks/batch_composition.py WEIGHTS COCO_JSON [--images DIR]
"""

from __future__ import annotations

import argparse
import json

from accuracy import _results, coco_scores
from PIL import Image

import fcos_cli
from fcos_cli.data import open_split
from fcos_cli.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("coco_json")
    parser.add_argument("--images", help="image folder of the COCO file [default: beside it]")
    args = parser.parse_args()
    try:
        model, cfg, _names = fcos_cli.load(args.weights)
        index = open_split(args.coco_json, images_dir=args.images, flag="COCO_JSON")
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    records = index.records
    images = [Image.open(r.path).convert("RGB") for r in records]

    def score(order: list[int], batch: int, padded: bool = False) -> float:
        rows = []
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            inputs = [images[i] for i in chunk]
            if padded:  # the image's transpose pads it to a square, as a batch of both orientations does
                inputs.append(images[chunk[0]].transpose(Image.Transpose.TRANSPOSE))
            detections = fcos_cli.predict(model, cfg, inputs, batch_size=len(inputs))
            for i, det in zip(chunk, detections, strict=False):
                labels = [index.category_ids[k] for k in det["labels"].tolist()]
                rows += _results(records[i].image_id, det["boxes"], det["scores"], det["labels"].new_tensor(labels))
        return coco_scores(args.coco_json, rows)["map"]

    order = list(range(len(records)))
    by_orientation = sorted(order, key=lambda i: images[i].width >= images[i].height)
    print(json.dumps({"alone": score(order, 1), "batch8": score(order, 8),
                      "batch8_by_orientation": score(by_orientation, 8), "alone_padded": score(order, 1, True)}))


if __name__ == "__main__":
    main()
