// Runs tuf-js's Updater against the repository of a device group published by a real
// moat-service. tuf-js speaks plain HTTP(S) without client certificates, so a small local proxy
// (plain HTTP on 127.0.0.1) forwards every GET unchanged to the service's device API with the
// device's mutual-TLS credentials and passes the service's status and bytes straight back: what
// tuf-js verifies is exactly what the service serves.
//   node tuf_js_service_client.js TUF_JS_MODULE_DIR WORK_DIR SERVICE_URL REPO_PATH CERT KEY CA
//        IMAGE_ID PACKAGE_FILE
// WORK_DIR/trusted-root.json is the root the device trusts on enrolment (1.root.json).
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');

const [tufJsDir, work, serviceUrl, repoPath, certFile, keyFile, caFile, imageId, packageFile] =
  process.argv.slice(2);
const { Updater } = require(path.join(tufJsDir, 'tuf-js'));
const tls = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), ca: fs.readFileSync(caFile) };
const requested = [];

const proxy = http.createServer((req, res) => {
  const target = new URL(repoPath + req.url.replace(/^\/+/, ''), serviceUrl);
  requested.push(req.url);
  https.get(target, tls, (upstream) => {
    res.writeHead(upstream.statusCode, { 'content-type': upstream.headers['content-type'] || 'application/octet-stream' });
    upstream.pipe(res);
  }).on('error', (e) => { res.writeHead(502).end(String(e)); });
});

function fail(message) {
  console.error(`tuf-js: FAIL: ${message}`);
  process.exitCode = 1;
}

async function main() {
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${proxy.address().port}`;
  const metadataDir = path.join(work, 'tuf-js-metadata');
  const targetDir = path.join(work, 'tuf-js-targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  fs.copyFileSync(path.join(work, 'trusted-root.json'), path.join(metadataDir, 'root.json'));

  const updater = new Updater({
    metadataDir, metadataBaseUrl: base, targetDir, targetBaseUrl: `${base}/targets`,
    config: { fetchRetries: 0 },
  });
  await updater.refresh();
  const root = JSON.parse(fs.readFileSync(path.join(metadataDir, 'root.json')));
  if (root.signed.version !== 2) return fail(`trusted root version ${root.signed.version}, expected 2`);
  console.log('tuf-js: refresh ok against moat-service (root rotated 1 -> 2 by moat device-group rotate-root)');

  const name = `${imageId}.imagepackage`;
  const info = await updater.getTargetInfo(name);
  if (!info) return fail(`no target info for ${name}`);
  if (info.custom.image_type !== 'Application' || info.custom.version !== '2.0.0') {
    return fail(`custom of ${name} is ${JSON.stringify(info.custom)}`);
  }
  const file = await updater.downloadTarget(info, path.join(targetDir, name));
  const got = fs.readFileSync(file);
  if (!got.equals(fs.readFileSync(packageFile))) return fail(`downloaded ${name} differs from the package`);
  console.log(`tuf-js: downloaded and verified ${name} (${got.length} bytes, custom ${JSON.stringify(info.custom)})`);

  const keysInfo = await updater.getTargetInfo('image-signing-keys.json');
  if (!keysInfo) return fail('no target info for image-signing-keys.json');
  const keysFile = await updater.downloadTarget(keysInfo, path.join(targetDir, 'image-signing-keys.json'));
  const keys = JSON.parse(fs.readFileSync(keysFile));
  if (!Array.isArray(keys.keys) || keys.keys.length !== 1 || !keys.keys[0].public_key_pem.startsWith('-----BEGIN PUBLIC KEY-----')) {
    return fail(`image-signing-keys.json is ${JSON.stringify(keys)}`);
  }
  console.log(`tuf-js: downloaded and verified image-signing-keys.json (key '${keys.keys[0].name}')`);
  console.log(`tuf-js: requests through the proxy: ${requested.join(' ')}`);
}

main()
  .catch((e) => fail(`${e.constructor.name}: ${e.message}`))
  .finally(() => proxy.close());
