"""`cvtool train generate` through the real entry point: each family trains on digits and its run
directory samples through `cvtool generate`; the GAN's players update only their own parameters;
channels follow the data; bad options are one-line usage errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cvtool.generative import gan
from cvtool.train.config import GenerateConfig
from cvtool.train.generate_run import GenerativeTrainer, load_images
from tests.clirun import cvtool

TINY = ("--epochs", "1", "--width", "8", "--layers", "1", "--latent-dim", "4",
        "--fid-samples", "50", "--batch-size", "128", "--device", "cpu", "-q")


def _summary(result) -> dict:
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.mark.parametrize(("family", "figure"), [
    ("pixelcnn", "nll_bits_per_dim"), ("vae", "elbo"), ("gan", "fid_digits")])
def test_each_family_trains_on_digits_and_its_run_samples(tmp_path, family, figure):
    run = tmp_path / family
    summary = _summary(cvtool("train", "generate", "--data", "digits", "--model", family,
                              *TINY, "-o", run))
    assert figure in summary and summary["fid_samples"] == 1000
    assert 0 < summary["fid_real_floor"] < summary["fid_digits"]
    assert summary["fid_ratio"] == pytest.approx(summary["fid_digits"] / summary["fid_real_floor"])
    assert sum(summary["digit_shares"]) == pytest.approx(1.0, abs=1e-3)
    for name in ("best.safetensors", "last.json", "metrics.jsonl", "curves.png", "samples.png",
                 "samples/epoch-0001.png"):
        assert (run / name).is_file(), name
    assert Image.open(run / "samples.png").size[0] > 8 * 8
    meta = json.loads((run / "best.json").read_text())
    assert meta["task"] == "generate" and meta["generative"]["family"] == family
    assert meta["generative"]["channels"] == 1 and meta["generative"]["image_size"] == [8, 8]
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert "fid_digits" in row and "train_loss" in row
    if family == "pixelcnn":
        assert 0 < summary["nll_bits_per_dim"] < 5  # 17 levels: log2(17) = 4.09 at worst
        assert "train_nll_bits_per_dim" in row
    if family == "vae":
        assert summary["elbo"] == pytest.approx(summary["val_reconstruction"] - summary["val_kl"],
                                                rel=1e-4)
    result = cvtool("generate", "--model", run, "--num", "3", "--seed", "1", "-o",
                    tmp_path / "samples", "-q")
    assert result.code == 0, result.stderr
    assert len(list((tmp_path / "samples").glob("*.png"))) == 3


def test_gan_players_update_only_their_own_parameters():
    config = GenerateConfig(data="digits", model="gan", width=8, latent_dim=4, batch_size=16)
    train, val, _ = load_images(config)
    torch.manual_seed(0)
    model = gan.gan(channels=1, image_size=8, latent_dim=4, width=8)
    reference = copy.deepcopy(model)
    trainer = GenerativeTrainer(model, config, train, val, torch.device("cpu"), Path("."))
    batch = (train[:16],)
    torch.manual_seed(1)
    trainer.step(batch)
    # The discriminator's step alone, with the same draws of fakes:
    optimizer = torch.optim.Adam(reference.discriminator.parameters(), lr=config.resolved_lr,
                                 betas=(0.5, 0.999))
    torch.manual_seed(1)
    gan.discriminator_losses(reference, batch[0])["loss"].backward()
    optimizer.step()
    for mine, theirs in zip(model.discriminator.parameters(),
                            reference.discriminator.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-7)
    moved = [not torch.equal(a, b) for a, b in zip(model.generator.parameters(),
                                                   reference.generator.parameters())]
    assert all(moved)  # and the generator did take its own step


def test_channels_follow_the_data(tmp_path):
    for name, colour in (("grey", (90, 90, 90)), ("colour", (200, 30, 30))):
        for split, count in (("train", 6), ("val", 2)):
            folder = tmp_path / name / split / "only"
            folder.mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (12, 12), colour).save(folder / f"{index}.png")
        config = GenerateConfig(data=str(tmp_path / name), model="vae")
        train, val, description = load_images(config)
        channels = 1 if name == "grey" else 3
        assert train.shape == (6, channels, 12, 12) and val.shape == (2, channels, 12, 12)
        assert description["channels"] == channels


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "flow"), "--model"), (("--levels", "1"), "--levels"),
    (("--fid-samples", "1"), "--fid-samples")])
def test_bad_options_are_usage_errors(tmp_path, args, message):
    result = cvtool("train", "generate", "--data", "digits", *args, "-o", tmp_path / "x")
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_names_sample_grids_by_epoch(tmp_path):
    run = tmp_path / "gan"
    _summary(cvtool("train", "generate", "--data", "digits", "--model", "gan", *TINY, "-o", run))
    # A grid written just before a kill, for an epoch whose state never got committed:
    (run / "samples" / "epoch-0002.png").write_bytes(b"stale")
    resumed = _summary(cvtool("train", "generate", "--resume", run, "--epochs", "2", "-q"))
    assert resumed["epochs"] == 2
    grids = sorted(path.name for path in (run / "samples").glob("*.png"))
    assert grids == ["epoch-0001.png", "epoch-0002.png"]
    assert Image.open(run / "samples" / "epoch-0002.png").size[0] > 8
