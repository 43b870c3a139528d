"""apiwrap: certified predictions from black-box vision APIs by denoised smoothing."""

__version__ = "0.1.0"
