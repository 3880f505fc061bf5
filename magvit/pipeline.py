"""`MagvitPipeline`: a trained model folder as a Python object, the one sampling code path.

    from magvit import MagvitPipeline

    pipe = MagvitPipeline.from_pretrained("digits-video")          # a shipped name, a folder or a Hub id
    videos = pipe.generate(classes=[3, 7], num=4, steps=12, guidance=2.0, seed=0)   # (4, 3, T, H, W)
    future = pipe.predict("bundled:carphone", cond_frames=5)      # a path, bundled:NAME or a tensor
    pipe.save(videos, "samples.gif")

Every method returns videos (N, 3, T, H, W) in [-1, 1] (float32, on the CPU); N = inputs x `num`.
The `magvit generate | predict | interpolate | inpaint | outpaint | edit` commands call `sample`,
the method every task method goes through, so the command line and Python give the same samples for
the same settings. Decoding options (`steps`, `schedule`, `temperature`, `choice_temperature`,
`top_k`, `top_p`, `guidance`, `guidance_schedule`, `paste_back`: keep the given pixels, on by
default) are the fields of `magvit.decode.DecodeConfig`, given as keywords or as
`decode=DecodeConfig(...)`.

Task choice follows the commands: `generate` runs cg (class-conditional) or uncond, `predict` fp or
cfp, `interpolate` fi, `inpaint` / `outpaint` the fixed-region tasks (ipc, opc, ...) or, with a box or
mask, MaskGIT's image inpainting / outpainting, `edit` MaskGIT's class-conditional editing (section
4.3). An image task a model was not trained on runs with a trained task prompt that sees the same
kind of input (`PROMPTS`).
"""

from __future__ import annotations

import dataclasses
import shutil
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from magvit.config import check_values
from magvit.decode import DecodeConfig, check_decode_config, generate_video
from magvit.errors import MagvitError
from magvit.inputs import Input, TaskInputs, check_box, read_input, read_mask
from magvit.release import ModelInfo, find_model_folder, load_model_folder, write_model_folder
from magvit.runtime import autocast, compile_tokenizer, default_tf32, resolve_device, torch_dtype
from magvit.tasks import TASKS, Condition, Task, TaskOptions, check_rule

# command -> the tasks it runs, in order of preference when the caller names none
FAMILIES: dict[str, tuple[str, ...]] = {
    "generate": ("cg", "uncond"),
    "predict": ("fp", "cfp"),
    "interpolate": ("fi",),
    "inpaint": ("inpaint", "ipc", "ipd"),
    "outpaint": ("outpaint", "opc", "opv", "oph", "opd"),
    "edit": ("edit",),
}


def check_family(command: str, task: str, where: str = "") -> None:
    """One MagvitError line where `task` is unknown or is not one the sampling `command` runs (`where`:
    the file the task was read from, as a prefix)."""
    TASKS[task]  # an unknown name: one line listing the tasks
    if task not in FAMILIES[command]:
        runs = next(c for c, tasks in FAMILIES.items() if task in tasks)
        raise MagvitError(f"{where}task '{task}' runs with `magvit {runs}` (MagvitPipeline.{runs}), not "
                          f"`magvit {command}`")


# an image task the model was not trained on runs with the first of these prompts it was trained on
PROMPTS: dict[str, tuple[str, ...]] = {
    "edit": ("cg",),
    "inpaint": ("ipc", "ipd", "uncond", "cg"),
    "outpaint": ("opc", "opv", "oph", "opd", "uncond", "cg"),
}


@dataclass
class Samples:
    """What `MagvitPipeline.sample` made: the videos, the condition they came from, the task and prompt."""

    videos: Tensor  # (N, 3, T, H, W) in [-1, 1], float32 on the CPU
    condition: Tensor | None  # (B, 3, T, H, W) the padded condition clips (None for cg / uncond)
    task: str
    prompt: str
    num: int  # samples per condition clip: videos[i] comes from condition[i // num]
    frames: tuple[int, ...] | None = None  # the input's frames read (indices into the file), None: no file read


