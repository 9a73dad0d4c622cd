"""Inputs in, outputs out: decoding, source specs, record writers, artifacts (annotated images,
masks, overlays), COCO files. Pillow and numpy; no torch."""
