// Runs one TF.js model (layers or graph) in TensorFlow.js for nsfw_mobile.runtime.tfjs_runner,
// as a long-lived child process.
//
//   node tfjs_server.cjs NODE_MODULES MODEL_JSON BACKEND
//
// BACKEND: "wasm" (@tensorflow/tfjs-backend-wasm; its .wasm binaries are read from
// the npm package's dist folder, the SIMD build where Node has SIMD; Node gets no
// threaded build, tensorflow/tfjs#3830) or "cpu" (tfjs's pure-JavaScript kernels,
// the reference the wasm backend is checked against).
//
// stdin: requests, each a 16-byte header of little-endian uint32 values
// (count, height, width, 3) followed by count*height*width*3 uint8 RGB pixels.
// stdout: one JSON line when the model is loaded ({ready, tfjs, backend, simd,
// input_shape, output_shape} or {error}), then one JSON line per request
// ({probabilities} or {error}). Everything else tfjs prints goes to stderr.
"use strict";
const fs = require("fs");
const path = require("path");
const { modelFiles } = require("./model_files.cjs");

const reply = (object) => process.stdout.write(JSON.stringify(object) + "\n");
for (const method of ["log", "info", "warn", "debug"]) console[method] = console.error;

const [modulesDir, modelJson, backend] = process.argv.slice(2);
const tf = require(path.join(modulesDir, "@tensorflow/tfjs"));

function predict(model, pixels, count, height, width) {
  return tf.tidy(() => {
    const images = tf.tensor4d(Float32Array.from(pixels), [count, height, width, 3]);
    const output = model.predict(images.div(255));
    const values = output.dataSync();
    const classes = output.shape[output.shape.length - 1];
    const rows = [];
    for (let i = 0; i < count; i++) rows.push(Array.from(values.subarray(i * classes, (i + 1) * classes)));
    return rows;
  });
}

// A graph model's outputs declare no shape: run one blank image to learn it.
function outputShape(model) {
  return tf.tidy(() => {
    const shape = model.inputs[0].shape.map((d) => (d > 0 ? d : 1));
    return [-1, ...model.predict(tf.zeros(shape)).shape.slice(1)];
  });
}

// Starts the backend, or replies with the error and exits; returns whether the wasm
// backend runs its SIMD build.
async function startBackend(name) {
  try {
    let simd = false;
    if (name === "wasm") {
      const wasmPackage = path.join(modulesDir, "@tensorflow/tfjs-backend-wasm");
      require(wasmPackage).setWasmPaths(path.join(wasmPackage, "dist") + path.sep);
      simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
    }
    // setBackend resolves false when a backend cannot start; tfjs logs why.
    const said = [];
    const log = console.error;
    const keep = (...args) => {
      said.push(args.map((a) => (a && a.message) || String(a)).join(" "));
      log(...args);
    };
    for (const method of ["log", "info", "warn", "debug", "error"]) console[method] = keep;
    let started;
    try {
      started = await tf.setBackend(name);
    } finally {
      for (const method of ["log", "info", "warn", "debug", "error"]) console[method] = log;
    }
    if (!started || tf.getBackend() !== name) {
      throw new Error(said[0] || "the backend did not start");
    }
    return simd;
  } catch (error) {
    reply({ error: `tf.setBackend("${name}"): ${error.message}` });
    process.exit(3);
  }
}

async function main() {
  const simd = await startBackend(backend);
  let model;
  const graph = JSON.parse(fs.readFileSync(modelJson, "utf8")).format === "graph-model";
  const loader = graph ? "loadGraphModel" : "loadLayersModel";
  try {
    model = await tf[loader](modelFiles(modelJson));
  } catch (error) {
    reply({ error: `tf.${loader}: ${error.message}` });
    process.exit(3);
  }
  reply({
    ready: true,
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    simd,
    input_shape: model.inputs[0].shape,
    output_shape: model.outputs[0].shape || outputShape(model),
  });
  let pending = Buffer.alloc(0);
  process.stdin.on("data", (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 16) {
      const [count, height, width, channels] = [0, 4, 8, 12].map((at) => pending.readUInt32LE(at));
      const size = 16 + count * height * width * channels;
      if (pending.length < size) break;
      const pixels = pending.subarray(16, size);
      pending = pending.subarray(size);
      try {
        reply({ probabilities: predict(model, pixels, count, height, width) });
      } catch (error) {
        reply({ error: error.message });
      }
    }
  });
  process.stdin.on("end", () => process.exit(0));
}

main().catch((error) => {
  reply({ error: String(error && error.stack ? error.stack : error) });
  process.exit(1);
});
