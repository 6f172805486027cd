// Runs the real NSFWJS (tfjs's pure-JS cpu backend, or its wasm backend with
// --backend wasm, as browsers run it) on pre-decoded images and writes
// JSON: one of NSFWJS's bundled models' five probabilities per image (infer, or for a
// graph model, which has no infer, classify(image, 5) in NSFWJS's class order), and,
// when EXPORT_MODEL_JSON is given, what nsfwjs.load() + classify() return for the
// toolkit's TF.js export of a five-class model.
//
//   node nsfwjs_infer.cjs NODE_MODULES PIXELS.bin COUNT HEIGHT WIDTH OUT.json \
//        [EXPORT_MODEL_JSON] [--bundled NAME] [--options JSON] [--backend cpu|wasm]
//
// NAME is a bundled model (default MobileNetV2; MobileNetV2Mid, InceptionV3) and JSON
// the options nsfwjs.load() gets for it ({"type": "graph"}, {"size": 299}).
// PIXELS.bin holds COUNT uint8 RGB images of HEIGHT x WIDTH, back to back,
// exactly as nsfw_mobile.images decodes them, so every model sees the same pixels.
const fs = require("fs");
const path = require("path");
const { modelFiles } = require("../../nsfw_mobile/runtime/js/model_files.cjs");

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const at = args.indexOf(name);
  return at < 0 ? fallback : args.splice(at, 2)[1];
};
const bundledName = flag("--bundled", "MobileNetV2");
const options = JSON.parse(flag("--options", "{}"));
const backend = flag("--backend", "cpu");
const [modulesDir, pixelsPath, count, height, width, outPath, exportJson] = args;
const load = (name) => require(path.join(modulesDir, name));
const tf = load("@tensorflow/tfjs");
const nsfwjs = load("nsfwjs");
const CLASSES = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"];

async function probabilities(model, image) {
  if (options.type === "graph") {
    const classes = await model.classify(image, CLASSES.length);
    const byName = Object.fromEntries(classes.map((c) => [c.className, c.probability]));
    return CLASSES.map((name) => byName[name]);
  }
  const output = model.infer(image);
  const values = Array.from(await output.data());
  output.dispose();
  return values;
}

async function main() {
  if (backend === "wasm") {
    // the .wasm binaries ship in the npm package: nothing is fetched
    const wasmPackage = path.join(modulesDir, "@tensorflow/tfjs-backend-wasm");
    require(wasmPackage).setWasmPaths(path.join(wasmPackage, "dist") + path.sep);
  }
  if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend("${backend}") failed`);
  const bundled = await nsfwjs.load(bundledName, options);
  const exported = exportJson ? await nsfwjs.load(modelFiles(exportJson), { size: 224 }) : null;
  const pixels = fs.readFileSync(pixelsPath);
  const size = Number(height) * Number(width) * 3;
  const result = {
    backend: tf.getBackend(), tfjs: tf.version.tfjs, model: bundledName, probabilities: [], classified: [],
  };
  for (let i = 0; i < Number(count); i++) {
    const image = tf.tensor3d(
      new Int32Array(pixels.subarray(i * size, (i + 1) * size)),
      [Number(height), Number(width), 3],
      "int32",
    );
    result.probabilities.push(await probabilities(bundled, image));
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
