"""Tasks for the masked transformer: each defines its pixel condition, padding, latent condition
mask and prompt token (MAGVIT's COMMIT, REFERENCE.md section 2). Registered in `TASKS`."""

from magvit.registry import Registry

TASKS: Registry = Registry("task")

__all__ = ["TASKS"]
