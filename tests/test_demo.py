"""`magvit demo` in a real browser: the page started as a user starts it (`python -m magvit demo`, on a
free port of 127.0.0.1) and driven by Playwright in headless Chromium (Debian's `chromium` package,
which .ci/run installs). A clip uploaded and predicted on the page gives the video and the
settings.yaml that `magvit predict settings.yaml` writes, byte for byte; a corrupt upload shows the
command line's error line and the page keeps working; the progress bar follows the decode steps."""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from magvit.cli import main
from magvit.release import ModelInfo, write_model_folder
from magvit.tasks import TaskOptions

pytestmark = pytest.mark.slow  # a server and a browser per test

if importlib.util.find_spec("gradio") is None:  # found, not imported: most tests here run without it
    pytest.skip('the demo extra: pip install -e ".[demo]"', allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="playwright: pip install -e \".[dev]\"")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_MS = 60_000  # the longest wait for anything on the page (a run takes seconds)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained model folder: 9x16x16 clips (3x4x4 tokens), tasks fp (5 frames given), fi and ipc."""
    from magvit.tokenizers import build_tokenizer
    from magvit.transformer import build_transformer

    torch.manual_seed(0)
    tokenizer = build_tokenizer("causal3d", "tiny")
    info = ModelInfo(tasks=("fp", "fi", "ipc"), task_options={"fp": TaskOptions(cond_frames=5)}, grid=(3, 4, 4),
                     frames=9, size=(16, 16), condition_rule="any")
    folder = tmp_path_factory.mktemp("demo-model") / "model"
    return write_model_folder(folder, build_transformer("tiny", codebook_size=tokenizer.codebook_size, grid=(3, 4, 4)),
                              tokenizer, info)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """`magvit demo` on a free port of 127.0.0.1 -> its URL; stopped (Ctrl-C, as a user stops it) at the end."""
    if CHROMIUM is None and os.environ.get("CI"):  # CI installs it: its absence is a failure there
        pytest.fail("no Chromium: .ci/run installs Debian's chromium")
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scratch = tmp_path_factory.mktemp("demo-server")
    # one torch thread, as the suite (conftest.py) and so the command line run below: the same sums
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(scratch / "gradio"), "TMPDIR": str(scratch)}
    log = open(scratch / "demo.log", "w")
    # started with SIGINT ignored, as a shell script's background job inherits it (CI's runner does):
    # Ctrl-C (SIGINT below) must still stop the demo and remove its files
    proc = subprocess.Popen([sys.executable, "-m", "magvit", "demo", "--checkpoint", str(model), "--port", str(port),
                             "--device", "cpu"], cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (scratch / "demo.log").read_text()
            assert time.monotonic() < deadline, "the demo did not answer within 90 s"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
            stopped = True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            stopped = False
        log.close()
    assert stopped, "Ctrl-C (SIGINT) did not stop the demo within 30 s"
    assert not list(scratch.glob("magvit-demo-*")), "the demo left its run folders behind"


@pytest.fixture(scope="module")
def browser(server):
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(server)
    yield page
    page.close()


def status(page) -> str:
    return page.locator("#status textarea").input_value()


def run(page, command: str) -> str:
    """Click a tab's run button and wait for its status line: the result's summary or the error (the
    click shows "running COMMAND..." at once, in the browser)."""
    page.get_by_role("tab", name=command).click()
    page.click(f"#run-{command}")
    page.wait_for_function("(v => v && !v.startsWith('running'))(document.querySelector('#status textarea').value)")
    return status(page)


def upload(page, path: Path) -> None:
    """Upload a file and wait until the page has read it: its first frame shown, or the error line."""
    page.wait_for_selector("#preview img")  # the example's first frame, read when the page loaded
    shown = page.locator("#preview img").get_attribute("src")
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_function("""shown => document.querySelector('#status textarea').value.startsWith('magvit: error')
        || (document.querySelector('#preview img') || {}).src !== shown""", arg=shown)


def test_predict_on_an_uploaded_clip_matches_the_command_line(page, tmp_path, monkeypatch):
    from magvit.data import MovingDigits
    from magvit.media import write_video

    clip = tmp_path / "digits.mp4"
    write_video(clip, MovingDigits(frames=9, size=32, num_samples=1, seed=3)[0]["video"])
    upload(page, clip)
    page.get_by_role("tab", name="predict").click()
    page.locator("#predict-advanced").get_by_text("Advanced").click()
    seed = page.locator("#predict-seed input")
    for _ in range(10):  # the upload's own events may still re-render the options: set it until it stays
        seed.fill("5")
        seed.press("Tab")
        page.wait_for_timeout(300)
        if seed.input_value() == "5":
            break
    assert seed.input_value() == "5"
    line = run(page, "predict")
    assert line.startswith("predict (fp): 4 sample(s); read frames 0-8 of "), line
    page.screenshot(path=tmp_path / "demo.png", full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    # the browser plays the video: 9 frames at the model's 8 fps, the grid of condition | sample pairs
    video = page.locator("#result video")
    video.evaluate("v => new Promise(done => v.readyState >= 2 ? done() : v.addEventListener('loadeddata', done))")
    assert video.evaluate("v => [v.videoWidth, v.videoHeight, v.duration]") == [2 + 2 * 18, 2 + 4 * 18, 9 / 8]
    fetch = lambda href: page.request.get(href).body()
    shown = fetch(video.get_attribute("src"))
    settings = fetch(page.locator('#files a[download="settings.yaml"]').get_attribute("href"))
    assert b"seed: 5\n" in settings and b"out: samples\n" in settings

    # `magvit predict settings.yaml` in another folder: the same settings.yaml and video, byte for byte
    (tmp_path / "settings.yaml").write_bytes(settings)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(tmp_path / "settings.yaml")]) == 0
    assert (tmp_path / "samples" / "settings.yaml").read_bytes() == settings
    assert (tmp_path / "samples" / "samples.mp4").read_bytes() == shown


