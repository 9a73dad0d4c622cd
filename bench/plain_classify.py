"""The baseline: classification as a competent user writes it with torchvision alone.

Eval mode, inference_mode, the weights' own transforms, batched forward, top-5 per image.
Usage: python bench/plain_classify.py ARCH WEIGHTS_FILE IMAGE_DIR BATCH_SIZE
Prints one JSON line per image on stdout and the loop's seconds on stderr.
"""

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.models import get_model, get_model_weights


def main() -> None:
    arch, weights_file, image_dir, batch_size = sys.argv[1:5]
    model = get_model(arch)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    model.eval()
    transforms = get_model_weights(arch).DEFAULT.transforms()
    paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() == ".jpg")
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), int(batch_size)):
            chunk = paths[i:i + int(batch_size)]
            batch = torch.stack([transforms(Image.open(p).convert("RGB")) for p in chunk])
            scores, indices = model(batch).softmax(dim=1).topk(5)
            for path, s, k in zip(chunk, scores.tolist(), indices.tolist()):
                print(json.dumps({"path": str(path), "indices": k, "scores": s}))
    print(f"{time.perf_counter() - started:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
