"""The inference tasks and the one batch loop they run on."""
