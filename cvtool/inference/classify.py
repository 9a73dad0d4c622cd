"""Image classification: top-k softmax probabilities, test-time augmentation and ensembles."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from cvtool.core.context import Warn
from cvtool.core.device import autocast
from cvtool.core.options import ClassifyOptions
from cvtool.core.status import UsageError
from cvtool.inference.pipeline import BatchLoop, Prepared
from cvtool.inference.records import ClassifyRecord
from cvtool.models.classification import LoadedModel, load_classifier
from cvtool.models.fold import fold_for_inference
from cvtool.models.preprocess import classification_input, grey_picture

TASK = "classify"


# bf16's rounding moves ImageNet probabilities by up to 0.028 (efficientnet_lite0 on the sample
# photos); a bf16 top-2 closer than twice that may be in fp32's other order.
RECHECK_MARGIN = 0.06


class Classifier:
    """Averages softmax probabilities over the ensemble's models (and over TTA views).

    `recheck` (`--precision auto` where it chose bf16): an input whose bf16 top-2 are within
    RECHECK_MARGIN runs again in fp32, so its label is fp32's; the others keep bf16's speed."""

    def __init__(self, models: Sequence[LoadedModel], device: torch.device, precision: str,
                 topk: int, tta: bool, recheck: bool = False,
                 counts: dict[str, int] | None = None) -> None:
        self.models = list(models)
        self.categories = shared_categories(self.models)
        self.device, self.precision, self.tta = device, precision, tta
        self.recheck = recheck and precision != "fp32" and len(self.categories) > 1
        # run.json's `rechecked_in_fp32`; `infer` runs on several streams at once
        self.counts = counts if counts is not None else {}
        self._counting = threading.Lock()
        if self.recheck:
            self.counts["rechecked_in_fp32"] = 0
        self.topk = min(topk, len(self.categories))
        for index, loaded in enumerate(self.models):
            # channels_last lets oneDNN / cuDNN pick their fastest convolution kernels.
            loaded.module.to(device, memory_format=torch.channels_last).eval()
            loaded.folded_batch_norms = fold_for_inference(
                loaded.module, lambda _module, i=index: self._probabilities(i, [sample(loaded)]))

    def prepare(self, image: Any) -> list[torch.Tensor]:
        return [classification_input(m.transforms, image, self.tta) for m in self.models]

    @torch.inference_mode()
    def infer(self, inputs: list[list[torch.Tensor]], _items: list[Prepared]) -> list[dict]:
        probabilities = self._ensemble(inputs, self.precision)
        if self.recheck:
            top2 = probabilities.topk(2, dim=1).values
            close = (top2[:, 0] - top2[:, 1] < RECHECK_MARGIN).nonzero().flatten().tolist()
            if close:
                probabilities[close] = self._ensemble([inputs[i] for i in close], "fp32")
                with self._counting:
                    self.counts["rechecked_in_fp32"] += len(close)
        scores, indices = probabilities.topk(self.topk, dim=1)
        return [self._payload(s.tolist(), k.tolist()) for s, k in zip(scores, indices)]

    def _ensemble(self, inputs: list[list[torch.Tensor]], precision: str) -> torch.Tensor:
        return sum(self._probabilities(i, [x[i] for x in inputs], precision)
                   for i in range(len(self.models))) / len(self.models)

    def _probabilities(self, model_index: int, views: list[torch.Tensor],
                       precision: str | None = None) -> torch.Tensor:
        batch = torch.stack(views)
        per_image = batch.shape[1] if self.tta else 1
        batch = batch.flatten(0, 1) if self.tta else batch
        batch = batch.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with autocast(self.device, precision or self.precision):
            logits = self.models[model_index].module(batch)
        # float64 softmax: scores are reported at full precision, whatever the forward ran in.
        probabilities = logits.double().softmax(dim=1).cpu()
        return probabilities.unflatten(0, (-1, per_image)).mean(dim=1)

    def _payload(self, scores: list[float], indices: list[int]) -> dict[str, Any]:
        predictions = [{"index": i, "label": self.categories[i], "score": s}
                       for s, i in zip(scores, indices)]
        return {"predictions": predictions}


def sample(loaded: LoadedModel) -> torch.Tensor:
    """A model input like any other (a grey picture through the model's own preprocessing)."""
    return classification_input(loaded.transforms, grey_picture())


def shared_categories(models: Sequence[LoadedModel]) -> list[str]:
    first = models[0]
    for other in models[1:]:
        if other.categories != first.categories:
            raise UsageError(f"cannot ensemble {first.name} and {other.name}: their label spaces "
                             f"differ ({len(first.categories)} vs {len(other.categories)} classes"
                             " or different names)")
    return list(first.categories)


def load_models(options: ClassifyOptions, offline: bool,
                warn: Warn) -> list[LoadedModel]:
    weights = options.weights_list
    if len(weights) == 1:
        weights *= len(options.models)
    if len(weights) != len(options.models):
        raise UsageError(f"--weights given {len(weights)} times for {len(options.models)} models; "
                         "give it once for all models or once per --model")
    return [load_classifier(m, w, offline=offline, warn=warn)
            for m, w in zip(options.models, weights)]


def build(options: ClassifyOptions, device: torch.device, offline: bool,
          warn: Warn, recheck: bool = False,
          counts: dict[str, int] | None = None) -> tuple[BatchLoop, list[LoadedModel]]:
    if options.topk < 1:
        raise UsageError(f"invalid --topk {options.topk}; expected at least 1")
    models = load_models(options, offline, warn)
    classifier = Classifier(models, device, options.precision, options.topk, options.tta,
                            recheck, counts)
    loop = BatchLoop.for_options(options, task=TASK, model_name="+".join(m.name for m in models),
                                 prepare=classifier.prepare, infer=classifier.infer,
                                 record_type=ClassifyRecord,
                                 draft=draft_size(models) if options.draft else None)
    return loop, models


DRAFT_MARGIN = 2  # a draft decode stays at least this many times the resize's size


def draft_size(models: Sequence[LoadedModel]) -> tuple[int, int] | None:
    """(width, height) a draft decode must cover: twice what every model's resize makes (the
    shorter side, both ways, since a photo may stand either way), so the resize that follows
    still shrinks by 2x or more and filters as it does from the full image. None where a
    model's preprocessing is not a resize (an export's own, say): decode it all."""
    sides = []
    for model in models:
        resize = getattr(model.transforms, "resize_size", None)
        if not resize:
            return None
        sides.append(DRAFT_MARGIN * max(resize))
    return (max(sides), max(sides))
