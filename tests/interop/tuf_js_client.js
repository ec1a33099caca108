// Runs tuf-js's Updater against a repository directory served over HTTP on 127.0.0.1:
//   node tuf_js_client.js TUF_JS_MODULE_DIR WORK_DIR
// WORK_DIR is tuf_repo_gen's output. Prints one line per check and exits non-zero on the
// first unexpected result.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');

const [tufJsDir, work] = process.argv.slice(2);
const { Updater } = require(path.join(tufJsDir, 'tuf-js'));
const repo = path.join(work, 'repo');

const server = http.createServer((req, res) => {
  const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '');
  const file = path.join(repo, rel);
  if (!file.startsWith(repo + path.sep) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});

function fail(message) {
  console.error(`tuf-js: FAIL: ${message}`);
  process.exitCode = 1;
}

async function main() {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const metadataDir = path.join(work, 'tuf-js-metadata');
  const targetDir = path.join(work, 'tuf-js-targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  fs.copyFileSync(path.join(work, 'trusted', 'root.json'), path.join(metadataDir, 'root.json'));

  const updater = new Updater({
    metadataDir, metadataBaseUrl: base, targetDir, targetBaseUrl: `${base}/targets`,
    config: { fetchRetries: 0 },
  });
  await updater.refresh();
  const root = JSON.parse(fs.readFileSync(path.join(metadataDir, 'root.json')));
  if (root.signed.version !== 2) return fail(`trusted root version ${root.signed.version}, expected 2`);
  console.log('tuf-js: refresh ok (root rotated 1 -> 2, threshold 2, ed25519 + ecdsa keys)');

  for (const name of ['app.img', 'os-1.2.3.img']) {
    const info = await updater.getTargetInfo(name);
    if (!info) return fail(`no target info for ${name}`);
    if (info.custom.moat.name !== name) return fail(`custom of ${name} is ${JSON.stringify(info.custom)}`);
    const file = await updater.downloadTarget(info, path.join(targetDir, name));
    const got = fs.readFileSync(file);
    const want = fs.readFileSync(path.join(work, 'expected', name));
    if (!got.equals(want)) return fail(`downloaded ${name} differs`);
    console.log(`tuf-js: downloaded and verified ${name} (${got.length} bytes)`);
  }

  // A target whose served bytes no longer match the metadata must be refused.
  const info = await updater.getTargetInfo('tampered.img');
  const served = fs.readdirSync(path.join(repo, 'targets')).find((f) => f.endsWith('.tampered.img'));
  fs.writeFileSync(path.join(repo, 'targets', served), 'modified content\n');
  try {
    await updater.downloadTarget(info, path.join(targetDir, 'tampered.img'));
    return fail('tampered.img was accepted');
  } catch (e) {
    console.log(`tuf-js: tampered.img refused (${e.constructor.name}: ${e.message})`);
  }
}

main()
  .catch((e) => fail(`${e.constructor.name}: ${e.message}`))
  .finally(() => server.close());
