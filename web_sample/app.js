// The page: pick or drop images, show label, probability bars and NSFW score,
// blur what scores above the threshold. ?model=URL picks another export,
// ?backend=cpu|webgl another tfjs backend than wasm (the default, like the toolkit's).
// The Camera toggle classifies the camera's frames live (camera.js). Strings from the model (labels, name) reach the
// page as text (textContent), never as HTML: a model from any URL cannot run script here.
import { CameraMode } from "./camera.js";
import { loadClassifier } from "./nsfw-classifier.js";

const params = new URLSearchParams(location.search);
const modelUrl = params.get("model") || "../models/nsfw_tfjs_uint8/model.json";
const $ = (id) => document.getElementById(id);
let classifier;
let camera;

function threshold() {
  return Number($("threshold").value);
}

function refresh() {
  $("threshold-value").textContent = threshold().toFixed(2);
  camera?.retune();
  for (const card of document.querySelectorAll(".card")) {
    card.classList.toggle("flagged", Number(card.dataset.nsfwScore) >= threshold());
    card.classList.toggle("blur", $("blur").checked);
  }
}

function card(file, result) {
  const element = document.createElement("div");
  element.className = "card";
  element.dataset.file = file.name;
  element.dataset.nsfwScore = result.nsfwScore;
  const image = document.createElement("img");
  image.src = URL.createObjectURL(file);
  image.alt = file.name;
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = `${result.label} · NSFW score ${result.nsfwScore.toFixed(3)}`;
  element.append(image, label);
  for (const [name, probability] of Object.entries(result.probabilities)) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.label = name;
    const labelName = document.createElement("span");
    labelName.textContent = name;
    const track = document.createElement("div");
    const fill = document.createElement("span");
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("output");
    value.textContent = probability.toFixed(4);
    bar.append(labelName, track, value);
    element.append(bar);
  }
  return element;
}

async function classifyFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/"));
  $("status").textContent = `classifying ${images.length} image(s)...`;
  for (const file of images) {
    try {
      $("results").append(card(file, await classifier.classify(file)));
    } catch (error) {
      const failed = document.createElement("div");
      failed.className = "card error";
      failed.textContent = `${file.name}: ${error.message}`;
      $("results").append(failed);
    }
    refresh();
  }
  $("status").textContent = `${document.querySelectorAll(".card:not(.error)").length} classified · ${describe()}`;
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + images.length);
}

function describe() {
  return `${classifier.contract.name} (${classifier.labels.join(", ")}) · tfjs ${tf.version.tfjs}, ${tf.getBackend()} backend`;
}

function showLive(live) {
  $("live-state").textContent = live.state;
  $("live-state").dataset.state = live.state;
  $("live-score").textContent = live.smoothed.toFixed(3);
  $("live-raw").textContent = `${live.label} · ${live.score.toFixed(3)}`;
  $("live-fps").textContent = `${live.fps.toFixed(1)} frames/s (${live.classified} in all)`;
  $("live-dropped").textContent = String(live.dropped);
  document.body.dataset.liveState = live.state;
  document.body.dataset.liveFps = live.fps.toFixed(2);
}

async function toggleCamera() {
  if (!$("camera").checked) {
    camera.stop();
    document.body.classList.remove("camera-on");
    return;
  }
  document.body.classList.add("camera-on");
  try {
    await camera.start(Number($("rate").value));
    document.body.dataset.camera = "running";
  } catch (error) {
    $("camera").checked = false;
    document.body.classList.remove("camera-on");
    $("status").textContent = `camera: ${error.message}`;
  }
}

async function main() {
  const backend = params.get("backend") || "wasm";
  if (backend === "wasm") tf.wasm.setWasmPaths(new URL("node_modules/@tensorflow/tfjs-backend-wasm/dist/", location.href).href);
  await tf.setBackend(backend);
  await tf.ready();
  classifier = await loadClassifier(tf, modelUrl);
  // one blank image first: the first real one (a camera frame) then needs no warm-up
  await classifier.classify(await createImageBitmap(new ImageData(...classifier.inputSize)));
  $("status").textContent = `ready · ${describe()}`;
  document.body.dataset.ready = "true";
  $("files").addEventListener("change", (event) => classifyFiles(event.target.files));
  $("threshold").addEventListener("input", refresh);
  camera = new CameraMode({ classifier, video: $("video"), show: showLive, threshold });
  window.__camera = camera; // tests read camera.log
  $("camera").addEventListener("change", toggleCamera);
  $("rate").addEventListener("change", () => camera.setRate(Number($("rate").value)));
  $("blur").addEventListener("change", refresh);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classifyFiles(event.dataTransfer.files);
  });
}

main().catch((error) => {
  $("status").textContent = `error: ${error.message}`;
  document.body.dataset.error = error.message;
});
