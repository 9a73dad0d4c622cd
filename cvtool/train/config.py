"""A classification run's settings: validated once, stored as config.json, reread by --resume.

No torch here: the CLI validates options before anything heavy is imported.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cvtool.core.device import PRECISIONS
from cvtool.core.status import UsageError

SMALL_MODELS = ("linear", "mlp", "cnn")
CHOICES: dict[str, tuple[str, ...]] = {
    "loss": ("ce", "svm"),
    "activation": ("sigmoid", "tanh", "relu", "leaky_relu", "elu"),
    "init": ("auto", "small", "large", "xavier", "kaiming"),
    "optimizer": ("sgd", "momentum", "adagrad", "rmsprop", "adam"),
    "reg": ("none", "l1", "l2"),
    "schedule": ("constant", "step", "cosine"),
    "precision": PRECISIONS,
}
# Used when --lr is not given; the lr that suits each optimiser on small images.
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001}
# The course models' defaults, chosen by `bench/training_defaults.py` across seeded splits of
# digits (docs/measured.md): what an option left unset becomes. "adam_lr" replaces DEFAULT_LR
# for adam only (the sweep ran with adam). Any other model (torchvision, timm: fine-tuning or
# training on an image folder) takes GENERAL_RECIPE. The recipe is resolved when the config is
# made, so config.json holds the values a run used and --resume never changes with them.
RECIPES: dict[str, dict[str, Any]] = {
    # L2 0.0005 is about LogisticRegression's C=1 (1 / (2 x 1437 train images)).
    "linear": {"epochs": 100, "adam_lr": 0.01, "schedule": "cosine", "reg": "l2",
               "reg_strength": 0.0005},
    "mlp": {"epochs": 50, "schedule": "cosine", "dropout": 0.2, "width": 128},
    "cnn": {"epochs": 30, "schedule": "cosine", "batch_norm": True},
}
GENERAL_RECIPE: dict[str, Any] = {"epochs": 10, "schedule": "constant", "dropout": 0.0,
                                  "width": 32, "batch_norm": False, "reg": "none",
                                  "reg_strength": 0.0}


@dataclass
class ClassifyConfig:
    data: str
    model: str = "cnn"  # knn | linear | mlp | cnn | a torchvision classifier name
    loss: str = "ce"
    depth: int = 2  # mlp: hidden layers; cnn: conv layers
    width: int | None = None  # mlp: hidden units; cnn: first conv's channels (x2 per layer)
    activation: str = "relu"
    init: str = "auto"  # small for linear, kaiming for mlp/cnn, torchvision's own otherwise
    batch_norm: bool | None = None  # None: the model's recipe (RECIPES)
    dropout: float | None = None  # None: the model's recipe
    weights: str = "none"  # torchvision architectures: none | default | PATH
    optimizer: str = "adam"
    lr: float | None = None  # None: the model's recipe, else DEFAULT_LR[optimizer]
    reg: str | None = None  # None: the model's recipe
    reg_strength: float | None = None  # None: the recipe's, when --reg is the recipe's; else 0
    schedule: str | None = None  # None: the model's recipe
    epochs: int | None = None  # None: the model's recipe
    batch_size: int = 64
    augment: bool = False
    val_split: float = 0.2
    image_size: int | None = None
    seed: int = 0
    workers: int = 2  # DataLoader worker processes decoding image files
    precision: str = "fp32"
    sync_bn: bool = False  # torchrun: batch norm over the global batch
    compile: bool = False
    sanity: bool = False
    k: str = "auto"  # knn
    distance: str = "auto"  # knn
    folds: int = 5  # knn

    def __post_init__(self) -> None:
        recipe = {**GENERAL_RECIPE, **RECIPES.get(self.model, {})}
        for name in ("epochs", "schedule", "dropout", "batch_norm", "reg", "width"):
            if getattr(self, name) is None:
                setattr(self, name, recipe[name])
        if self.reg_strength is None:
            self.reg_strength = recipe["reg_strength"] if self.reg == recipe["reg"] else 0.0
        if self.lr is None and self.optimizer in DEFAULT_LR:
            self.lr = recipe["adam_lr"] if "adam_lr" in recipe and self.optimizer == "adam" \
                else DEFAULT_LR[self.optimizer]
        _require(0 <= self.workers <= MAX_WORKERS, f"--workers must be 0 to {MAX_WORKERS}")
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise UsageError(f"invalid --{name.replace('_', '-')} {getattr(self, name)!r}; "
                                 f"choose from {', '.join(valid)}")
        _require(self.epochs >= 1 and self.batch_size >= 1 and self.depth >= 0
                 and self.width >= 1, "--epochs, --batch-size and --width must be at least 1")
        _require(0 <= self.dropout < 1, f"--dropout {self.dropout}: expected 0 <= P < 1")
        _require(0 < self.val_split < 1, f"--val-split {self.val_split}: expected 0 < S < 1")
        _require(self.reg_strength >= 0, "--reg-strength must not be negative")
        _require(self.lr is None or self.lr > 0, "--lr must be positive")
        _require(self.model in (*SMALL_MODELS, "knn") or self.init == "auto",
                 "--init applies to linear, mlp and cnn; torchvision models keep their own")

    @property
    def resolved_lr(self) -> float:  # the trainers' one name for it; set by __post_init__
        return self.lr

    @property
    def resolved_init(self) -> str:
        if self.init != "auto":
            return self.init
        # Small weights make the initial loss land on log C / C - 1 for the linear classifier.
        return "small" if self.model == "linear" else "kaiming"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ClassifyConfig:
        return config_from_dict(cls, saved)


MAX_WORKERS = 64


def config_from_dict(cls: type, saved: Any) -> Any:
    """A config from a run's config.json, which is untrusted: every known field must have its
    annotated type (then the config's own checks run); unknown fields are ignored."""
    if not isinstance(saved, dict):
        raise UsageError("its \"config\" is not an object")
    values = {}
    for item in fields(cls):
        if item.name in saved:
            if not _has_type(saved[item.name], str(item.type)):
                raise UsageError(f"config field {item.name!r} must be {item.type}, not "
                                 f"{json.dumps(saved[item.name])[:60]}")
            values[item.name] = saved[item.name]
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise UsageError(f"config is incomplete: {error}") from None


def _has_type(value: Any, annotation: str) -> bool:
    checks = {"None": lambda v: v is None, "str": lambda v: isinstance(v, str),
              "bool": lambda v: isinstance(v, bool),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v),
              "list[int]": lambda v: isinstance(v, list) and all(
                  isinstance(i, int) and not isinstance(i, bool) for i in v)}
    return any(checks[part.strip()](value) for part in annotation.split("|"))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


