"""Datasets: digits, image folders, COCO detection sets, mask folders, synthetic shapes."""
