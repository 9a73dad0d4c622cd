"""Generative models: PixelCNN, a convolutional VAE and a DCGAN-style GAN, with digits FID.

Every family speaks the same data contract, so one training loop and `cvtool generate` serve them
all: a batch is a float tensor of images in [0, 1], shape (N, C, H, W), C = 1 (grey) or 3 (RGB),
on the model's device; samples come back the same way, on the CPU. Intensities are quantised to
`levels` evenly spaced values where a family models them discretely (PixelCNN, the VAE's decoder):
digits have 17 (0..16), 8-bit images 256.

Per family (see each module): a builder with JSON-serialisable kwargs for checkpoints,
`training_losses(...) -> {"loss": Tensor, ...}` for one batch (the GAN has one per player),
evaluation (`pixelcnn.bits_per_dim`, `vae.elbo`, `vae.importance_log_likelihood`) and `sample`.
`checkpoint.checkpoint_meta` describes a trained model for
`cvtool.models.checkpoint.save_checkpoint`, and `checkpoint.load_generative` loads it back (a run
directory, a file or a house model name).

Nothing here imports torch at package import: the CLI names this package without paying for it.
"""

FAMILIES = ("pixelcnn", "vae", "gan")