DETECTION_CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("detect", "segment-instance"),
    "optimizer": CHOICES["optimizer"],
    "schedule": CHOICES["schedule"],
    "precision": PRECISIONS,
}
SMALL_DETECTOR = "small"


@dataclass
class DetectionConfig:
    """`train detect` / `train segment-instance` (masks): COCO data, one detector."""

    data: str
    task: str = "segment-instance"
    model: str = SMALL_DETECTOR  # small | a torchvision detection registry name
    weights: str = "none"  # torchvision models: none | default (fine-tune) | PATH
    width: int = 32  # small: channels at stride 4 (x2 at 8, x4 at 16)
    min_size: int | None = None  # short side the model resizes to [small: 128; else its own]
    max_size: int | None = None  # cap of the long side [small: 213; else its own]
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 100  # iterations of linear warm-up from lr / warmup
    epochs: int = 12
    batch_size: int = 8
    augment: bool = True
    vflip: bool = False
    seed: int = 0
    workers: int = 2  # DataLoader worker processes decoding image files
    precision: str = "fp32"
    sync_bn: bool = False  # torchrun: batch norm over the global batch

    def __post_init__(self) -> None:
        _require(0 <= self.workers <= MAX_WORKERS, f"--workers must be 0 to {MAX_WORKERS}")
        for name, valid in DETECTION_CHOICES.items():
            if getattr(self, name) not in valid:
                raise UsageError(f"invalid --{name.replace('_', '-')} {getattr(self, name)!r}; "
                                 f"choose from {', '.join(valid)}")
        _require(self.epochs >= 1 and self.batch_size >= 1 and self.width >= 2,
                 "--epochs and --batch-size must be at least 1, --width at least 2")
        _require(self.warmup >= 0 and self.weight_decay >= 0,
                 "--warmup and --weight-decay must not be negative")
        _require(self.lr is None or self.lr > 0, "--lr must be positive")
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            _require(value is None or value >= 16, f"--{name.replace('_', '-')} {value}: "
                     "expected at least 16 pixels")
        _require(self.model != SMALL_DETECTOR or self.weights == "none",
                 "--weights applies to torchvision detectors; --model small trains from scratch")

    @property
    def masks(self) -> bool:
        return self.task == "segment-instance"

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.002 if self.optimizer in ("adam", "rmsprop") else 0.02

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> DetectionConfig:
        return config_from_dict(cls, saved)


SEMANTIC_LOSS_TERMS = ("ce", "dice", "focal")


