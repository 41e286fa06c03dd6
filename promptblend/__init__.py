"""promptblend core: errors, image sets, cached runs and the scoring text encoder."""

__version__ = "0.1.0"
