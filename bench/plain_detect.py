"""The baseline: a cvtool-trained Mask R-CNN run as a competent user writes it with torchvision.

Rebuilds the model from the checkpoint's own JSON (builder + kwargs), loads the safetensors,
eval mode, inference_mode, batched forward, score >= 0.5, masks thresholded at 0.5 and
RLE-encoded with pycocotools (what cvtool's records carry).
Usage: python bench/plain_detect.py CHECKPOINT.safetensors IMAGE_DIR BATCH_SIZE
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
from torchvision.transforms.functional import to_tensor


def main() -> None:
    checkpoint, image_dir, batch_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    module, name = meta["architecture"]["builder"].split(":")
    model = getattr(importlib.import_module(module), name)(**meta["architecture"]["kwargs"])
    model.load_state_dict(load_file(checkpoint))
    model.eval()
    paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() == ".png")
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            outputs = model([to_tensor(Image.open(p).convert("RGB")) for p in chunk])
            for path, output in zip(chunk, outputs):
                keep = output["scores"] >= 0.5
                masks = (output["masks"][keep, 0] >= 0.5).numpy()
                rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
                print(json.dumps({"path": str(path), "labels": output["labels"][keep].tolist(),
                                  "boxes": output["boxes"][keep].tolist(),
                                  "counts": [r["counts"].decode() for r in rles]}))
    print(f"{time.perf_counter() - started:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
