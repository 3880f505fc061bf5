"""`magvit generate | predict | interpolate | inpaint | outpaint | edit` and `magvit demo`.

The six sampling commands take a `kind: sample` YAML, key=value overrides and flags; every flag but
the inputs (--video / --image, --classes / --class) is made from a `SampleConfig` / `DecodeConfig`
field (magvit.cli.flags), so a setting, its default and its help are declared once, in the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from magvit.cli.base import arguments, command
from magvit.cli.flags import (
    add_config_flags,
    command_settings,
    config_arg,
    given,
    names,
    overrides_arg,
    overwrite_arg,
    split_config,
    word,
)
from magvit.errors import MagvitError

# the SampleConfig keys every sampling command takes as flags, in --help order
_COMMON = ("task", "prompt", "num", "batch_size", "decode", "seed", "out", "fps", "device", "dtype", "compile")
# command -> (its inputs: video, image, classes; its own config keys; help)
_COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "generate": (("classes",), (), "generate samples (class-conditional or unconditional) as MP4/GIF/PNG grids"),
    "predict": (("video", "classes"), ("start", "stride", "cond_frames"),
                "predict the next frames of a video from its first K"),
    "interpolate": (("video",), ("start", "stride"), "generate the frames between the first and the last frame of "
                    "a clip"),
    "inpaint": (("image", "video", "classes"), ("start", "stride", "box", "mask"),
                "regenerate a box or masked region of an image or video"),
    "outpaint": (("image", "video", "classes"), ("start", "stride", "box", "mask"),
                 "keep a box (or all but a mask) and generate the rest"),
    "edit": (("image", "video", "classes"), ("start", "stride", "box"),
             "regenerate a box of an image with a target class"),
}


def _input_args(p: argparse.ArgumentParser, inputs: tuple[str, ...]) -> None:
    """The inputs, which differ per command: the one `input` key read from --video or --image."""
    if "classes" in inputs:
        class_id = word(int, "--classes", "a class number", ", or use --class C")
        p.add_argument("--classes", dest="classes", type=class_id, nargs="+", action="extend", metavar="C",
                       help="classes of the samples, cycled (Python: classes=[...]; default 0, 1, 2, ...)")
        p.add_argument("--class", dest="classes", type=int, action="append", metavar="C",
                       help="one class; repeat for several (the same as --classes)")
    if "video" in inputs:
        p.add_argument("--video", help="input video (mp4, gif, webp, a folder of frames, bundled:NAME), framed as "
                       "the model's training clips")
    if "image" in inputs:
        p.add_argument("--image", help="input image (png, jpg, ...), resized and centre-cropped")


def _sample_args(name: str) -> Callable[[argparse.ArgumentParser], None]:
    inputs, own, _ = _COMMANDS[name]

    def add(p: argparse.ArgumentParser) -> None:
        from magvit.pipeline import FAMILIES
        from magvit.sampling import SampleConfig

        task = f"the task to run: {names(FAMILIES[name])} (default: the first the model was trained on that fits the " \
            "inputs)"

        config_arg(p, "sample", "see configs/generate/")
        dests = add_config_flags(p, SampleConfig, only=("checkpoint",))
        _input_args(p, inputs)
        dests |= add_config_flags(p, SampleConfig, only=(*own, *_COMMON), types_={"box": str}, helps={"task": task})
        p.set_defaults(dests={**dests, "classes": "classes", "video": "input", "image": "input"})
        overwrite_arg(p)
        overrides_arg(p)

    return add


def _sampling_command(name: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        from magvit.config import parse_overrides
        from magvit.inputs import parse_box
        from magvit.sampling import run_sampling, sample_settings

        config, overrides = split_config(args.config, args.overrides)
        if getattr(args, "video", None) and getattr(args, "image", None):
            raise MagvitError("give --video or --image, not both")
        flags = given(args, args.dests)
        if "box" in flags:  # T,L,H,W text, parsed here: a bad one is one line, exit 2
            flags["box"] = parse_box(flags["box"])
        settings = sample_settings(name, config, parse_overrides(overrides), flags)
        run_sampling(name, settings, overwrite=args.overwrite, source=config)

    run.__name__ = name
    return run


for _name, (_, _, _help) in _COMMANDS.items():
    command(_name, _help)(arguments(_sample_args(_name))(_sampling_command(_name)))


def _demo_args(p: argparse.ArgumentParser) -> None:
    from magvit import shipped
    from magvit.demo.session import DemoConfig

    config_arg(p, "demo", "its keys are the flags' names")
    shipped_names = names(shipped.names("checkpoints"))
    shown = (f"the model shown first: a model folder, a run folder, a shipped name ({shipped_names}; the page "
             "can switch between these) or a Hugging Face Hub id owner/name (default digits-video)")
    p.set_defaults(dests=add_config_flags(p, DemoConfig, helps={"checkpoint": shown}))
    overrides_arg(p)


@command("demo", "try a model on a web page (Gradio, the [demo] extra): every sampling command, its settings.yaml")
@arguments(_demo_args)
def demo(args: argparse.Namespace) -> None:
    from magvit.demo import launch
    from magvit.demo.session import DemoConfig

    cfg = command_settings(DemoConfig, args)[0]
    launch(cfg.checkpoint, port=cfg.port, host=cfg.host, device=cfg.device)
