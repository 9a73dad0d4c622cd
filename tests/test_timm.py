"""timm's models (`timm:<architecture>[.<tag>]`): classify and train with the tag's weights from
the Hugging Face cache through timm's own loading, preprocessing equal to timm's, named weights,
offline rules, the `cvtool models` listing, and no `import timm` for anything else.

Weights cannot be downloaded here, so the tests write what a download leaves: a Hugging Face
cache holding timm's tiny test architectures (`test_efficientnet`, `test_vit`) with seeded
random weights, laid out as huggingface_hub lays it out (refs/main -> snapshots/<rev>/)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import ROOT, cvtool, cvtool_process

PHOTOS = ROOT / "sample_images" / "photos"
TAGGED = {"test_efficientnet": "r160_in1k", "test_vit": "r160_in1k"}
REVISION = "0" * 40


def _write_cache(cache: Path) -> dict[str, Path]:
    import timm
    import torch
    from safetensors.torch import save_file

    files = {}
    for seed, (architecture, tag) in enumerate(TAGGED.items()):
        repo = cache / f"models--timm--{architecture}.{tag}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(REVISION)
        snapshot = repo / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        torch.manual_seed(seed)
        module = timm.create_model(architecture, pretrained=False)
        with torch.no_grad():  # a classifier that is not near-uniform: scores worth comparing
            for parameter in module.parameters():
                parameter.mul_(3.0)
        files[architecture] = snapshot / "model.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()},
                  str(files[architecture]))
    return files


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    return cache, _write_cache(cache)


@pytest.fixture
def cached(hub_cache, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache[0]))
    return hub_cache[1]


def _timm_reference(architecture: str, weights: Path, image_path: Path):
    """What a user's own timm loop computes for one image: top index and its probability."""
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from timm.data import create_transform, resolve_data_config

    module = timm.create_model(f"{architecture}.{TAGGED[architecture]}", pretrained=False)
    module.load_state_dict(load_file(str(weights)))
    module.eval()
    transform = create_transform(**resolve_data_config({}, model=module))
    with torch.no_grad():
        probabilities = module(transform(Image.open(image_path).convert("RGB"))[None]).softmax(1)
    score, index = probabilities[0].max(0)
    return int(index), float(score)


@pytest.mark.parametrize("architecture", sorted(TAGGED))
def test_classify_gives_what_timms_own_loop_gives(architecture: str, cached) -> None:
    from cvtool.models.efficientnet_lite import imagenet_categories

    result = cvtool("classify", PHOTOS, "-m", f"timm:{architecture}", "--topk", "1")
    assert result.code == 0, result.stderr
    labels = imagenet_categories()
    for record in result.records():
        assert record["model"] == f"timm:{architecture}.{TAGGED[architecture]}"
        index, score = _timm_reference(architecture, cached[architecture], Path(record["path"]))
        top = record["predictions"][0]
        assert top["index"] == index and top["label"] == labels[index]
        assert top["score"] == pytest.approx(score, rel=1e-4, abs=1e-6)


def test_preprocessing_equals_timms_for_every_kind_of_config() -> None:
    """Every distinct evaluation transform among timm's pretrained configs (size, crop_pct,
    crop mode, interpolation, mean/std): cvtool's rebuild equals create_transform's output
    exactly, or the config is refused with a reason."""
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    from cvtool.core.status import UsageError
    from cvtool.models.classification import classification_transforms
    from cvtool.models.timm_models import preprocessing

    image = Image.open(PHOTOS / "chelsea.jpg").convert("RGB")  # 451x300: not square
    kinds: dict[tuple, dict] = {}
    for name in timm.list_pretrained():
        config = get_pretrained_cfg(name).to_dict()
        data = resolve_data_config({}, pretrained_cfg=config)
        kinds.setdefault(tuple(sorted((k, str(v)) for k, v in data.items())), config)
    assert len(kinds) > 30
    checked = refused = 0
    for config in kinds.values():
        theirs = create_transform(**resolve_data_config({}, pretrained_cfg=config))(image)
        try:
            ours = classification_transforms(preprocessing(config))(image)
        except UsageError as error:
            assert "crop mode" in str(error)
            refused += 1
            continue
        assert ours.shape == theirs.shape and torch.equal(ours, theirs), config["architecture"]
        checked += 1
    assert refused <= 8 and checked >= len(kinds) - refused


def test_tags_and_named_weights(cached) -> None:
    tagged = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_vit.r160_in1k")
    named = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_vit",
                   "--weights", "r160_in1k")
    assert tagged.code == named.code == 0, tagged.stderr + named.stderr
    assert tagged.records()[0]["predictions"] == named.records()[0]["predictions"]
    wrong = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_vit", "--weights", "in22k")
    assert wrong.code == 2 and "r160_in1k" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    typo = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_vitt")
    assert typo.code == 2 and "did you mean timm:test_vit" in typo.stderr
    malformed = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:Bad Name")
    assert malformed.code == 2 and "timm:<architecture>" in malformed.stderr


def test_random_and_file_weights(cached, tmp_path: Path) -> None:
    import timm
    import torch

    random = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_vit", "--weights", "none")
    assert random.code == 0 and "random weights" in random.stderr
    torch.manual_seed(5)
    state = timm.create_model("test_efficientnet", num_classes=7).state_dict()
    torch.save(state, tmp_path / "seven.pt")
    own = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "timm:test_efficientnet",
                 "--weights", tmp_path / "seven.pt", "--topk", "7")
    assert own.code == 0, own.stderr
    assert {p["label"] for p in own.records()[0]["predictions"]} == {f"class_{i}"
                                                                      for i in range(7)}


