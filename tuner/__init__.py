"""tuner: find the best Triton Inference Server configuration of a model, measured for real."""

__version__ = "0.1.0"
