// A tfjs IOHandler that reads a model (model.json and its shards, layers or graph) from disk.
// Node has no file:// loader without the tfjs-node binary, so the model is handed
// to tf.loadLayersModel, tf.loadGraphModel or nsfwjs.load in memory.
"use strict";
const fs = require("fs");
const path = require("path");

function modelFiles(jsonPath) {
  return {
    load: async () => {
      const document = JSON.parse(fs.readFileSync(jsonPath, "utf8"));
      const folder = path.dirname(jsonPath);
      const specs = [];
      const shards = [];
      for (const group of document.weightsManifest || []) {
        for (const shard of group.paths) shards.push(fs.readFileSync(path.join(folder, shard)));
        specs.push(...group.weights);
      }
      // One exact ArrayBuffer: a pooled Buffer's .buffer also holds unrelated bytes.
      const joined = Buffer.concat(shards);
      return {
        modelTopology: document.modelTopology,
        format: document.format,
        generatedBy: document.generatedBy,
        convertedBy: document.convertedBy,
        weightSpecs: specs,
        weightData: joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength),
        userDefinedMetadata: document.userDefinedMetadata,
      };
    },
  };
}

module.exports = { modelFiles };
