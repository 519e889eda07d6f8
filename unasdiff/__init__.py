"""unasdiff: unsupervised single-channel source separation with diffusion source priors."""

__version__ = "0.1.0"
