"""PixelCNN, VAE and GAN: causality of the masks, the ELBO bound, the GAN losses, seeded
sampling, `cvtool generate` end to end, and digits FID."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment
from cvtool.generative import fid, gan, pixelcnn, vae
from cvtool.generative.checkpoint import checkpoint_meta
from cvtool.models import registry
from cvtool.models.checkpoint import save_checkpoint
from tests.clirun import ROOT, cvtool

TINY = {
    "pixelcnn": lambda: pixelcnn.pixelcnn(channels=1, levels=17, image_size=8, width=8,
                                          layers=1, kernel_size=3),
    "vae": lambda: vae.vae(channels=3, image_size=8, levels=17, latent_dim=4, width=4),
    "gan": lambda: gan.gan(channels=1, image_size=8, latent_dim=4, width=4),
}
MODES = {"pixelcnn": "L", "vae": "RGB", "gan": "L"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: a second thread only adds contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run directory per family, holding a tiny checkpoint with spread-out random weights."""
    root = tmp_path_factory.mktemp("generative")
    torch.manual_seed(0)
    dirs = {}
    for family, build in TINY.items():
        model = build()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0, 0.5)
        dirs[family] = root / family
        save_checkpoint(dirs[family] / "best.safetensors", model.state_dict(),
                        checkpoint_meta(model, {"note": "test"}))
    return dirs


@pytest.fixture(scope="module")
def real_digits() -> torch.Tensor:
    return fid.digits_tensor(part="train")[:, :1]  # grey: one channel of the RGB digits


