"""magvit: masked generative image and video models of the MAGVIT family in PyTorch.

    from magvit import MagvitPipeline
    pipe = MagvitPipeline.from_pretrained("digits-video")
    videos = pipe.generate(classes=[3, 7], steps=12)     # (2, 3, T, H, W) in [-1, 1]

The public names below load on first use, so `import magvit` (and the `magvit` command's --help)
does not import torch.
"""

from magvit.errors import ConfigError, MagvitError

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "MagvitPipeline": "magvit.pipeline",
    "Samples": "magvit.pipeline",
    "ModelInfo": "magvit.release",
    "DecodeConfig": "magvit.decode",
    "Tokenizer": "magvit.tokenizers",
    "build_tokenizer": "magvit.tokenizers",
    "MaskedTransformer": "magvit.transformer",
    "build_transformer": "magvit.transformer",
}

__all__ = ["ConfigError", "MagvitError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'magvit' has no attribute {name!r}")
