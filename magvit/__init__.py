"""magvit: masked generative image and video models of the MAGVIT family in PyTorch."""

from magvit.errors import ConfigError, MagvitError

__version__ = "0.1.0"

__all__ = ["ConfigError", "MagvitError", "__version__"]
