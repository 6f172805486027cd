// Turns the bundled MobileNetV2 model of the npm package nsfwjs@4.3.0 into a
// standard TF.js layers folder (model.json + one .bin shard).
//
//   npm pack nsfwjs@4.3.0 && tar xzf nsfwjs-4.3.0.tgz
//   node extract_nsfwjs.cjs package/dist/models/mobilenet_v2 OUT_DIR
//
// The package's model.min.js exports {modelTopology, weightsManifest}; its
// group1-shard1of1.min.js exports the shard as one base64 string.
const fs = require("fs");
const path = require("path");

const [srcDir, outDir] = process.argv.slice(2);
if (!srcDir || !outDir) {
  console.error("usage: node extract_nsfwjs.cjs SRC_DIR OUT_DIR");
  process.exit(2);
}
const bundle = require(path.resolve(srcDir, "model.min.js"));
fs.mkdirSync(outDir, { recursive: true });

const manifest = bundle.weightsManifest.map((group) => ({
  paths: group.paths.map((p) => `${p}.bin`),
  weights: group.weights,
}));
for (const group of bundle.weightsManifest) {
  for (const shard of group.paths) {
    const base64 = require(path.resolve(srcDir, `${shard}.min.js`));
    fs.writeFileSync(path.join(outDir, `${shard}.bin`), Buffer.from(base64, "base64"));
  }
}
const modelJson = {
  format: "layers-model",
  generatedBy: "keras v" + bundle.modelTopology.keras_version,
  convertedBy: "nsfw-mobile extract_nsfwjs.cjs from nsfwjs@4.3.0",
  modelTopology: bundle.modelTopology,
  weightsManifest: manifest,
};
fs.writeFileSync(path.join(outDir, "model.json"), JSON.stringify(modelJson));
console.log(`wrote ${outDir}/model.json and ${manifest.length} weight group(s)`);
