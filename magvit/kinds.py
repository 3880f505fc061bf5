"""Imports every module that registers a config kind or a family member, so that the registries
(`CONFIG_KINDS`, `DATASETS`, `TOKENIZERS`, `QUANTIZERS`, `TASKS`, `MASK_SCHEDULES`) are complete."""

import magvit.data  # noqa: F401
import magvit.quickstart  # noqa: F401
import magvit.reproduce  # noqa: F401
import magvit.sampling  # noqa: F401
import magvit.schedules  # noqa: F401
import magvit.tasks  # noqa: F401
import magvit.tokenizers  # noqa: F401
import magvit.training.tokenizer  # noqa: F401
import magvit.training.transformer  # noqa: F401
