// Classify images in the browser with a TF.js model exported by nsfw-mobile.
//
// The labels, the NSFW labels and the input size come from the model's own
// contract (model.json > userDefinedMetadata > nsfw_mobile), so any model the
// toolkit exports works here, whatever its classes.
//
//   import { loadClassifier } from "./nsfw-classifier.js";
//   const classifier = await loadClassifier(tf, "../models/nsfw_tfjs_uint8/model.json");
//   const result = await classifier.classify(file);   // a File, Blob, <img> or ImageBitmap
//   // result: { label, probabilities: {Neutral: 0.97, ...}, nsfwScore }

export async function loadClassifier(tf, modelUrl) {
  const document = await (await fetch(modelUrl)).json();
  const contract = (document.userDefinedMetadata || {}).nsfw_mobile;
  if (!contract) throw new Error(`${modelUrl} has no nsfw_mobile contract: export it with nsfw-mobile convert --to tfjs`);
  const labels = JSON.parse(contract.labels);
  const nsfwLabels = JSON.parse(contract.nsfw_labels);
  const [width, height] = contract.input_size.split("x").map(Number);
  const model = await tf.loadLayersModel(modelUrl);
  return {
    labels,
    nsfwLabels,
    inputSize: [width, height],
    contract,
    classify: (image) => classify(tf, model, image, { labels, nsfwLabels, width, height }),
  };
}

// The toolkit's preprocessing (metadata.PREPROCESSING): the whole image squashed to
// the input size, EXIF orientation applied, alpha on white, pixels / 255. The
// canvas resamples with the browser's smoothing rather than Pillow's filter; the
// docs/guides/web.md gives the difference measured against the toolkit.
async function toPixels(image, width, height) {
  const bitmap = image instanceof ImageBitmap ? image : await createImageBitmap(image, { imageOrientation: "from-image" });
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "white";
  context.fillRect(0, 0, width, height);
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  return context.getImageData(0, 0, width, height);
}

async function classify(tf, model, image, { labels, nsfwLabels, width, height }) {
  const pixels = await toPixels(image, width, height);
  const output = tf.tidy(() => {
    const rgb = tf.browser.fromPixels(pixels, 3).toFloat().div(255);
    return model.predict(rgb.expandDims(0));
  });
  const values = Array.from(await output.data());
  output.dispose();
  const probabilities = Object.fromEntries(labels.map((label, i) => [label, values[i]]));
  const best = values.indexOf(Math.max(...values));
  const nsfwScore = nsfwLabels.reduce((sum, label) => sum + probabilities[label], 0);
  return { label: labels[best], probabilities, nsfwScore };
}
