"""web_sample/ in a real browser: Debian's Chromium, headless, driven by Playwright.

pytest serves the page, the released TF.js model (models/nsfw_tfjs_uint8) and
tfjs from the toolkit's npm cache on localhost, picks sample images in the
page, and reads the probabilities it displays. They are compared with the
toolkit's prediction for the same files (models/nsfw_float32.tflite, the same
release; the uint8 export equals it within 1.4e-6), so the difference measured is
the browser's decoding and canvas resize against images.py.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from nsfw_mobile.images import SAMPLES_DIR
from nsfw_mobile.node_packages import NodeMissingError, node_modules
from nsfw_mobile.predict import classify
from nsfw_mobile.runtime.tflite_runner import TFLiteRunner

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("NSFW_MOBILE_CHROMIUM", "/usr/bin/chromium")
IMAGES = [
    "astronaut.jpg",
    "coffee.jpg",
    "chelsea.webp",
    "brick.jpg",
    "cell.png",
    "microaneurysms.png",
]
"""Browsers do not decode TIFF: microaneurysms.tif (scored Porn) goes in as a PNG copy."""
BROWSER_VS_TOOLKIT = 0.06
"""Measured on these six images: max abs diff 0.036, mean 0.008 (the canvas's 'high'
smoothing and Chrome's decoders against Pillow's draft-mode JPEG decoding and bilinear
resize); top-1 agrees on all six."""


def needs(condition: bool, reason: str):
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must have it)")
    pytest.skip(reason)


class _Handler(SimpleHTTPRequestHandler):
    """Serves URL prefixes from folders: the page, the models, tfjs."""

    routes: dict[str, Path] = {}

    def translate_path(self, path):
        path = path.split("?", 1)[0]
        for prefix, folder in sorted(self.routes.items(), key=lambda item: -len(item[0])):
            if path.startswith(prefix):
                return str(folder / path[len(prefix) :].lstrip("/"))
        return str(ROOT / "nonexistent")

    def log_message(self, *args):
        pass

    def end_headers(self):
        # cross-origin isolated: tfjs-backend-wasm may use its threaded SIMD build
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder the server also serves, under /served/, for models a test makes."""
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def server(served):
    try:
        modules = node_modules()
    except NodeMissingError as exc:
        needs(False, str(exc))
    handler = type("Handler", (_Handler,), {"routes": {
        "/web_sample/node_modules/": modules,
        "/web_sample/": ROOT / "web_sample",
        "/models/": ROOT / "models",
        "/served/": served,
    }})  # fmt: skip
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