def test_a_corrupt_upload_is_the_command_lines_error_line_and_the_page_keeps_working(page, model, tmp_path,
                                                                                      capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert main(["predict", "--checkpoint", str(model), "--video", str(bad), "--out", str(tmp_path / "out")]) == 2
    expected = capsys.readouterr().err.strip()
    same = lambda line: re.sub(r"/\S*broken\.mp4", "FILE", line)  # the page reads its own copy of the upload
    upload(page, bad)
    assert same(status(page)) == same(expected)  # at once: the first frame cannot be read
    line = run(page, "predict")
    assert "\n" not in line and same(line) == same(expected), (line, expected)
    # the page still works: the example input instead of the upload
    page.locator("#upload button[aria-label='Clear']").click()
    assert run(page, "interpolate").startswith("interpolate (fi): 4 sample(s); read frames")


def test_inpaint_a_mask_drawn_on_the_first_frame(page):
    page.wait_for_selector("#preview img")  # the example's first frame is in the editors too
    page.get_by_role("tab", name="inpaint").click()
    box = page.locator("#inpaint-mask canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x + 20, y, steps=8)
    page.mouse.up()
    assert run(page, "inpaint").startswith("inpaint (inpaint): 4 sample(s)")  # the region given: MaskGIT's task
    names = [a.get_attribute("download") for a in page.locator("#files a").all()]
    settings = page.request.get(page.locator('#files a[download="settings.yaml"]').get_attribute("href")).text()
    assert "mask.png" in names and re.search(r"\nmask: /\S+/mask\.png\n", settings), (names, settings)


def test_the_progress_bar_follows_the_decode_steps(page):
    """Every decode step moves the bar: the real-clips model (a step takes tens of ms on a CPU) predicts
    4 clips of 12 steps; more than one step's progress reaches the page."""
    page.evaluate("""() => { window.seen = new Set(); new MutationObserver(() => {
        for (const m of document.body.innerText.matchAll(/decoding[^\\n]*/g)) window.seen.add(m[0]); })
        .observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
    page.get_by_label("model").first.click()
    page.get_by_role("option", name="real-clips").click()
    page.wait_for_function("document.body.innerText.includes('trained on tasks uncond')")
    # the new model's example sets the start frame after the switch (a chained event): wait for it
    playwright.expect(page.get_by_label("start frame")).to_have_value("96")
    assert run(page, "predict").startswith("predict (fp): 4 sample(s); read frames 96-104 of bundled:carphone")
    assert len(page.evaluate("[...window.seen]")) > 1, page.evaluate("[...window.seen]")


# ---------------------------------------------------------------------------------------------
# Without a browser


def test_decode_steps_reach_the_progress_callback(model):
    from magvit.pipeline import MagvitPipeline

    calls = []
    pipe = MagvitPipeline.from_pretrained(model, device="cpu")
    pipe.sample("predict", input=torch.rand(1, 3, 9, 16, 16) * 2 - 1, num=3, batch_size=2, steps=3,
                on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(s, 6) for s in range(1, 7)]  # two batches of three steps


def test_a_drawn_mask_is_the_mask_png_the_command_line_reads(tmp_path):
    from magvit.demo import write_mask
    from magvit.inputs import read_mask

    layer = np.zeros((256, 256, 4), np.uint8)  # a 16x16 frame shown 16 times its size
    layer[20:40, 100:230, 3] = 255  # a stroke over rows 1-2, columns 6-14 of the model's pixels
    path = write_mask({"background": None, "layers": [layer], "composite": None}, (16, 16), tmp_path / "mask.png")
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[1:3, 6:15] = True
    assert torch.equal(read_mask(path, (16, 16)), expected)
    assert write_mask({"layers": [np.zeros((256, 256, 4), np.uint8)]}, (16, 16), tmp_path / "none.png") is None


def test_one_request_runs_at_a_time(model, tmp_path):
    """Every event that runs on the server (reading the input, switching models, sampling) is in one
    queue of one: a second request waits for the first (the models share the machine's cores)."""
    from magvit.demo import build

    served = [fn for fn in build(str(model), device="cpu", root=tmp_path).fns.values() if fn.fn is not None]
    assert len(served) > 6 and {(fn.concurrency_limit, fn.concurrency_id) for fn in served} == {(1, "model")}


def test_the_demo_needs_gradio_only_when_started(model, monkeypatch, capsys):
    code = "import sys, magvit, magvit.cli, magvit.demo; print(json.dumps('gradio' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: the import fails
    assert main(["demo", "--checkpoint", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[demo]"' in err, err
