"""infergate: a self-hosted Inference API. This module imports nothing heavy."""

__version__ = "0.1.0"
__all__ = ["__version__"]
