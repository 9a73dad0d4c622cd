"""cvtool: computer vision from the command line, on PyTorch."""

__version__ = "0.1.0"
