"""Image classification: top-k softmax probabilities, test-time augmentation and ensembles."""

from __future__ import annotations

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


class Classifier:
    """Averages softmax probabilities over the ensemble's models (and over TTA views)."""

    def __init__(self, models: Sequence[LoadedModel], device: torch.device, precision: str,
                 topk: int, tta: bool) -> None:
        self.models = list(models)
        self.categories = shared_categories(self.models)
        self.device, self.precision, self.tta = device, precision, tta
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
        probabilities = sum(self._probabilities(i, [x[i] for x in inputs])
                            for i in range(len(self.models))) / len(self.models)
        scores, indices = probabilities.topk(self.topk, dim=1)
        return [self._payload(s.tolist(), k.tolist()) for s, k in zip(scores, indices)]

    def _probabilities(self, model_index: int, views: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack(views)
        per_image = batch.shape[1] if self.tta else 1
        batch = batch.flatten(0, 1) if self.tta else batch
        batch = batch.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with autocast(self.device, self.precision):
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
          warn: Warn) -> tuple[BatchLoop, list[LoadedModel]]:
    if options.topk < 1:
        raise UsageError(f"invalid --topk {options.topk}; expected at least 1")
    models = load_models(options, offline, warn)
    classifier = Classifier(models, device, options.precision, options.topk, options.tta)
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
