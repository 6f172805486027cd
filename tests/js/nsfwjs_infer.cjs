// Runs the real NSFWJS (MobileNetV2 bundle, tfjs pure-JS CPU backend) on
// pre-decoded images and prints its five probabilities per image as JSON.
//
//   node nsfwjs_infer.cjs NODE_MODULES_DIR PIXELS.bin COUNT HEIGHT WIDTH OUT.json
//
// PIXELS.bin holds COUNT uint8 RGB images of HEIGHT x WIDTH, back to back,
// exactly as nsfw_mobile.images decodes them, so both sides see the same pixels.
const fs = require("fs");
const path = require("path");

const [modulesDir, pixelsPath, count, height, width, outPath] = process.argv.slice(2);
const load = (name) => require(path.join(modulesDir, name));
const tf = load("@tensorflow/tfjs");
const nsfwjs = load("nsfwjs");

async function main() {
  await tf.setBackend("cpu");
  const model = await nsfwjs.load("MobileNetV2");
  const pixels = fs.readFileSync(pixelsPath);
  const size = Number(height) * Number(width) * 3;
  const results = [];
  for (let i = 0; i < Number(count); i++) {
    const image = tf.tensor3d(
      new Int32Array(pixels.subarray(i * size, (i + 1) * size)),
      [Number(height), Number(width), 3],
      "int32",
    );
    const output = model.infer(image);
    results.push(Array.from(await output.data()));
    image.dispose();
    output.dispose();
  }
  // Results go to a file: NSFWJS and tfjs print notices on stdout.
  fs.writeFileSync(outPath, JSON.stringify({ backend: tf.getBackend(), tfjs: tf.version.tfjs, probabilities: results }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
