"""The plain loop a user would write to train on an image folder: torchvision's ImageFolder and a
DataLoader, the same model (cvtool's cnn, same kwargs and initialisation) and optimizer as
`cvtool train classify --model cnn --width 16 --depth 2 --batch-size 64`. Prints the seconds of
one epoch (training, then evaluation of val/).

    python bench/plain_train_classify.py DATA_DIR [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cvtool.models.small import cnn, initialise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    preprocess = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    train = datasets.ImageFolder(str(args.data / "train"), preprocess)
    val = datasets.ImageFolder(str(args.data / "val"), preprocess)
    torch.manual_seed(0)
    model = cnn([3, 64, 64], len(train.classes), [16, 32])
    initialise(model, "kaiming")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    model.train()
    for images, labels in DataLoader(train, batch_size=64, shuffle=True,
                                     num_workers=args.workers):
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for images, labels in DataLoader(val, batch_size=256, num_workers=args.workers):
            model(images).argmax(1)
    print(f"epoch seconds {time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    main()