def test_offline_and_without_network_uncached_weights_are_exit_3_in_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    no_network = cvtool_process("classify", PHOTOS / "coffee.jpg", "-m", "timm:resnet18",
                                env={"CVTOOL_OFFLINE": "", "HF_HOME": "/nonexistent/hf"})
    assert time.monotonic() - started < 30  # huggingface_hub alone retries for ~25 s
    offline = cvtool_process("classify", PHOTOS / "coffee.jpg", "-m", "timm:resnet18",
                             env={"CVTOOL_OFFLINE": "1", "HF_HOME": "/nonexistent/hf"})
    for result in (no_network, offline):
        assert result.code == 3, result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "cvtool models pull timm:resnet18.a1_in1k" in result.stderr
    assert "CVTOOL_OFFLINE=1" in offline.stderr


def test_models_pull_finds_the_cached_file(cached) -> None:
    pulled = cvtool("models", "pull", "timm:test_vit")
    assert pulled.code == 0, pulled.stderr
    assert Path(pulled.stdout.strip()) == cached["test_vit"]


def test_models_lists_timms_pretrained_models_with_counted_figures(cached) -> None:
    import timm

    listed = cvtool("models", "--filter", "timm:test_*", "--format", "jsonl")
    assert listed.code == 0, listed.stderr
    rows = {row["name"]: row for row in listed.records()}
    assert sorted(rows) == sorted(f"timm:{name}" for name in timm.list_pretrained("test_*"))
    vit = rows["timm:test_vit.r160_in1k"]
    expected = sum(p.numel() for p in timm.create_model("test_vit").parameters())
    assert vit["cached"] is True and vit["params"] == expected and vit["gflops"] > 0
    assert vit["input_size"] == 160 and vit["size_mb"] > 0
    assert rows["timm:test_convnext.r160_in1k"]["cached"] is False


def test_every_timm_pretrained_name_resolves() -> None:
    """The registry's completeness for timm: each name timm lists is one cvtool accepts, with
    its own tag and config (nothing built, nothing downloaded)."""
    import timm

    from cvtool.models.registry import get_spec
    from cvtool.models.timm_models import pretrained_config, resolve

    names = timm.list_pretrained()
    assert len(names) > 1000
    for name in names:
        spec = get_spec(f"timm:{name}")
        assert spec.task == "classify" and spec.source == "timm"
        architecture, tag = resolve(spec.name)
        assert f"{architecture}.{tag}" == name
        assert pretrained_config(architecture, tag)["architecture"] == architecture


def test_train_classify_fine_tunes_a_timm_model_and_the_run_classifies(cached,
                                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = cvtool("train", "classify", "--data", "digits", "--model", "timm:test_efficientnet",
                     "--weights", "default", "--image-size", "32", "--epochs", "1",
                     "--batch-size", "64", "--workers", "0", "-o", run)
    assert trained.code == 0, trained.stderr
    meta = json.loads((run / "best.json").read_text()) if (run / "best.json").exists() else None
    sidecars = [json.loads(p.read_text()) for p in run.rglob("*.json")
                if "architecture" in p.read_text()]
    meta = meta or sidecars[0]
    assert meta["architecture"] == {"builder": "timm:create_model", "kwargs": {
        "model_name": "test_efficientnet", "num_classes": 10, "pretrained": False}}
    # The tag's preprocessing at the trained size: crop 32, resize floor(32 / crop_pct).
    assert meta["preprocessing"]["crop_size"] == 32
    assert meta["preprocessing"]["resize_size"] == math.floor(32 / 0.95)
    assert "class head starts untrained" in trained.stderr
    records = cvtool("classify", ROOT / "sample_images" / "digits", "-m", run)
    assert records.code == 0, records.stderr
    assert len(records.records()) == 20 and all(r["ok"] for r in records.records())


def test_train_classify_from_scratch(cached, tmp_path: Path) -> None:
    trained = cvtool("train", "classify", "--data", "digits", "--model", "timm:test_vit",
                     "--weights", "none", "--image-size", "32", "--epochs", "1",
                     "--batch-size", "64", "--workers", "0", "-o", tmp_path / "run")
    assert trained.code == 0, trained.stderr
    assert json.loads(trained.stdout.splitlines()[-1])["val_accuracy"] >= 0


def test_timm_is_imported_only_for_timm_models() -> None:
    code = ("import sys; from cvtool.cli.app import main; sys.argv = ['cvtool', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TIMM' if 'timm' in sys.modules else 'NO-TIMM', file=sys.stderr)")
    # (A digits-cnn run: tests/test_preprocess.py, which keeps timm out of it too.)
    for args in (["--help"], ["classify", "--help"], ["models", "--filter", "resnet"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        assert done.stderr.strip().endswith("NO-TIMM"), (args, done.stderr[-300:])


def test_efficientnet_lite0_figures_are_counted_on_its_architecture() -> None:
    from cvtool.models import efficientnet_lite as lite
    from cvtool.models.catalog import counted

    params, gflops = counted(lite.ARCHITECTURE, None, {"num_classes": 1000,
                                                      "input_size": (3, 224, 224)})
    assert params == lite.PARAMS and gflops == pytest.approx(lite.GFLOPS, abs=1e-3)
