"""`ResizeCropNormalize`, cvtool's own copy of torchvision's ImageClassification preset (so
models that need nothing else of torchvision do not pay its import): equal to the preset, value
for value, on real images of every shape, for every interpolation and both size forms; and the
house CNN's whole run imports neither torchvision nor any other heavy package it does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cvtool.models.preprocess import ResizeCropNormalize
from tests.clirun import ROOT

PHOTOS = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))


def _images() -> list[Image.Image]:
    photos = [Image.open(path).convert("RGB") for path in PHOTOS[:3]]
    digits = [Image.open(path).convert("RGB")
              for path in sorted((ROOT / "sample_images" / "digits").glob("*.png"))[:2]]
    odd = [photos[0].resize((97, 31)), photos[1].resize((31, 97)), photos[2].crop((0, 0, 5, 3))]
    return photos + digits + odd


@pytest.mark.parametrize("interpolation", ["nearest", "nearest-exact", "bilinear", "bicubic",
                                           "box", "hamming", "lanczos"])
@pytest.mark.parametrize("sizes", [(224, 256), (8, 8), ([40, 60], [48, 72]), (64, 50),
                                   ([30, 20], 33)])
def test_equal_to_torchvisions_preset(interpolation: str, sizes: tuple) -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    crop, resize = sizes
    ours = ResizeCropNormalize(crop_size=crop, resize_size=resize, mean=[0.485, 0.456, 0.406],
                               std=[0.229, 0.224, 0.225], interpolation=interpolation)
    theirs = ImageClassification(crop_size=224, resize_size=256, mean=[0.485, 0.456, 0.406],
                                 std=[0.229, 0.224, 0.225],
                                 interpolation=InterpolationMode(interpolation))
    theirs.crop_size = [crop] if isinstance(crop, int) else list(crop)
    theirs.resize_size = [resize] if isinstance(resize, int) else list(resize)
    for image in _images():
        expected = theirs(image)
        got = ours(image)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected), (image.size, sizes, interpolation)
    if interpolation in ("nearest", "bilinear", "bicubic"):  # torch's tensor resize modes
        tensor = torch.rand(3, 40, 50)  # a tensor goes through torchvision's own preset
        assert torch.equal(ours(tensor), theirs(tensor))


@pytest.mark.parametrize("run_directory", [False, True], ids=["stdout", "with -o"])
def test_the_house_cnns_run_imports_only_what_it_needs(run_directory: bool, tmp_path) -> None:
    """Also with -o: run.json's versions are read without importing torchvision."""
    extra = ['-o', str(tmp_path / "out")] if run_directory else []
    code = ("import runpy, sys\n"
            f"sys.argv = ['cvtool', 'classify', 'sample_images/digits', '-m', 'digits-cnn', '-q', "
            f"*{extra!r}]\n"
            "try:\n    runpy.run_module('cvtool', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "heavy = {'torchvision', 'timm', 'segmentation_models_pytorch', 'pycocotools',\n"
            "         'matplotlib', 'sympy', 'triton', 'onnxruntime', 'openvino', 'ray'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 20  # the records
    assert done.stderr.strip().splitlines()[-1] == "[]"
    if run_directory:
        recorded = json.loads((tmp_path / "out" / "run.json").read_text())["versions"]
        assert recorded["torchvision"] and recorded["torch"] and recorded["pillow"]
