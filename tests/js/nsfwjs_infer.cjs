// Runs the real NSFWJS (tfjs pure-JS CPU backend) on pre-decoded images and writes
// JSON: the bundled MobileNetV2 model's five probabilities per image (infer), and,
// when EXPORT_MODEL_JSON is given, what nsfwjs.load() + classify() return for the
// toolkit's TF.js export of a five-class model.
//
//   node nsfwjs_infer.cjs NODE_MODULES PIXELS.bin COUNT HEIGHT WIDTH OUT.json [EXPORT_MODEL_JSON]
//
// PIXELS.bin holds COUNT uint8 RGB images of HEIGHT x WIDTH, back to back,
// exactly as nsfw_mobile.images decodes them, so every model sees the same pixels.
const fs = require("fs");
const path = require("path");
const { modelFiles } = require("../../nsfw_mobile/runtime/js/model_files.cjs");

const [modulesDir, pixelsPath, count, height, width, outPath, exportJson] = process.argv.slice(2);
const load = (name) => require(path.join(modulesDir, name));
const tf = load("@tensorflow/tfjs");
const nsfwjs = load("nsfwjs");

async function main() {
  await tf.setBackend("cpu");
  const bundled = await nsfwjs.load("MobileNetV2");
  const exported = exportJson ? await nsfwjs.load(modelFiles(exportJson), { size: 224 }) : null;
  const pixels = fs.readFileSync(pixelsPath);
  const size = Number(height) * Number(width) * 3;
  const result = { backend: tf.getBackend(), tfjs: tf.version.tfjs, probabilities: [], classified: [] };
  for (let i = 0; i < Number(count); i++) {
    const image = tf.tensor3d(
      new Int32Array(pixels.subarray(i * size, (i + 1) * size)),
      [Number(height), Number(width), 3],
      "int32",
    );
    const output = bundled.infer(image);
    result.probabilities.push(Array.from(await output.data()));
    output.dispose();
    if (exported) {
      const classes = await exported.classify(image);
      result.classified.push(Object.fromEntries(classes.map((c) => [c.className, c.probability])));
    }
    image.dispose();
  }
  // Results go to a file: NSFWJS and tfjs print notices on stdout.
  fs.writeFileSync(outPath, JSON.stringify(result));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
