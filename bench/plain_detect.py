"""The baseline: a cvtool-trained Mask R-CNN run as a competent user writes it with torchvision.

Rebuilds the model from the checkpoint's own JSON (builder + kwargs), loads the safetensors,
eval mode, inference_mode, batched forward, score >= 0.5; with masks, thresholded at 0.5 and
RLE-encoded with pycocotools (what cvtool's records carry). With OUTPUT_DIR, each image is also
drawn (torchvision's draw_segmentation_masks and draw_bounding_boxes, labels on the boxes) and
saved as PNG there, the way torchvision's docs draw detections.
Usage: python bench/plain_detect.py CHECKPOINT.safetensors IMAGE_DIR BATCH_SIZE masks|boxes
       [OUTPUT_DIR]
Prints one JSON line per image on stdout and the loop's seconds on stderr.
"""

import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from safetensors.torch import load_file
from torchvision.transforms.functional import pil_to_tensor, to_pil_image, to_tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks


def main() -> None:
    checkpoint, image_dir, batch_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    masks_wanted = sys.argv[4] == "masks"
    out_dir = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    module, name = meta["architecture"]["builder"].split(":")
    model = getattr(importlib.import_module(module), name)(**meta["architecture"]["kwargs"])
    model.load_state_dict(load_file(checkpoint))
    model.eval()
    classes = meta["classes"]
    paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() == ".png")
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            images = [Image.open(p).convert("RGB") for p in chunk]
            outputs = model([to_tensor(image) for image in images])
            for path, image, output in zip(chunk, images, outputs):
                keep = output["scores"] >= 0.5
                row = {"path": str(path), "labels": output["labels"][keep].tolist(),
                       "boxes": output["boxes"][keep].tolist()}
                planes = (output["masks"][keep, 0] >= 0.5) if masks_wanted else None
                if masks_wanted:
                    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                            for m in planes.numpy()]
                    row["counts"] = [r["counts"].decode() for r in rles]
                print(json.dumps(row))
                if out_dir is not None:
                    draw(image, output, keep, planes, classes, out_dir / path.name)
    print(f"{time.perf_counter() - started:.4f}", file=sys.stderr)


def draw(image, output, keep, planes, classes, target: Path) -> None:
    canvas = pil_to_tensor(image)
    if planes is not None and len(planes):
        canvas = draw_segmentation_masks(canvas, planes, alpha=0.45)
    labels = [f"{classes[i]} {s:.2f}" for i, s in zip(output["labels"][keep].tolist(),
                                                      output["scores"][keep].tolist())]
    canvas = draw_bounding_boxes(canvas, output["boxes"][keep], labels, width=1)
    to_pil_image(canvas).save(target)


if __name__ == "__main__":
    main()
