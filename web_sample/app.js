// The page: pick or drop images, show label, probability bars and NSFW score,
// blur what scores above the threshold. ?model=URL picks another export,
// ?backend=cpu|webgl a tfjs backend. Strings from the model (labels, name) reach the
// page as text (textContent), never as HTML: a model from any URL cannot run script here.
import { loadClassifier } from "./nsfw-classifier.js";

const params = new URLSearchParams(location.search);
const modelUrl = params.get("model") || "../models/nsfw_tfjs_uint8/model.json";
const $ = (id) => document.getElementById(id);
let classifier;

function threshold() {
  return Number($("threshold").value);
}

function refresh() {
  $("threshold-value").textContent = threshold().toFixed(2);
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

async function main() {
  if (params.get("backend")) await tf.setBackend(params.get("backend"));
  await tf.ready();
  classifier = await loadClassifier(tf, modelUrl);
  $("status").textContent = `ready · ${describe()}`;
  document.body.dataset.ready = "true";
  $("files").addEventListener("change", (event) => classifyFiles(event.target.files));
  $("threshold").addEventListener("input", refresh);
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
