"""Typed records: each task's `Record` with its results as attributes, and `draw()`.

`record.to_dict()` is exactly the JSON object the CLI writes for the input; the attributes read
the same payload (`record.predictions`, `record.detections`, `record.mask`, ...). A failed
input's record has `ok` False, `error` set, and empty results. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cvtool.core.results import Prediction, Record

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class ClassifyRecord(Record):
    @property
    def predictions(self) -> list[Prediction]:
        """The top-k classes, most probable first."""
        return [Prediction(p["index"], p["label"], p["score"])
                for p in self.payload.get("predictions", [])]

    @property
    def top(self) -> Prediction | None:
        predictions = self.predictions
        return predictions[0] if predictions else None


@dataclass(frozen=True)
class Detection:
    index: int  # the class id
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the decoded image's pixels
    rle: dict[str, Any] | None = None  # segment-instance: the COCO RLE mask
    area: int | None = None  # segment-instance: the mask's pixels

    @property
    def mask(self) -> np.ndarray | None:
        """segment-instance: the (H, W) bool mask, decoded from `rle`."""
        if self.rle is None:
            return None
        from cvtool.io.coco import decode_mask

        return decode_mask(self.rle)


class DetectionRecord(Record):
    @property
    def detections(self) -> list[Detection]:
        return [Detection(d["index"], d["label"], d["score"], tuple(d["box"]), d.get("mask"),
                          d.get("area")) for d in self.payload.get("detections", [])]

    def draw(self) -> Image.Image:
        """The annotated image `-o DIR` writes for this input: boxes, labels, scores, masks."""
        from cvtool.io.annotate import draw_detections

        return draw_detections(_image_of(self), self.payload.get("detections", []))


@dataclass(frozen=True)
class ClassPixels:
    index: int
    label: str
    pixels: int
    fraction: float


class SemanticRecord(Record):
    @property
    def mask(self) -> np.ndarray | None:
        """The (H, W) class index of every pixel (uint8, int32 past 256 classes)."""
        return self.arrays.get("mask")

    @property
    def classes(self) -> list[ClassPixels]:
        """The classes present, most pixels first."""
        return [ClassPixels(c["index"], c["label"], c["pixels"], c["fraction"])
                for c in self.payload.get("classes", [])]

    @property
    def mask_path(self) -> str | None:
        return self.payload.get("mask_path")

    def draw(self) -> Image.Image:
        """The overlay `-o DIR` writes for this input: every class but 0 filled and outlined,
        a legend of the classes present below."""
        from cvtool.io.masks import overlay

        if self.mask is None:
            raise ValueError(f"{self.path} has no mask: {self.error}")
        return overlay(_image_of(self), self.mask, {c.index: c.label for c in self.classes})


def _image_of(record: Record) -> Image.Image:
    if record.image is None:
        why = (f"it failed ({record.error.type}: {record.error.message})" if record.error
               else "its image was not kept (predict(..., keep_images=False))")
        raise ValueError(f"cannot draw {record.path}: {why}")
    return record.image
