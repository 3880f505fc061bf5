"""The demo's page: its layout (a tab per sampling command), its events, and the server."""

from __future__ import annotations

import functools
import itertools
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from magvit import shipped
from magvit.decode import GUIDANCE_SCHEDULES
from magvit.demo.session import (
    FIELDS,
    INSTALL,
    Models,
    choices,
    commands,
    defaults,
    describe,
    error_line,
    example_inputs,
    example_start,
    first_frame,
    sample,
    settings_of,
    write_mask,
)
from magvit.errors import MagvitError
from magvit.pipeline import FAMILIES, MagvitPipeline


def gradio():
    """The gradio module, or one line naming the extra that installs it."""
    try:
        import gradio
    except ImportError:
        raise MagvitError(f"the web demo needs Gradio: {INSTALL}") from None
    return gradio


class Page:
    """One served page: the models it has loaded, the folder its runs write into, and the components its
    events read and write (`layout` makes them, `wire` connects them)."""

    def __init__(self, checkpoint: str, device: str, root: Path):
        self.models, self.device, self.root = Models(device), device, root
        self.checkpoint, self.runs = checkpoint, itertools.count(1)
        self.names = list(dict.fromkeys([checkpoint, *shipped.names("checkpoints")]))
        # per model: sessions may show different ones
        self.known = {checkpoint: example_inputs(self.models[checkpoint], checkpoint, root)}
        self.tabs: dict[str, dict[str, Any]] = {}  # command -> settings key (or "tab", "run") -> component

    def layout(self, gr) -> None:
        """The components, top to bottom: the model, the input, a tab per command, the result."""
        from magvit.schedules import MASK_SCHEDULES

        pipe, inputs = self.models[self.checkpoint], self.known[self.checkpoint]
        first = next(iter(inputs))
        gr.Markdown("# magvit: masked generative video models")
        with gr.Row():
            self.model = gr.Dropdown(self.names, value=self.checkpoint, label="model", scale=1)
            self.about = gr.Markdown(describe(pipe, self.checkpoint))
        with gr.Row():
            with gr.Column(scale=1):
                self.upload = gr.File(label="input: a video or an image (used before the example)", elem_id="upload")
                self.example = gr.Dropdown(choices(inputs), value=first, label="or an example input")
                with gr.Row():
                    self.start = gr.Number(example_start(inputs, first), precision=0, minimum=0, label="start frame")
                    self.stride = gr.Number(0, precision=0, minimum=0, label="stride (0: as trained)")
                self.preview = gr.Image(label="its first frame, as the model sees it", interactive=False, height=200,
                                        elem_id="preview")
            runnable = commands(pipe)
            with gr.Column(scale=2), gr.Tabs(selected=runnable[0], overflow_behavior="wrap") as self.tab_row:
                for command in FAMILIES:
                    self.tabs[command] = _tab(gr, pipe, self.checkpoint, command, command in runnable,
                                              MASK_SCHEDULES.names())
            with gr.Column(scale=2):
                self.status = gr.Textbox(label="status", interactive=False, elem_id="status")
                self.video = gr.Video(label="result: condition | sample, one pair per row", elem_id="result",
                                      autoplay=True, loop=True, interactive=False, height=420)
                self.image = gr.Image(label="result (first frames)", visible=False, interactive=False)
                self.files = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="files")
                self.settings = gr.Code(label="settings.yaml: `magvit COMMAND settings.yaml` reproduces this result",
                                        language="yaml", interactive=False, elem_id="settings")
        self.editors = [t["mask"] for t in self.tabs.values() if "mask" in t]

    # ------------------------------------------------------------------------------ events

    def inputs_of(self, name: str) -> dict[str, tuple[str, int | None]]:
        if name not in self.known:
            self.known[name] = example_inputs(self.models[name], name, self.root)
        return self.known[name]

    def show_input(self, name, path, chosen, start, every) -> list:
        """The input's first frame in the preview and in each mask editor, or the error line."""
        source = str(path) if path else chosen  # an upload is a str subclass YAML cannot write
        try:
            frame = None if source is None else first_frame(self.models[name], source, start or 0, every)
        except Exception as e:  # shown on the page, which keeps working
            return [error_line(e), None, *[None for _ in self.editors]]
        canvas = None if frame is None else {"background": frame, "layers": [], "composite": frame}
        return ["", frame, *[canvas for _ in self.editors]]

    def first_frame_at(self, name, path, chosen) -> int:
        """An upload is read from its first frame, an example from its own (a bundled clip's held-out frames)."""
        return 0 if path else example_start(self.inputs_of(name), chosen)

    def switch_model(self, gr, name) -> dict:
        """Tabs, field defaults, examples and the description of model `name` (loaded on first use)."""
        try:
            chosen, inputs = self.models[name], self.inputs_of(name)
        except Exception as e:  # shown on the page, which keeps working
            return {self.status: error_line(e)}
        can = commands(chosen)
        out = {self.about: describe(chosen, name), self.status: "", self.tab_row: gr.Tabs(selected=can[0]),
               self.example: gr.Dropdown(choices=choices(inputs), value=next(iter(inputs)))}
        for command, fields in self.tabs.items():
            out[fields["tab"]] = gr.Tab(visible=command in can)
            values = defaults(chosen, name, command)
            for key, component in fields.items():
                if key == "classes":
                    out[component] = gr.CheckboxGroup(choices=list(range(chosen.info.num_classes)),
                                                      value=values[key], visible=chosen.info.num_classes > 0)
                elif key in values:
                    out[component] = values[key]
        return out

    def run(self, gr, command: str, values: dict, progress) -> dict:
        """One run of `command` with the page's values, through the command line's code; its result or
        its error line (the page keeps working)."""
        folder = self.root / f"run-{next(self.runs)}"
        folder.mkdir(parents=True)
        began = time.perf_counter()
        fields = self.tabs[command]
        try:
            name = values[self.model]
            mask = (write_mask(values.get(fields.get("mask")), self.models[name].clip[1:], folder / "mask.png")
                    if "mask" in fields else None)
            chosen = {key: values[c] for key, c in fields.items() if key not in ("tab", "run", "mask")}
            given = str(values[self.upload] or "") or values[self.example]
            cfg = settings_of(command, name, self.device, given,
                              {**chosen, "start": values[self.start], "stride": values[self.stride]}, mask)
            progress(0, desc="reading the input")
            made, what = sample(self.models, command, cfg, folder,
                                on_step=lambda done, total: progress((done, total), desc="decoding", unit="steps"))
        except Exception as e:  # shown on the page, which keeps working
            shutil.rmtree(folder, ignore_errors=True)
            return {self.status: error_line(e), self.video: None, self.image: gr.Image(visible=False),
                    self.files: None, self.settings: ""}
        clip = next((p for p in made if p.suffix == ".mp4"), None)
        shown = {path.name: path for path in made}
        here = [Path(given)] if given and Path(given).is_relative_to(self.root) else []  # a held-out clip it made
        return {self.status: f"{what} in {time.perf_counter() - began:.1f} s", self.video: clip and str(clip),
                self.image: gr.Image(value=str(shown["samples.png"]), visible=clip is None),
                self.files: [str(p) for p in [*made, folder / "mask.png", *here] if p.is_file()],
                self.settings: shown["settings.yaml"].read_text()}

    def wire(self, gr, page) -> None:
        """Which event runs what, one request at a time for all of them (the models share the cores)."""
        shared = dict(concurrency_limit=1, concurrency_id="model")
        looks = [self.model, self.upload, self.example, self.start, self.stride]
        frames = [self.status, self.preview, *self.editors]
        for trigger in (self.start.input, self.stride.input):  # typed by the user (a value set below: no .input)
            trigger(self.show_input, looks, frames, **shared)
        for trigger in (self.upload.change, self.example.change):
            trigger(self.first_frame_at, [self.model, self.upload, self.example], self.start, **shared).then(
                self.show_input, looks, frames, **shared)
        shown_by_model = {self.about, self.status, self.tab_row, self.example,
                          *[c for t in self.tabs.values() for c in t.values()]}
        # then the input again, framed for this model (an example that stays the same triggers no change)
        self.model.change(functools.partial(self.switch_model, gr), self.model, shown_by_model, **shared).then(
            self.show_input, looks, frames, **shared)
        page.load(self.show_input, looks, frames, **shared)
        tracker = gr.Progress()  # the default gradio replaces with the request's own progress bar

        def run(command, values, progress=tracker):
            return self.run(gr, command, values, progress)

        results = [self.status, self.video, self.image, self.files, self.settings]
        for command, fields in self.tabs.items():
            given = {*looks, *[c for k, c in fields.items() if k not in ("tab", "run")]}
            # the status says at once, in the browser, that the run is on its way (it may wait in the queue)
            fields["run"].click(None, None, self.status, js=f"() => 'running {command}...'").then(
                functools.partial(run, command), given, results, **shared)


def build(checkpoint: str = "digits-video", device: str = "auto", root: str | Path | None = None):
    """The page (a gradio.Blocks) serving `checkpoint` first and the shipped models; runs write into `root`."""
    gr = gradio()
    state = Page(checkpoint, device, Path(root or tempfile.mkdtemp(prefix="magvit-demo-")))
    with gr.Blocks(title="magvit demo", analytics_enabled=False) as page:
        state.layout(gr)
        state.wire(gr, page)
    page.queue(default_concurrency_limit=1)
    page.root = state.root
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
