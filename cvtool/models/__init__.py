"""Models per task and their weights. Importing this package does not import torch."""

from cvtool.models.classification import LoadedModel, classification_transforms, load_classifier
from cvtool.models.weights import describe, is_cached, pull

__all__ = ["LoadedModel", "classification_transforms", "describe", "is_cached", "load_classifier",
           "pull"]