BROWSER_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def playwright():
    """One Playwright per module: its sync API cannot start a second one inside the first."""
    needs(Path(CHROMIUM).is_file(), f"the browser test needs Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs(False, "the browser test needs the playwright package (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    yield browser
    browser.close()


def read_cards(page) -> dict[str, dict[str, float]]:
    cards = {}
    for card in page.query_selector_all(".card"):
        bars = card.query_selector_all(".bar")
        cards[card.get_attribute("data-file")] = {
            bar.get_attribute("data-label"): float(bar.query_selector("output").inner_text())
            for bar in bars
        }
    return cards


HOSTILE_LABEL = '<img src=x onerror="window.__labelRan = true">'
HOSTILE_NAME = '<b id="hostile-name">name</b>'


@pytest.mark.slow
def test_model_strings_reach_the_page_as_text(server, browser, served):
    """A model from any ?model= URL: its labels and name are shown, never run as HTML."""
    model = served / "hostile"
    shutil.copytree(ROOT / "models" / "nsfw_tfjs_uint8", model)
    document = json.loads((model / "model.json").read_text())
    contract = document["userDefinedMetadata"]["nsfw_mobile"]
    labels = [HOSTILE_LABEL if x == "Porn" else x for x in json.loads(contract["labels"])]
    nsfw_labels = [HOSTILE_LABEL if x == "Porn" else x for x in json.loads(contract["nsfw_labels"])]
    contract.update(labels=json.dumps(labels), nsfw_labels=json.dumps(nsfw_labels))
    contract["name"] = HOSTILE_NAME
    (model / "model.json").write_text(json.dumps(document))

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/web_sample/index.html?backend=cpu&model=/served/hostile/model.json")
    page.wait_for_selector("body[data-ready='true']", timeout=120_000)
    page.set_input_files("#files", [str(SAMPLES_DIR / "coffee.jpg")])
    page.wait_for_selector("body[data-done='1']", timeout=120_000)
    page.wait_for_timeout(500)  # time for an <img src=x> to fail and fire onerror
    assert not errors, errors
    assert page.evaluate("window.__labelRan") is None, "a label from the model ran as script"
    assert len(page.query_selector_all(".card img")) == 1  # the photo, no label-made <img>
    assert page.query_selector("#hostile-name") is None
    bars = {b.get_attribute("data-label"): b for b in page.query_selector_all(".card .bar")}
    assert list(bars) == labels
    assert bars[HOSTILE_LABEL].query_selector("span").inner_text() == HOSTILE_LABEL
    assert HOSTILE_NAME in page.inner_text("#status")
    page.close()


def test_the_page_pins_the_tfjs_the_toolkit_validates_with():
    from nsfw_mobile.node_packages import TFJS

    package = json.loads((ROOT / "web_sample" / "package.json").read_text())
    assert package["dependencies"] == TFJS


@pytest.mark.slow
def test_page_matches_the_toolkit(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/web_sample/index.html?backend=cpu")
    page.wait_for_selector("body[data-ready='true']", timeout=120_000)
    assert "tfjs 4.22.0, cpu backend" in page.inner_text("#status")
    from PIL import Image

    Image.open(SAMPLES_DIR / "microaneurysms.tif").save(tmp_path / "microaneurysms.png")
    files = [SAMPLES_DIR / n if (SAMPLES_DIR / n).exists() else tmp_path / n for n in IMAGES]
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_selector(f"body[data-done='{len(files)}']", timeout=300_000)
    assert not errors, errors
    shown = read_cards(page)
    assert sorted(shown) == sorted(IMAGES)

    runner = TFLiteRunner(ROOT / "models" / "nsfw_float32.tflite")
    toolkit = {Path(r.path).name: r.probabilities for r in classify(runner, files)}
    labels = list(runner.labels)
    browser_probs = np.array([[shown[name][label] for label in labels] for name in IMAGES])
    toolkit_probs = np.array([[toolkit[name][label] for label in labels] for name in IMAGES])
    difference = np.abs(browser_probs - toolkit_probs)
    print(
        f"\nChromium (tfjs cpu, canvas resize) vs toolkit on {len(IMAGES)} images: "
        f"max abs diff {difference.max():.4f}, mean {difference.mean():.4f}"
    )
    assert difference.max() <= BROWSER_VS_TOOLKIT
    assert (browser_probs.argmax(1) == toolkit_probs.argmax(1)).all()
    assert browser_probs.std(axis=0).max() > 0.2  # the images get different answers

    # the blur toggle and the threshold act on what scores above it
    page.fill("#threshold", "0")
    page.dispatch_event("#threshold", "input")
    assert len(page.query_selector_all(".card.flagged.blur")) == len(IMAGES)
    page.uncheck("#blur")
    assert not page.query_selector_all(".card.blur")
    page.check("#blur")
    page.fill("#threshold", "0.5")
    page.dispatch_event("#threshold", "input")
    page.wait_for_timeout(500)  # the blur's CSS transition
    shot = tmp_path / "web_sample.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("NSFW_MOBILE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "web_sample" / "screenshot.png")


# ------------------------------------------------------------------ camera mode

CAMERA_FPS = 10
CAMERA_CLIP = (3.0, 3.0, 3.0)
"""Seconds of neutral frames, of the planted stretch and of neutral frames again; Chromium's
fake camera plays the file in real time and loops it."""
LIVE_MIN_FPS = 5


def write_camera_clip(path: Path) -> Path:
    """A y4m clip for Chromium's fake camera: neutral photos, microaneurysms.tif (the
    pretrained model scores it Porn 0.90), neutral again; 224x224 at 10 fps (6.8 MB)."""
    av = pytest.importorskip("av")
    from nsfw_mobile.images import decode_image

    neutral = [decode_image(SAMPLES_DIR / n, 224) for n in ("astronaut.jpg", "coffee.jpg")]
    planted = decode_image(SAMPLES_DIR / "microaneurysms.tif", 224)
    before, stretch, after = (int(s * CAMERA_FPS) for s in CAMERA_CLIP)
    frames = (
        [neutral[(i // CAMERA_FPS) % 2] for i in range(before)]
        + [planted] * stretch
        + [neutral[(i // CAMERA_FPS + 1) % 2] for i in range(after)]
    )
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=CAMERA_FPS)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "yuv420p"
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def high_runs(log, on):
    """(first frame above on, first frame below it again) of each raw-score stretch that
    starts after a frame below."""
    runs, start = [], None
    for previous, entry in zip(log, log[1:]):
        if start is None and entry["score"] > on >= previous["score"]:
            start = entry
        elif start is not None and entry["score"] <= on:
            runs.append((start, entry))
            start = None
    return runs


def screenshot_when_on(page, path: Path) -> None:
    """The page in the on state for the README: the camera mode is paused while the state
    is on (no frame can turn it off during the blur's transition), then shot."""
    freeze = "() => { clearInterval(window.__camera.timer); video.pause(); }"
    resume = "() => { window.__camera.setRate(10); video.play(); }"
    for _ in range(10):
        page.wait_for_selector("body[data-live-state='on']", timeout=60_000)
        page.evaluate(freeze)
        page.wait_for_timeout(800)  # a frame in flight lands; the blur's transition ends
        if page.evaluate("document.body.dataset.liveState") == "on":
            page.screenshot(path=str(path))
            return
        page.evaluate(resume)
    raise AssertionError("the page never stayed on for a screenshot")


@pytest.mark.slow
def test_camera_mode_flags_the_planted_stretch(server, playwright, tmp_path):
    """Chromium's fake camera plays a clip with a planted stretch; the page classifies its
    frames on tfjs wasm, and its live rule turns on within the rule's latency after the
    stretch starts and off after it ends, the same states the Python rule gives."""
    from nsfw_mobile.live_rule import LiveRule, LiveRuleParams

    clip = write_camera_clip(tmp_path / "camera.y4m")
    args = [*BROWSER_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"]  # fmt: skip
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server}/web_sample/index.html")
        page.wait_for_selector("body[data-ready='true']", timeout=120_000)
        assert "wasm backend" in page.inner_text("#status")
        page.select_option("#rate", str(CAMERA_FPS))
        page.check("#camera")
        page.wait_for_selector("body[data-camera='running']", timeout=30_000)
        for _ in range(3):  # the state and the blur, read together
            page.wait_for_selector("body[data-live-state='on']", timeout=60_000)
            shown = page.evaluate("[document.body.dataset.liveState, video.className]")
            if shown[0] == "on":
                break
        assert shown == ["on", "blur"], shown
        deadline = 60_000
        while deadline > 0:  # until a whole stretch, on and off again, has been seen
            log = page.evaluate("window.__camera.log")
            if any(end["t"] + 3 < log[-1]["t"] for _, end in high_runs(log, 0.5)):
                break
            page.wait_for_timeout(1000)
            deadline -= 1000
        log = page.evaluate("window.__camera.log")
        shown_fps = float(page.get_attribute("body", "data-live-fps"))
        dropped = page.evaluate("window.__camera.dropped")
        if os.environ.get("NSFW_MOBILE_UPDATE_SCREENSHOT"):
            screenshot_when_on(page, ROOT / "web_sample" / "camera.png")
        threads = page.evaluate("crossOriginIsolated ? tf.wasm.getThreadsCount() : 1")
        assert not errors, errors
    finally:
        browser.close()

    steady = log[1:]  # the first frame also waits for the camera to start
    span = steady[-1]["t"] - steady[0]["t"]
    fps = (len(steady) - 1) / span
    gaps = [b["t"] - a["t"] for a, b in zip(log, log[1:])]
    print(
        f"\ncamera mode (Chromium, tfjs wasm, {threads} thread(s), default model, asked for "
        f"{CAMERA_FPS} frames/s): {len(steady)} frames classified in {span:.1f} s = "
        f"{fps:.1f} frames/s (the page showed {shown_fps:.1f}), {dropped} ticks dropped, "
        f"longest gap {max(gaps):.2f} s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    assert fps >= LIVE_MIN_FPS, f"{fps:.1f} frames/s (load average {os.getloadavg()[0]:.1f})"

    # the page's states are the rule's: the Python rule on the page's scores agrees
    rule = LiveRule(LiveRuleParams(on=0.5, max_gap_s=1))
    assert [rule.update(e["t"], e["score"]).state for e in log] == [e["state"] for e in log]

    runs = high_runs(log, 0.5)
    assert runs, "the planted stretch never scored above 0.5"
    params = LiveRuleParams(on=0.5)
    for start, end in runs:
        if end["t"] + 3 > log[-1]["t"]:
            continue
        seen = end["t"] - start["t"]
        assert abs(seen - CAMERA_CLIP[1]) < 0.6, seen  # the camera really plays the clip
        inside = [e for e in log if start["t"] <= e["t"] < end["t"]]
        latency = params.latency_s(min(e["score"] for e in inside))
        turned_on = next(e["t"] for e in inside if e["state"] == "on")
        assert turned_on - start["t"] <= latency + max(gaps), (turned_on - start["t"], latency)
        after = [e for e in log if e["t"] >= end["t"]]
        turned_off = next(e["t"] for e in after if e["state"] == "off")
        assert turned_off - end["t"] <= 1.5, turned_off - end["t"]
        before = [e for e in log if start["t"] - 2 <= e["t"] < start["t"]]
        assert before and all(e["state"] == "off" for e in before)