@dataclass
class SemanticConfig:
    """`train segment-semantic`: image/mask folders, one smp or torchvision segmenter."""

    data: str
    model: str = "smp:unet"  # smp:<arch> | a torchvision segmentation registry name
    encoder: str = "resnet18"  # smp models
    encoder_depth: int = 5  # smp models: encoder stages used (3-5)
    decoder_channels: list[int] | None = None  # smp Unet / Unet++ / MAnet, one per stage
    weights: str = "none"  # none | default (ImageNet encoder / torchvision's) | PATH
    loss: str = "ce+dice"  # ce, dice, focal, or a sum such as ce+dice
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 50
    epochs: int = 20
    batch_size: int = 16
    augment: bool = True
    vflip: bool = False
    image_size: int | None = None
    seed: int = 0
    workers: int = 2  # DataLoader worker processes decoding image files
    precision: str = "fp32"
    sync_bn: bool = False  # torchrun: batch norm over the global batch

    def __post_init__(self) -> None:
        _require(0 <= self.workers <= MAX_WORKERS, f"--workers must be 0 to {MAX_WORKERS}")
        for name, valid in (("optimizer", CHOICES["optimizer"]),
                            ("schedule", CHOICES["schedule"]), ("precision", PRECISIONS)):
            if getattr(self, name) not in valid:
                raise UsageError(f"invalid --{name} {getattr(self, name)!r}; "
                                 f"choose from {', '.join(valid)}")
        terms = self.loss.split("+")
        _require(all(term in SEMANTIC_LOSS_TERMS for term in terms)
                 and len(set(terms)) == len(terms),
                 f"invalid --loss {self.loss!r}; choose ce, dice, focal or a sum such as ce+dice")
        _require(self.epochs >= 1 and self.batch_size >= 1,
                 "--epochs and --batch-size must be at least 1")
        _require(3 <= self.encoder_depth <= 5, "--encoder-depth must be 3, 4 or 5")
        _require(self.decoder_channels is None
                 or (len(self.decoder_channels) == self.encoder_depth
                     and all(c >= 1 for c in self.decoder_channels)),
                 "--decoder-channels needs one positive width per encoder stage "
                 f"({self.encoder_depth}, comma-separated)")
        _require(self.warmup >= 0 and self.weight_decay >= 0,
                 "--warmup and --weight-decay must not be negative")
        _require(self.lr is None or self.lr > 0, "--lr must be positive")
        _require(self.image_size is None or self.image_size >= 8, "--image-size must be >= 8")

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.001 if self.optimizer in ("adam", "rmsprop") else 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> SemanticConfig:
        return config_from_dict(cls, saved)


GENERATIVE_FAMILIES = ("pixelcnn", "vae", "gan")


@dataclass
class GenerateConfig:
    """`train generate`: digits or an image folder, one PixelCNN, VAE or GAN."""

    data: str
    model: str = "pixelcnn"  # pixelcnn | vae | gan
    width: int = 64  # channels of the convolutions
    layers: int = 5  # pixelcnn: gated layers after the first
    latent_dim: int = 16  # vae / gan
    prior_components: int = 100  # vae: the learnt mixture prior's Gaussians (0: N(0, I))
    dropout: float = 0.0  # pixelcnn: in each layer's residual branch
    levels: int | None = None  # intensity levels [digits 17, else 256]
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 0
    epochs: int = 20
    batch_size: int = 64
    image_size: int | None = None
    val_split: float = 0.2
    seed: int = 0
    precision: str = "fp32"
    fid_samples: int = 500  # digits: samples scored by fid_digits after each epoch

    def __post_init__(self) -> None:
        for name, valid in (("model", GENERATIVE_FAMILIES), ("optimizer", CHOICES["optimizer"]),
                            ("schedule", CHOICES["schedule"]), ("precision", PRECISIONS)):
            if getattr(self, name) not in valid:
                raise UsageError(f"invalid --{name} {getattr(self, name)!r}; "
                                 f"choose from {', '.join(valid)}")
        _require(self.epochs >= 1 and self.batch_size >= 1 and self.width >= 1
                 and self.layers >= 1 and self.latent_dim >= 1,
                 "--epochs, --batch-size, --width, --layers and --latent-dim must be at least 1")
        _require(self.levels is None or 2 <= self.levels <= 256, "--levels must be 2 to 256")
        _require(0 <= self.prior_components <= 4096, "--prior-components must be 0 to 4096")
        _require(0 <= self.dropout < 1, f"--dropout {self.dropout}: expected 0 <= P < 1")
        _require(0 < self.val_split < 1, f"--val-split {self.val_split}: expected 0 < S < 1")
        _require(self.warmup >= 0 and self.weight_decay >= 0,
                 "--warmup and --weight-decay must not be negative")
        _require(self.lr is None or self.lr > 0, "--lr must be positive")
        _require(self.fid_samples >= 2, "--fid-samples must be at least 2")
        _require(self.image_size is None or self.image_size >= 4, "--image-size must be >= 4")

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.0002 if self.model == "gan" else 0.001

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> GenerateConfig:
        return config_from_dict(cls, saved)