class MagvitPipeline:
    """A masked transformer, its tokenizer and what they were trained for (`ModelInfo`)."""

    def __init__(self, model: nn.Module, tokenizer: nn.Module, info: ModelInfo, directory: Path | None = None,
                 dtype: torch.dtype | str | None = None):
        self.model, self.tokenizer, self.info, self.directory = model.eval(), tokenizer.eval(), info, directory
        self.dtype = torch_dtype(dtype) if isinstance(dtype, str) else dtype
        self.inputs: list[Path] = []  # the files read as inputs and masks: `save` never writes over them

    @classmethod
    def from_pretrained(cls, name: str | Path, device: str | torch.device = "auto",
                        dtype: torch.dtype | str | None = None, revision: str | None = None,
                        compile: bool = False) -> MagvitPipeline:
        """Load a model folder: a path (a model folder or a run folder holding `model/`), a shipped name
        (`digits-video`), or a Hugging Face Hub id (`owner/name`, at `revision`), in that order.
        `device` "auto" (the default, as on the command line) picks CUDA when there is one, else the
        CPU; "cpu", "cuda" or "cuda:N" choose. `dtype` (torch.bfloat16 / float16, or "bf16" /
        "fp16") runs the forward passes under autocast (the weights stay float32; quantizers and
        logits stay fp32, see magvit.runtime). `compile` compiles the tokenizer's encoder and decoder
        (the transformer is compiled by the decode loop: `DecodeConfig.compile`). On CUDA, fp32
        matmuls use TF32 unless `magvit.runtime.use_tf32(False)` was called."""
        default_tf32()
        device = resolve_device(device)  # a bad name, or CUDA where there is none: one line
        directory = find_model_folder(name, revision)
        model, tokenizer, info = load_model_folder(directory, device)
        if compile:
            compile_tokenizer(tokenizer)
        return cls(model, tokenizer, info, directory, dtype)

    # -- what the model is ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def clip(self) -> tuple[int, int, int]:
        """(frames, height, width) of the clips the model makes."""
        return self.info.clip

    @property
    def name(self) -> str:
        return str(self.directory) if self.directory is not None else "this model"

    def __repr__(self) -> str:
        t, h, w = self.clip
        return (f"MagvitPipeline({self.name}: {t}x{h}x{w} clips, tasks {', '.join(self.info.tasks)}, "
                f"{self.info.num_classes} classes, {self.device})")

    # -- the tasks ----------------------------------------------------------------------------------

    def generate(self, classes: Sequence[int] | None = None, num: int | None = None, **kwargs: object) -> Tensor:
        """`num` samples (default: one per class given, else 1) of class-conditional generation (the
        classes cycled; default 0, 1, 2, ...) or unconditional generation."""
        return self.sample("generate", classes=classes, num=num, **kwargs).videos

    def predict(self, video: Input, cond_frames: int | None = None, **kwargs: object) -> Tensor:
        """The frames after the first `cond_frames` (default: as trained) of `video`."""
        return self.sample("predict", input=video, cond_frames=cond_frames, **kwargs).videos

    def interpolate(self, video: Input, **kwargs: object) -> Tensor:
        """The frames between the first and the last frame of `video`."""
        return self.sample("interpolate", input=video, **kwargs).videos

    def inpaint(self, video: Input, box: Sequence[int] | None = None, mask: str | Path | Tensor | None = None,
                **kwargs: object) -> Tensor:
        """Regenerate a box (top, left, height, width in the model's pixels) or a mask (H, W; True or
        white = generate) of an image or video; with neither, the model's fixed central region (ipc)."""
        return self.sample("inpaint", input=video, box=box, mask=mask, **kwargs).videos

    def outpaint(self, video: Input, box: Sequence[int] | None = None, mask: str | Path | Tensor | None = None,
                 **kwargs: object) -> Tensor:
        """Keep a box (or all but a mask) and generate the rest; with neither, a fixed-region task (opc, ...)."""
        return self.sample("outpaint", input=video, box=box, mask=mask, **kwargs).videos

    def edit(self, image: Input, classes: Sequence[int] | None = None, box: Sequence[int] | None = None,
             mask: str | Path | Tensor | None = None, **kwargs: object) -> Tensor:
        """Regenerate a box or mask of an image with a target class (MaskGIT section 4.3)."""
        return self.sample("edit", input=image, classes=classes, box=box, mask=mask, **kwargs).videos

    # -- the one code path --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, command: str, inputs: TaskInputs | None = None, *, num: int | None = None,
               batch_size: int = 16, seed: int = 0, decode: DecodeConfig | None = None, progress: bool = False,
               on_step: Callable[[int, int], None] | None = None, **keywords: object) -> Samples:
        """Run one of the commands (`FAMILIES`) on `inputs` (a `TaskInputs`, or the `SampleConfig` built on
        it): pick the task and prompt, build the condition from the input (its frames from `start`,
        `stride` apart: default the model's trained stride), decode `num` samples per input clip
        (default: one per class given, else 1; the same default as the command line's --num) in batches
        of `batch_size` with one generator seeded by `seed`. `keywords` set single fields: TaskInputs'
        (`input=`, `cond_frames=`, `box=`, ...) or DecodeConfig's (`steps=`, `guidance=`, ...). Every
        argument is checked as the command line checks it: a wrong type or value is one MagvitError line.
        `on_step(done, total)` follows the decode steps of all batches (a progress bar: `magvit demo`)."""
        from tqdm.auto import tqdm

        if command not in FAMILIES:
            raise MagvitError(f"unknown sampling command {command!r} (one of: {', '.join(FAMILIES)})")
        inputs, cfg = task_inputs(inputs, keywords), decode_config(decode, keywords)
        checked = check_values(dict(num=num, batch_size=batch_size, seed=seed), _SAMPLE_HINTS, "MagvitPipeline")
        num = sample_count(checked["num"], checked["batch_size"], inputs.classes)
        check_decode_config(cfg)  # before any work: a bad schedule or temperature is one line
        region = inputs.box is not None or inputs.mask is not None
        task, prompt = self.pick_task(command, inputs.task, inputs.prompt, bool(inputs.classes), region)
        cond, frames = self._condition(task, inputs)
        total = cond.tokens.shape[0] * num
        labels = self._classes(inputs.classes, total, TASKS.build(prompt).use_class, prompt)
        with tqdm(total=total, desc=f"{command} ({task})", unit="sample", disable=not progress,
                  dynamic_ncols=True) as bar:
            # the condition of sample i is input clip i // num
            videos, _ = self.decode_batches(prompt, cfg, seed, total, batch_size, classes=labels,
                                            condition=lambda i, a, b: _select(cond, torch.arange(a, b) // num),
                                            on_step=on_step, done=bar.update)
        shown = None if task in ("cg", "uncond") else cond.pixels.float().clamp(-1, 1).cpu()
        return Samples(videos, shown, task, prompt, num, frames)

    @torch.no_grad()
    def decode_batches(self, prompt: str, cfg: DecodeConfig, seed: int, total: int, batch_size: int, *,
                       condition: Callable[[int, int, int], Condition] | None = None, classes: Tensor | None = None,
                       on_step: Callable[[int, int], None] | None = None,
                       done: Callable[[int], object] | None = None) -> tuple[Tensor, Tensor]:
        """The one decode path (`sample`, the evaluator behind every published score, the quickstart):
        `total` samples of task prompt `prompt` in batches of `batch_size`, with one generator seeded by
        `seed` across the batches. Batch k, samples [a, b), decodes `condition(k, a, b)` (None: cg /
        uncond, the model's clip) with `classes[a:b]`. -> (videos (N, 3, T, H, W) in [-1, 1], float32, and
        their token ids (N, t, h, w), both on the CPU). `on_step(done, total)` counts the decode steps
        of all batches; `done(n)` is called after each batch of n samples."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        steps = -(-total // batch_size) * cfg.steps
        videos, ids = [], []
        for k, start in enumerate(range(0, total, batch_size)):
            end = min(start + batch_size, total)
            cond = None if condition is None else condition(k, start, end)
            cls = None if classes is None else classes[start:end].to(self.device)
            tick = None if on_step is None else lambda s, before=k * cfg.steps: on_step(before + s, steps)
            with self.autocast():
                video, made = generate_video(self.model, self.tokenizer, prompt, cfg, gen, cond=cond, classes=cls,
                                             batch=end - start, video_shape=self.clip, on_step=tick,
                                             return_ids=True)  # (n, 3, T, H, W), (n, t, h, w)
            videos.append(video.float().cpu())
            ids.append(made.cpu())
            if done is not None:
                done(end - start)
        return torch.cat(videos), torch.cat(ids)

    def pick_task(self, command: str, task: str | None = None, prompt: str | None = None, classes: bool = False,
                  region: bool = False) -> tuple[str, str]:
        """(task, prompt): the task to run (the given one, else the command's first task that fits the
        inputs, trained ones first) and the task prompt the model is run with: the task's own if the
        model was trained on it; for the image tasks (edit, inpaint, outpaint) of a model not trained on
        them, a trained task that sees the same kind of input (MaskGIT edits with its class-conditional
        model, section 4.3)."""
        trained = self.info.tasks

        def prompt_of(name: str) -> str | None:
            if prompt is not None:
                return prompt if prompt in trained else None
            return name if name in trained else next((p for p in PROMPTS.get(name, ()) if p in trained), None)

        if command == "edit" and prompt is None and prompt_of("edit") is None:
            raise MagvitError(f"`edit` regenerates a region as a class you choose: it needs a class-conditional "
                              f"model (trained with class labels, task cg); {self.name} was trained on "
                              f"{', '.join(trained)} with {self.info.num_classes or 'no'} classes (`inpaint` "
                              "regenerates a region without a class)")
        if task is not None:
            check_family(command, task)
            chosen = task
        else:
            takes_region = {t: bool({"box", "mask"} & set(TASKS.build(t).options)) for t in FAMILIES[command]}
            fitting = [t for t in FAMILIES[command] if takes_region[t] == region or command == "edit"]
            if classes:  # a class given: class-conditional tasks first
                fitting.sort(key=lambda t: not TASKS.build(t).use_class)
            chosen = next((t for t in fitting if t in trained), next((t for t in fitting if prompt_of(t)), None))
            if chosen is None and fitting and not region and command in ("inpaint", "outpaint"):
                raise MagvitError(f"give --box or --mask (box= or mask=): {self.name} was not trained on the "
                                  f"fixed-region tasks {', '.join(fitting)} (it was trained on {', '.join(trained)})")
            if chosen is None:
                raise MagvitError(f"{self.name} was trained on task(s) {', '.join(trained)}; `{command}` needs a "
                                  f"model trained on one of {', '.join(FAMILIES[command])}")
        used = prompt_of(chosen)
        if used is None:
            asked = f"'{prompt}' (prompt)" if prompt is not None else f"'{chosen}'"
            raise MagvitError(f"{self.name} was trained on task(s) {', '.join(trained)}, not {asked}")
        return chosen, used

    @torch.no_grad()
    def condition(self, task: str, inputs: TaskInputs | None = None) -> Condition:
        """The condition (batch = input clips) of `task` on `inputs.input`, with the options the task was
        trained with, then the ones `inputs` sets. A task with nothing given (cg, uncond) needs no input;
        a one-frame input is an image for the tasks that work on one frame; a video must reach the last
        given frame (frame prediction from a shorter input repeats its last frame). A video file is read
        from frame `start`, `stride` frames apart (default: the stride the model was trained at) and
        framed as in training (`trained_framing`)."""
        return self._condition(task, task_inputs(inputs, {}))[0]

    def _condition(self, task: str, inputs: TaskInputs) -> tuple[Condition, tuple[int, ...] | None]:
        """`condition` and the input's frames read (None when no file was read)."""
        frames, height, width = self.clip
        self.inputs += inputs.files()
        rule = check_rule(inputs.condition_rule) if inputs.condition_rule is not None else self.info.condition_rule
        if inputs.box is not None:
            check_box(tuple(inputs.box), height, width)
        mask = read_mask(inputs.mask, (height, width)) if inputs.mask is not None else None  # (H, W)
        options = TaskOptions(cond_frames=inputs.cond_frames, box=inputs.box, mask=mask).over(self.info.options(task))
        built = TASKS.build(task)
        given, _ = built.masks(self.tokenizer, 1, frames, height, width, rule, options)  # (1, 1, T, H, W)
        read = None
        if not given.any():
            clip = torch.zeros(1, 3, frames, height, width)
        elif inputs.input is None:
            raise MagvitError(f"task {task} starts from a video or image: pass --video PATH / --image PATH "
                              "(input=PATH)")
        else:
            clip, read = self._input_clip(inputs, built, options, given)
        with self.autocast():
            return built.condition(clip.to(self.device), self.tokenizer, rule, options), read

    def trained_framing(self) -> tuple[int, int | None]:
        """(stride, crop_from) of the model's training clips: frames `stride` apart; each frame's
        centre square resized to `crop_from` pixels and the model's size cropped from its centre (None:
        the square resized to the model's size). Models trained on synthetic data: (1, None)."""
        data = dict(self.info.data or {})
        return int(data.get("stride") or 1), data.get("crop_from")

    def _input_clip(self, inputs: TaskInputs, task: Task, options: TaskOptions,
                    given: Tensor) -> tuple[Tensor, tuple[int, ...] | None]:
        """The input as (B, 3, T, H, W) at the model's size and the file's frames read: an image stays
        one frame for a task that works on one; a video is cut to the model's frames, or its last frame
        repeated up to them."""
        frames, height, width = self.clip
        trained_stride, crop_from = self.trained_framing()
        input, stride = inputs.input, inputs.stride
        clip, read = read_input(input, (height, width), max_frames=frames, start=inputs.start,
                                stride=trained_stride if stride is None else stride, crop_from=crop_from,
                                explicit_stride=stride is not None)  # (B, 3, T', H, W)
        if clip.shape[2] == 1 and task.min_latent_frames == 1 and options.cond_frames is None:
            return clip, read  # an image
        needed = int(given[0, 0].flatten(1).any(1).nonzero().max()) + 1  # up to the last frame with given pixels
        if clip.shape[2] < needed:
            what = input if isinstance(input, (str, Path)) else "the input"
            raise MagvitError(f"{what}: has {clip.shape[2]} frame(s); task {task.name} needs {needed} "
                              f"(this model's clips have {frames} frames)")
        if clip.shape[2] < frames:  # the frames past the given ones are never read
            clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, frames - clip.shape[2], -1, -1)], 2)
        return clip, read

    def _classes(self, classes: tuple[int, ...], total: int, use_class: bool, task: str) -> Tensor | None:
        """(total,) class of each sample, cycled from `classes` (default 0, 1, 2, ...), or None."""
        if not use_class:
            if classes:
                raise MagvitError(f"classes given (--classes / classes=), but task {task} takes no class")
            return None
        num_classes = self.info.num_classes
        if num_classes == 0:
            raise MagvitError(f"task {task} needs a class, but {self.name} was trained without classes")
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise MagvitError(f"class {bad[0]} (--classes / classes=): this model has classes 0 to {num_classes - 1}")
        pool = list(classes) or list(range(num_classes))
        return torch.tensor([pool[i % len(pool)] for i in range(total)])

    def autocast(self):
        """The pipeline's precision as a context: autocast to `dtype`, or nothing for fp32."""
        return autocast(self.device, self.dtype)

    # -- saving ------------------------------------------------------------------------------------------

    def save(self, videos: Tensor, path: str | Path, fps: float | None = None, nrow: int | None = None,
             overwrite: bool = False) -> Path:
        """Write videos (N, 3, T, H, W) in [-1, 1] as one grid: .mp4 / .gif / .avi / .webm / .mkv (clips)
        or .png / .jpg (first frames), atomically. An existing file is replaced only with `overwrite`; a
        file this pipeline read as an input or mask never is."""
        from magvit.fileio import check_outputs

        check_outputs([path], self.inputs, overwrite)
        return save_videos(videos, path, fps=fps or self.info.fps, nrow=nrow)

    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write a self-contained model folder: the transformer, a copy of the tokenizer, magvit.json,
        the source folder's summary.json (if any) and a model card README.md. An existing non-empty
        folder is written into only with `overwrite`; the folder this model was loaded from never is
        (its files are the inputs being copied)."""
        directory = Path(directory)
        if self.directory is not None and directory.is_dir() and directory.samefile(self.directory):
            raise MagvitError(f"{directory} is the folder this model was loaded from: its files are never written "
                              "over, even with overwrite=True; save to another folder")
        if directory.is_dir() and any(directory.iterdir()) and not overwrite:
            raise MagvitError(f"{directory} exists and is not empty: pass overwrite=True to write the model into "
                              "it, or save to another folder")
        if directory.exists() and not directory.is_dir():
            raise MagvitError(f"{directory} is a file: save the model to a folder")
        source = self.directory / "summary.json" if self.directory is not None else None
        if source is not None and source.is_file() and source.resolve() != (directory / "summary.json").resolve():
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, directory / "summary.json")  # before the card: it shows the scores
        write_model_folder(directory, self.model, self.tokenizer, self.info)
        return directory


# the arguments of `sample` that are neither TaskInputs nor DecodeConfig fields, checked against its annotations
_SAMPLE_HINTS = {k: v for k, v in typing.get_type_hints(MagvitPipeline.sample).items() if k in ("num", "batch_size",
                                                                                                   "seed")}
_INPUT_FIELDS = tuple(f.name for f in dataclasses.fields(TaskInputs))
_DECODE_FIELDS = tuple(f.name for f in dataclasses.fields(DecodeConfig))


def task_inputs(inputs: TaskInputs | None, keywords: Mapping[str, object]) -> TaskInputs:
    """`inputs` (default: none) with the TaskInputs fields among `keywords` set, checked as a config's keys
    are (magvit.config.check_values: `cond_frames=2.5` is one line, not a TypeError deep inside); classes
    may be a range or a tensor of class ids."""
    if inputs is not None and not isinstance(inputs, TaskInputs):
        raise MagvitError(f"inputs must be a TaskInputs (or a SampleConfig), got {type(inputs).__name__}")
    values = {name: getattr(inputs or TaskInputs(), name) for name in _INPUT_FIELDS}
    values.update({k: v for k, v in keywords.items() if k in _INPUT_FIELDS})
    classes = values["classes"]
    if isinstance(classes, (range, Tensor)):  # a range or a tensor of class ids: the list it holds
        values["classes"] = classes.tolist() if isinstance(classes, Tensor) else list(classes)
    elif classes is None:
        values["classes"] = ()
    return TaskInputs(**check_values(values, typing.get_type_hints(TaskInputs), "MagvitPipeline"))


def decode_config(decode: DecodeConfig | None, keywords: Mapping[str, object]) -> DecodeConfig:
    """`decode` (default DecodeConfig()) with the DecodeConfig fields among `keywords` set; a keyword of
    neither record, or a value of the wrong type (`steps=2.5`), is one line, as the same key in a YAML is."""
    unknown = sorted(set(keywords) - set(_DECODE_FIELDS) - set(_INPUT_FIELDS))
    if unknown:
        raise MagvitError(f"unknown option {', '.join(unknown)}; decoding options: {', '.join(sorted(_DECODE_FIELDS))}"
                          f"; task inputs: {', '.join(_INPUT_FIELDS)}")
    cfg = dataclasses.replace(decode or DecodeConfig(), **{k: v for k, v in keywords.items() if k in _DECODE_FIELDS})
    values = {name: getattr(cfg, name) for name in _DECODE_FIELDS}
    return DecodeConfig(**check_values(values, typing.get_type_hints(DecodeConfig), "MagvitPipeline"))


def sample_count(num: int | None, batch_size: int, classes: Sequence[int]) -> int:
    """`num` samples per input, by default one per class given, else 1 (the command line's --num and
    `SampleConfig.num` too); `num` and `batch_size` must be at least 1."""
    num = num if num is not None else max(len(classes), 1)
    if num < 1 or batch_size < 1:
        raise MagvitError(f"num (--num) and batch_size (--batch-size) must be >= 1, got {num} and {batch_size}")
    return num


def _select(cond: Condition, rows: Tensor) -> Condition:
    """The condition of each sample: row `rows[i]` of the batched condition."""
    pick = lambda x: x[rows.to(x.device)] if torch.is_tensor(x) else x
    return dataclasses.replace(cond, **{f.name: pick(getattr(cond, f.name)) for f in dataclasses.fields(cond)})


def save_videos(videos: Tensor, path: str | Path, fps: float = 8.0, nrow: int | None = None) -> Path:
    """Videos (N, 3, T, H, W) in [-1, 1] as one grid file (magvit.media.write_grid): a clip, or an image
    of the first frames, as `path`'s suffix says."""
    from magvit.media import write_grid

    return write_grid(path, videos[None] if videos.ndim == 4 else videos, fps=fps, nrow=nrow)
