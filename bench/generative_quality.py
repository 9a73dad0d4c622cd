"""How good the digit generators' samples are (issue 19's goals), on N samples each:

- `fid_digits` and its ratio to the real-vs-real floor for N digits (`cvtool.generative.fid`);
- the share of each digit class among the samples, as digits-cnn labels them;
- how confidently an independent classifier reads them: an RBF SVC trained on all 1797 of
  scikit-learn's 8x8 digits, mean top probability, with libsvm's pairwise Platt coupling
  (`SVC(probability=True)`, the measure issue 19's goal is in; deprecated in scikit-learn 1.9)
  and with the one-vs-rest calibration scikit-learn recommends instead.

The samples are the PNG pixels `cvtool generate` writes (the Python API's images).
Usage, from the repository root:
    PYTHONPATH=. python bench/generative_quality.py [-n 1000] [--seed 0] [MODEL ...]
MODEL: a house model (default: the three digits generators) or a `cvtool train generate` run.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine_line
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.svm import SVC

import cvtool
from cvtool.generative.fid import digit_shares, fid_digits, real_floor

HOUSE = ("digits-pixelcnn", "digits-vae", "digits-gan")


def samples(model: str, num: int, seed: int) -> torch.Tensor:
    """`num` samples as float images in [0, 1], (num, 1, 8, 8), from their 8-bit pixels."""
    images = [np.asarray(sample.image.convert("L"), dtype=np.float32) / 255
              for sample in cvtool.Generator(model=model, device="cpu").predict(num, seed=seed)]
    return torch.from_numpy(np.stack(images))[:, None]


def independent_classifiers() -> list:
    import warnings

    digits = load_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        readers = [SVC(probability=True, random_state=0),
                   CalibratedClassifierCV(SVC(), ensemble=False)]
    return [reader.fit(digits.data / 16, digits.target) for reader in readers]


def quality(images: torch.Tensor, readers: list, floor: float) -> dict[str, float]:
    fid = fid_digits(images)
    shares = digit_shares(images)
    pixels = images.flatten(1).numpy()
    platt, calibrated = (float(reader.predict_proba(pixels).max(1).mean()) for reader in readers)
    return {"fid": fid, "ratio": fid / floor, "share_min": shares.min(),
            "share_max": shares.max(), "platt": platt, "calibrated": calibrated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(HOUSE))
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_line())
    floor, readers = real_floor(args.n), independent_classifiers()
    real = quality(real_digits(args.n), readers, floor)
    print(f"floor: fid_digits of {args.n} real training digits {floor:.3f}; their SVC "
          f"confidence {real['platt']:.3f} / {real['calibrated']:.3f} (the SVC saw them)")
    print(f"{'model':<28} {'fid_digits':>10} {'x floor':>8} {'classes':>13} "
          f"{'SVC Platt':>9} {'one-vs-rest':>11}")
    for model in args.models:
        figures = quality(samples(model, args.n, args.seed), readers, floor)
        print(f"{model:<28} {figures['fid']:>10.3f} {figures['ratio']:>7.2f}x "
              f"{figures['share_min']:>6.1%}-{figures['share_max']:<6.1%} "
              f"{figures['platt']:>9.3f} {figures['calibrated']:>11.3f}", flush=True)


def real_digits(num: int) -> torch.Tensor:
    from cvtool.generative.fid import digits_tensor

    train = digits_tensor(part="train")
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:num]
    return train[chosen, :1]


if __name__ == "__main__":
    main()
