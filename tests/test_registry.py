"""The registry: complete against torchvision, helpful on typos, and free of torch at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cvtool.core.status import UsageError
from cvtool.models.registry import PACKAGE_DIR, TASKS, get_spec, list_models, resolve_reference


def test_import_does_not_load_torch() -> None:
    code = "import cvtool.models.registry, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE_DIR.parent)


def test_torchvision_classifiers_match_installed_torchvision() -> None:
    import torchvision.models

    ours = {spec.name: spec for spec in list_models("classify") if spec.source == "torchvision"}
    assert sorted(ours) == sorted(torchvision.models.list_models(module=torchvision.models))
    for name, spec in ours.items():
        assert resolve_reference(spec.builder) is torchvision.models.get_model_builder(name)
        assert resolve_reference(spec.weights) is torchvision.models.get_model_weights(name).DEFAULT


def test_torchvision_detectors_match_installed_torchvision() -> None:
    import torchvision.models
    import torchvision.models.detection

    ours = {spec.name: spec for task in ("detect", "segment-instance")
            for spec in list_models(task) if spec.source == "torchvision"}
    expected = torchvision.models.list_models(module=torchvision.models.detection)
    assert sorted(ours) == sorted(expected)
    for name, spec in ours.items():
        default = torchvision.models.get_model_weights(name).DEFAULT
        assert resolve_reference(spec.builder) is torchvision.models.get_model_builder(name)
        assert resolve_reference(spec.weights) is default
        assert default.meta["categories"]
        # Exactly the models that output masks are registered for segment-instance.
        assert (spec.task == "segment-instance") == name.startswith("maskrcnn")


def test_torchvision_semantic_segmenters_match_installed_torchvision() -> None:
    import torchvision.models
    import torchvision.models.segmentation

    ours = {spec.name: spec for spec in list_models("segment-semantic")
            if spec.source == "torchvision"}
    expected = torchvision.models.list_models(module=torchvision.models.segmentation)
    assert sorted(ours) == sorted(expected)
    for name, spec in ours.items():
        default = torchvision.models.get_model_weights(name).DEFAULT
        assert resolve_reference(spec.builder) is torchvision.models.get_model_builder(name)
        assert resolve_reference(spec.weights) is default
        assert default.meta["categories"][0] == "__background__"


def test_smp_architectures_match_installed_smp() -> None:
    import segmentation_models_pytorch as smp

    ours = {spec.name: spec for spec in list_models("segment-semantic") if spec.source == "smp"}
    # DPT takes only ViT encoders at one fixed input size: not offered with --encoder.
    expected = {f"smp:{key}" for key in smp.MODEL_ARCHITECTURES_MAPPING} - {"smp:dpt"}
    assert set(ours) == expected and len(ours) == 11
    for name, spec in ours.items():
        assert resolve_reference(spec.builder) is smp.MODEL_ARCHITECTURES_MAPPING[name[4:]]
        assert spec.weights is None and spec.task == "segment-semantic"


def test_house_entries_point_at_shipped_checkpoints() -> None:
    for spec in list_models():
        if spec.source == "house":
            assert spec.checkpoint_path.is_file(), spec


def test_list_models_filters_by_task_and_sorts() -> None:
    classifiers = list_models("classify")
    assert classifiers and all(spec.task == "classify" for spec in classifiers)
    assert [spec.name for spec in classifiers] == sorted(spec.name for spec in classifiers)
    assert {spec.task for spec in list_models()} <= set(TASKS)


def test_unknown_task_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="classify"):
        list_models("clasify")


def test_get_spec_finds_a_model() -> None:
    spec = get_spec("resnet50")
    assert (spec.task, spec.source, spec.builder) == ("classify", "torchvision",
                                                      "torchvision.models:resnet50")
    assert spec.weights == "torchvision.models:ResNet50_Weights.IMAGENET1K_V2"


@pytest.mark.parametrize("typo", ["resnet5", "ResNet50", "resnet-50"])
def test_unknown_name_suggests_close_matches(typo: str) -> None:
    with pytest.raises(UsageError) as caught:
        get_spec(typo)
    message = caught.value.message
    assert "resnet50" in message and "cvtool models" in message and "\n" not in message


def test_unknown_name_without_close_matches_still_points_at_listing() -> None:
    with pytest.raises(UsageError, match="cvtool models"):
        get_spec("zzzzzz")


@pytest.mark.parametrize("reference", ["no_such_module:thing",
                                       "cvtool.models.registry:NoSuch", "cvtool"])
def test_bad_reference_is_a_usage_error(reference: str) -> None:
    with pytest.raises(UsageError, match="cannot resolve"):
        resolve_reference(reference)
