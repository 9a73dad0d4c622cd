"""Decoding at the size the model needs: full JPEG decoding against Pillow's reduced-DCT draft.

Inputs: the sample photos (at most 640 px: a draft changes nothing there) and their
enlargements to about 12 megapixels (bicubic, saved as JPEG quality 92, as a phone would), with
EXIF orientation left as it is. For each input, decode + efficientnet_lite0's preprocessing
(`ResizeCropNormalize`: shorter side 256, crop 224) with and without the draft `classify --draft`
asks for (`draft_size`: twice the resize, 512x512),
alternated; then the top-1 of efficientnet_lite0 (real ImageNet weights) on both tensors.

    python bench/decode_draft.py [--repeats 5] [--megapixels 12]

Prints decode throughput (images/s, one thread) for each way, the speed-up, the top-1
agreement of draft with full decoding, and the largest pixel difference of the model input.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_line


def enlargements(folder: Path, megapixels: float) -> list[Path]:
    from PIL import Image

    paths = []
    for photo in sorted((ROOT / "sample_images" / "photos").glob("*.jpg")):
        image = Image.open(photo).convert("RGB")
        scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        big = image.resize((round(image.width * scale), round(image.height * scale)),
                           Image.BICUBIC)
        paths.append(folder / f"{photo.stem}_{megapixels:g}mp.jpg")
        big.save(paths[-1], quality=92)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megapixels", type=float, default=12.0)
    args = parser.parse_args()
    import torch

    from cvtool.io.decode import load_image
    from cvtool.models.classification import load_classifier

    torch.set_num_threads(1)
    model = load_classifier("efficientnet_lite0", offline=True)
    transforms = model.transforms
    from cvtool.inference.classify import draft_size

    draft = draft_size([model])  # what `classify --draft` asks for
    photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        large = enlargements(Path(tmp), args.megapixels)
        print(f"decode draft: efficientnet_lite0 preprocessing, {machine_line()}")
        for name, paths in (("sample photos", photos),
                            (f"{args.megapixels:g} MP enlargements", large)):
            times: dict[str, list[float]] = {"full": [], "draft": []}
            for _ in range(args.repeats):  # alternated
                for way, size in (("full", None), ("draft", draft)):
                    started = time.perf_counter()
                    for path in paths:
                        transforms(load_image(str(path), draft=size))
                    times[way].append(time.perf_counter() - started)
            full_rate = len(paths) / statistics.median(times["full"])
            draft_rate = len(paths) / statistics.median(times["draft"])
            agree, worst = 0, 0.0
            with torch.no_grad():
                for path in paths:
                    full = transforms(load_image(str(path)))
                    drafted = transforms(load_image(str(path), draft=draft))
                    worst = max(worst, float((full - drafted).abs().max()))
                    tops = model.module(torch.stack([full, drafted])).argmax(1)
                    agree += int(tops[0] == tops[1])
            print(f"  {name} ({len(paths)}): full {full_rate:.1f} img/s, draft {draft_rate:.1f} "
                  f"img/s, {draft_rate / full_rate:.2f}x; top-1 agreement {agree}/{len(paths)}; "
                  f"largest input difference {worst:.3f} (normalised units)")


if __name__ == "__main__":
    main()
