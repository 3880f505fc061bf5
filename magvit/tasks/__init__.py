"""Tasks for the masked transformer: each defines its pixel condition, padding, latent condition
mask and prompt token (MAGVIT's COMMIT, section 3.2). Registered in `TASKS`: cg, uncond,
fp, fi, opc, opv, oph, opd, ipc, ipd, cfp (`magvit.tasks.video`) and edit, inpaint, outpaint (images
with a user region, `magvit.tasks.image`)."""

from magvit.tasks import image, video  # register the tasks
from magvit.tasks.base import (
    CONDITION_RULES,
    NO_OPTIONS,
    PADDINGS,
    RULE_BEFORE_V2,
    TASKS,
    Condition,
    Layout,
    Task,
    TaskOptions,
    build_task,
    check_rule,
    commit_inputs,
    latent_condition,
    layout_of,
    prefix_tokens,
    rule_of,
)

__all__ = [
    "CONDITION_RULES",
    "NO_OPTIONS",
    "PADDINGS",
    "RULE_BEFORE_V2",
    "TASKS",
    "Condition",
    "Layout",
    "Task",
    "TaskOptions",
    "build_task",
    "check_rule",
    "commit_inputs",
    "image",
    "latent_condition",
    "layout_of",
    "prefix_tokens",
    "rule_of",
    "video",
]
