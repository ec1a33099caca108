#!/usr/bin/env bash
# STAND-IN for the telemetry app: publishes a reading every INTERVAL seconds to an MQTT broker
# over mutual TLS, authenticating with the device's 24 h client certificate.
#
#   telemetry.sh BROKER_PORT BROKER_CA DEVICE_CERT DEVICE_KEY DEVICE_ID [INTERVAL]
#
# The real app (app_manifest.json: DeviceAuthentication, AllowedConnections) would run sandboxed
# under moatd and sign the TLS handshake through moatd's device-authentication channel, so the
# key never leaves moatd's key store. moatd has no such channel yet, so the demo runs this
# script outside moatd with the key file of the development (software) key store — possible
# only because that store is a plain file. It stops at the first refused publish (exit 1), so a
# refused certificate is visible.
set -uo pipefail
port=$1 broker_ca=$2 cert=$3 key=$4 device=$5 interval=${6:-3}
for ((n = 1; ; n++)); do
  reading=$(printf '{"device":"%s","seq":%d,"temperature_c":%d.%d,"at":"%s"}' "$device" "$n" \
    $((20 + RANDOM % 3)) $((RANDOM % 10)) "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  if ! mosquitto_pub -h 127.0.0.1 -p "$port" --cafile "$broker_ca" --cert "$cert" --key "$key" \
    -q 1 -t "moat/devices/$device/telemetry" -m "$reading"; then
    echo "telemetry: publish $n refused" >&2
    exit 1
  fi
  sleep "$interval"
done
