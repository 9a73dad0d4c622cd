"""The baseline: a cvtool-trained semantic segmenter (an smp U-Net) run as a competent user
writes it with segmentation_models_pytorch and torchvision.

Rebuilds the model from the checkpoint's own JSON (builder + kwargs), loads the safetensors,
eval mode, inference_mode; each batch: to tensor, normalised with the checkpoint's mean and std,
one forward, argmax per pixel, per-class pixel counts. With OUTPUT_DIR, each mask is also saved
as a PNG of class indices and an overlay (torchvision's draw_segmentation_masks) as PNG.
Usage: python bench/plain_segment.py CHECKPOINT.safetensors IMAGE_DIR BATCH_SIZE [OUTPUT_DIR]
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
from safetensors.torch import load_file
from torchvision.transforms.functional import normalize, pil_to_tensor, to_pil_image, to_tensor
from torchvision.utils import draw_segmentation_masks


def main() -> None:
    checkpoint, image_dir, batch_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    out_dir = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    module, name = meta["architecture"]["builder"].split(":")
    model = getattr(importlib.import_module(module), name)(**meta["architecture"]["kwargs"])
    model.load_state_dict(load_file(checkpoint))
    model.eval()
    mean, std = meta["preprocessing"]["mean"], meta["preprocessing"]["std"]
    classes = len(meta["classes"])
    paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() == ".png")
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            images = [Image.open(p).convert("RGB") for p in chunk]
            batch = torch.stack([normalize(to_tensor(image), mean, std) for image in images])
            masks = model(batch).argmax(1)
            for path, image, mask in zip(chunk, images, masks):
                print(json.dumps({"path": str(path),
                                  "pixels": torch.bincount(mask.flatten(), minlength=classes)
                                  .tolist()}))
                if out_dir is not None:
                    Image.fromarray(mask.numpy().astype(np.uint8)).save(
                        out_dir / f"{path.stem}_mask.png")
                    planes = mask[None] == torch.arange(1, classes)[:, None, None]
                    to_pil_image(draw_segmentation_masks(pil_to_tensor(image), planes,
                                                         alpha=0.45)).save(out_dir / path.name)
    print(f"{time.perf_counter() - started:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