def test_a_one_gaussian_mixture_prior_is_the_standard_normal():
    """With one component at N(0, I), the mixture's density, its KL estimate and its draws are
    the fixed prior's; a learnt mixture's draws come from its components."""
    torch.manual_seed(0)
    fixed = vae.vae(channels=1, image_size=8, levels=17, latent_dim=4, width=4)
    mixture = vae.vae(channels=1, image_size=8, levels=17, latent_dim=4, width=4,
                      prior_components=1)
    mixture.load_state_dict({**fixed.state_dict(), "prior.means": torch.zeros(1, 4),
                             "prior.log_vars": torch.zeros(1, 4), "prior.logits": torch.zeros(1)})
    latents = torch.randn(50, 4)
    assert torch.allclose(mixture.prior_log_prob(latents), fixed.prior_log_prob(latents))
    images = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        _, _, exact = vae.elbo(fixed, images)
        _, _, estimated = vae.elbo(mixture, images, samples=4000,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.allclose(estimated, exact, atol=0.15)
    # Two far-apart components, one weighted 3:1: the draws land around each in that ratio.
    two = vae.MixturePrior(2, 4)
    with torch.no_grad():
        two.means.copy_(torch.tensor([[10.0] * 4, [-10.0] * 4]))
        two.log_vars.fill_(-4)
        two.logits.copy_(torch.tensor([3.0, 1.0]).log())
    draws = two.draw(4000, torch.Generator().manual_seed(0))
    assert torch.equal(draws, two.draw(4000, torch.Generator().manual_seed(0)))
    assert abs((draws[:, 0] > 0).float().mean() - 0.75) < 0.03
    assert (draws.abs() - 10).abs().max() < 1.0


def test_vae_samples_are_the_decoders_most_likely_images():
    torch.manual_seed(0)
    model = TINY["vae"]().eval()
    latents = torch.randn(5, 4)
    with torch.no_grad():
        images = vae.decode(model, latents)
        modal = model.logits(latents).argmax(2)
    assert torch.equal(images, modal.float() / 16)


def _sight(model: pixelcnn.PixelCNN, size: int) -> dict[tuple[int, int, int], torch.Tensor]:
    """Per output subpixel (channel, row, column): where d logit / d input is non-zero,
    (C, H, W) booleans, through the whole network."""
    inputs = torch.randn(8, model.channels, size, size, requires_grad=True)  # some ReLUs open
    logits = model.network(inputs)
    seen = {}
    for row in range(size):
        for column in range(size):
            for channel in range(model.channels):
                (grad,) = torch.autograd.grad(logits[:, channel, :, row, column].sum(), inputs,
                                              retain_graph=True)
                seen[channel, row, column] = grad.abs().sum(0) != 0
    return seen


def _raster(size: int, channels: int) -> list[tuple[int, int, int]]:
    return [(k, r, c) for r in range(size) for c in range(size) for k in range(channels)]


@pytest.mark.parametrize("gated", [False, True])
def test_masks_never_see_the_current_or_later_subpixels(gated):
    """d logit(c, i, j) / d input is zero at every subpixel from (c, i, j) on in raster and
    R, G, B order, through a whole multi-layer colour PixelCNN of either layout."""
    torch.manual_seed(0)
    model = pixelcnn.pixelcnn(channels=3, levels=4, image_size=5, width=12, layers=2,
                              gated=gated).eval()
    order = _raster(5, 3)
    for (channel, row, column), seen in _sight(model, 5).items():
        here = order.index((channel, row, column))
        for k, r, c in order[here:]:
            assert not seen[k, r, c], ((channel, row, column), (k, r, c))
        # ... while it does see this pixel's earlier colours and its left neighbour.
        assert seen[:channel, row, column].all()
        assert column == 0 or seen[:, row, column - 1].all()


def test_the_gated_layout_has_no_blind_spot():
    """Every earlier subpixel reaches every output of the gated PixelCNN (its receptive field
    covers 6x6), while the residual layout misses pixels up and to the right."""
    torch.manual_seed(0)
    order = _raster(6, 3)
    unseen = {}
    for gated in (True, False):
        model = pixelcnn.pixelcnn(channels=3, levels=4, image_size=6, width=12, layers=4,
                                  kernel_size=5, gated=gated).eval()
        unseen[gated] = [(here, earlier) for here, seen in _sight(model, 6).items()
                         for earlier in order[:order.index(here)] if not seen[earlier]]
    assert unseen[True] == []
    # e.g. the pixel at (row 1, column 0) never sees (row 0, column 5): the blind spot.
    assert ((0, 1, 0), (0, 0, 5)) in unseen[False]


def test_mask_types_a_and_b_at_the_centre():
    a = pixelcnn.causal_mask(6, 3, 3, "A", colours=3)[:, :, 1, 1]
    b = pixelcnn.causal_mask(6, 6, 3, "B", colours=3)[:, :, 1, 1]
    assert a.tolist() == [[0, 0, 0]] * 2 + [[1, 0, 0]] * 2 + [[1, 1, 0]] * 2
    assert b[0].tolist() == [1, 1, 0, 0, 0, 0] and b[5].tolist() == [1] * 6


def test_pixelcnn_nll_and_bits_per_dim():
    model = TINY["pixelcnn"]()
    x_levels = torch.randint(0, 17, (3, 1, 8, 8))
    nll = pixelcnn.nll(model, x_levels)
    assert nll.shape == (3,) and (nll > 0).all()
    assert torch.allclose(pixelcnn.bits_per_dim(model, x_levels), nll / (64 * math.log(2)))
    losses = pixelcnn.training_losses(model, x_levels / 16)
    assert torch.allclose(losses["loss"], nll.mean() / 64)


@pytest.mark.parametrize("components", [0, 10])
def test_elbo_is_below_the_importance_sampled_log_likelihood(real_digits, components):
    torch.manual_seed(0)
    model = vae.vae(channels=1, image_size=8, levels=17, latent_dim=8, width=16,
                    prior_components=components)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        batch = real_digits[step * 32 % 1024:][:32]
        losses = vae.training_losses(model, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert losses["kl"] > 0 and losses["elbo"] < 0
    model.eval()
    batch = fid.digits_tensor(part="val")[:64, :1]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bound, reconstruction, kl = vae.elbo(model, batch, samples=16, generator=generator)
        log_likelihood = vae.importance_log_likelihood(model, batch, samples=256,
                                                       generator=generator)
    assert torch.allclose(bound, reconstruction - kl)
    assert (kl >= 0).all() if components == 0 else kl.mean() > 0  # a mixture's: estimated
    assert bound.mean() < log_likelihood.mean() < 0
    assert (bound < log_likelihood).float().mean() > 0.9  # image by image, up to MC noise


def test_generator_loss_is_the_non_saturating_one():
    logits = torch.tensor([-8.0, -1.0, 0.0, 2.5], requires_grad=True)
    loss = gan.generator_loss(logits)
    assert torch.allclose(loss, -torch.log(torch.sigmoid(logits)).mean())
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0] < -0.9 / 4  # a confidently rejected fake still gets a full gradient
    real, fake = torch.tensor([3.0, -1.0]), torch.tensor([0.5, -2.0])
    expected = (-torch.log(torch.sigmoid(real)).mean()
                - torch.log(1 - torch.sigmoid(fake)).mean()) / 2
    assert torch.allclose(gan.discriminator_loss(real, fake), expected)


def test_gan_losses_per_player_on_one_batch(real_digits):
    model = TINY["gan"]()
    batch = real_digits[:8]
    d = gan.discriminator_losses(model, batch, torch.Generator().manual_seed(0))
    d["loss"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    g = gan.generator_losses(model, batch, torch.Generator().manual_seed(0))
    assert set(d) == {"loss", "real_score", "fake_score"} and set(g) == {"loss", "fake_score"}
    assert g["loss"].requires_grad and 0 < float(g["fake_score"]) < 1


def test_pixelcnn_sampling_is_seeded_and_independent_of_the_batch_size():
    model = TINY["pixelcnn"]()
    calls = []

    def draw(batch_size: int, seed: int = 3) -> torch.Tensor:
        return pixelcnn.sample(model, 5, generator=torch.Generator().manual_seed(seed),
                               batch_size=batch_size, progress=lambda *a: calls.append(a))

    first = draw(2)
    assert calls[-1] == (3 * 64, 3 * 64)
    assert torch.equal(first, draw(5)) and not torch.equal(first, draw(5, seed=4))
    assert first.shape == (5, 1, 8, 8) and set((first * 16).round().unique().tolist()) <= \
        set(range(17))
    assert not torch.equal(first, pixelcnn.sample(model, 5, temperature=0.5,
                                                  generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("family", ["pixelcnn", "vae", "gan"])
def test_generate_from_a_run_directory(family, run_dirs, tmp_path):
    args = ["generate", "-m", run_dirs[family], "-n", "5", "--device", "cpu", "-b", "2"]
    first = cvtool(*args, "--seed", "7", "-o", tmp_path / "a", "--grid", tmp_path / "a.png")
    assert first.code == 0, first.stderr
    (summary,) = first.records()
    assert summary["family"] == family and summary["images"] == 5
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    for png in pngs:
        with Image.open(png) as image:
            assert image.size == (8, 8) and image.mode == MODES[family]
    with Image.open(tmp_path / "a.png") as grid:  # 3 x 2 cells of 32 px, 2 px gaps
        assert grid.size == (3 * 34 + 2, 2 * 34 + 2)
    assert (tmp_path / "a" / "run.json").is_file()
    again = cvtool(*args, "--seed", "7", "-o", tmp_path / "b", "--grid", tmp_path / "b.png")
    other = cvtool(*args, "--seed", "8", "-o", tmp_path / "c")
    assert again.code == other.code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert [p.read_bytes() for p in pngs] == [(tmp_path / "b" / p.name).read_bytes()
                                              for p in pngs]
    assert [p.read_bytes() for p in pngs] != [(tmp_path / "c" / p.name).read_bytes()
                                              for p in pngs]


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_generate_interpolates_between_latent_draws(family, run_dirs, tmp_path):
    result = cvtool("generate", "-m", run_dirs[family], "-n", "2", "--interpolate",
                    "--steps", "4", "--device", "cpu", "-o", tmp_path, "--grid",
                    tmp_path / "grid.png")
    assert result.code == 0, result.stderr
    assert result.records()[0]["images"] == 8
    assert len(list(tmp_path.glob("00000[01]_0[0-3].png"))) == 8
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (4 * 34 + 2, 2 * 34 + 2)  # a path per row


def test_generate_with_a_house_model_name(run_dirs, tmp_path, monkeypatch):
    checkpoint = run_dirs["gan"] / "best.safetensors"  # absolute: joins the package dir as is
    spec = registry.ModelSpec("digits-toy", "generate", "house", "cvtool.generative.gan:gan",
                              None, str(checkpoint))
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    result = cvtool("generate", "-m", "digits-toy", "-n", "3", "--grid", tmp_path / "g.png")
    assert result.code == 0, result.stderr
    assert result.records()[0]["model"] == "digits-toy" and (tmp_path / "g.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["-m", "{gan}", "-n", "-1"], "--num must be at least 1"),
    (["-m", "digits-gann"], "unknown model"),
    (["-m", "digits-cnn"], "is a classify model"),
    (["-m", "{pixelcnn}", "--interpolate"], "--interpolate needs a latent space"),
    (["-m", "{pixelcnn}", "--temperature", "0"], "--temperature must be above 0"),
    (["-m", "{vae}", "--temperature", "0.7"], "--temperature applies to PixelCNN only"),
    (["-m", "{gan}", "--steps", "3"], "--steps needs --interpolate"),
])
def test_bad_options_are_one_line_usage_errors(args, message, run_dirs, tmp_path):
    args = [arg.format(**run_dirs) for arg in args]
    result = cvtool("generate", *args, "-o", tmp_path / "out")
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert message in result.stderr and not (tmp_path / "out").exists()


def test_generate_help_never_imports_torch():
    script = ("import sys\nfrom cvtool.cli.app import run_cli\n"
              "assert run_cli(['generate', '--help']) == 0\n"
              "heavy = [m for m in ('torch', 'torchvision', 'PIL.Image') if m in sys.modules]\n"
              "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "--interpolate" in done.stdout


def test_fid_digits_is_zero_against_itself_and_far_above_the_floor_for_noise():
    classifier = fid.load_classifier(fid.CLASSIFIER)
    real = fid.digits_tensor(part="val")
    assert fid.fid_digits(real, real, classifier=classifier) < 1e-6
    floor = fid.real_floor(200, classifier=classifier)
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert 0 < floor < 0.2 * fid.fid_digits(noise, classifier=classifier)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pixelcnn_sampling_shows_a_bar_on_a_terminal_only(run_dirs, tmp_path):
    for stderr, shown in ((_Terminal(), True), (io.StringIO(), False)):
        env = Environment(stdout=io.StringIO(), stderr=stderr)
        code = run_cli(["generate", "-m", str(run_dirs["pixelcnn"]), "-n", "2", "--grid",
                        str(tmp_path / f"grid_{shown}.png")], env)
        assert code == 0
        assert ("━" in stderr.getvalue()) == shown
