// Decodes one model that an npm package bundles as JavaScript modules (nsfwjs
// 4.3.0's dist/models/<name>/): model.min.js exports the model.json object and
// each group1-shardNofM.min.js exports one weight shard as a base64 string.
//
//   node decode_bundle.cjs FOLDER OUT.json
//
// FOLDER holds the .min.js files. Each one runs in an empty vm context (no
// require, no process, no file system), so the modules can only compute their
// export. OUT.json gets {model, shards: {path: base64}}; nsfw_mobile.zoo_fetch
// checks and writes the model folder.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const [folder, outPath] = process.argv.slice(2);

function moduleExport(file) {
  const sandbox = { module: { exports: {} } };
  sandbox.exports = sandbox.module.exports;
  vm.runInNewContext(fs.readFileSync(path.join(folder, file), "utf8"), sandbox, {
    filename: file,
    timeout: 60000,
  });
  return sandbox.module.exports;
}

const model = moduleExport("model.min.js");
const shards = {};
for (const group of model.weightsManifest || []) {
  for (const shard of group.paths || []) {
    const data = moduleExport(`${path.basename(shard)}.min.js`);
    if (typeof data !== "string") throw new Error(`${shard}.min.js exports no base64 string`);
    shards[shard] = data;
  }
}
fs.writeFileSync(outPath, JSON.stringify({ model, shards }));
