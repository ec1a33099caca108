#!/usr/bin/env bash
# Makes the test PKI with the openssl command line (an independent implementation, so our own
# X.509 code is checked against it, not against itself). Nothing here is committed: the keys
# are created fresh into the directory given as $1 on every test run.
#
#   root-ca.{key,crt}          self-signed P-256 root
#   intermediate-ca.{key,crt}  P-256 intermediate under the root (pathlen 0)
#   leaf.{key,crt}             P-256 clientAuth leaf under the intermediate
#   signer-p256.{key,pub,crt}  image-signing key (P-256), self-signed certificate
#   signer-ed25519.{key,pub}   image-signing key (Ed25519)
#   foreign-ca.{key,crt}       an unrelated root, for "wrong issuer" tests
set -euo pipefail
out=${1:?usage: make-test-pki.sh OUTPUT_DIR}
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cd "$out.tmp"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ec root-ca.key
openssl req -x509 -new -key root-ca.key -sha256 -days 3650 -subj "/O=Moat Test/CN=Test Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out root-ca.crt

ec intermediate-ca.key
openssl req -new -key intermediate-ca.key -subj "/O=Moat Test/CN=Test Intermediate CA" -out intermediate-ca.csr
cat > intermediate.ext <<'X'
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
X
openssl x509 -req -in intermediate-ca.csr -CA root-ca.crt -CAkey root-ca.key -CAcreateserial \
  -days 1825 -sha256 -extfile intermediate.ext -out intermediate-ca.crt 2>/dev/null

ec leaf.key
openssl req -new -key leaf.key -subj "/CN=test-device" -out leaf.csr
cat > leaf.ext <<'X'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:urn:moat:device:0000000000000000000000000000000000000000000000000000000000000000
X
openssl x509 -req -in leaf.csr -CA intermediate-ca.crt -CAkey intermediate-ca.key -CAcreateserial \
  -days 1 -sha256 -extfile leaf.ext -out leaf.crt 2>/dev/null

ec signer-p256.key
openssl pkey -in signer-p256.key -pubout -out signer-p256.pub
openssl req -x509 -new -key signer-p256.key -sha256 -days 365 -subj "/O=Moat Test/CN=Image Signer" \
  -out signer-p256.crt
openssl genpkey -algorithm ED25519 -out signer-ed25519.key
openssl pkey -in signer-ed25519.key -pubout -out signer-ed25519.pub

ec foreign-ca.key
openssl req -x509 -new -key foreign-ca.key -sha256 -days 3650 -subj "/CN=Foreign Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out foreign-ca.crt

chmod 600 ./*.key
cd - >/dev/null
rm -rf "$out"
mv "$out.tmp" "$out"
echo "test PKI written to $out"
