# The relying party of the demo and the fleet e2e test: a Mosquitto broker in a network namespace
# of its own, reached from the host over a veth pair, so that sandboxed apps reach it the way they
# would reach any server: through moatd's per-app link, routed and masqueraded by the host.
# Sourced by scripts/demo-fleet.sh and tests/e2e/fleet_e2e_test.sh (root).
#
#   broker_net_up NS HOST_IF HOST_ADDR BROKER_ADDR     namespace, veth pair (a /30), forwarding
#   broker_net_down                                    stops the brokers and subscriber started
#                                                      here, removes the namespace and the veth
#   broker_pki DIR BROKER_ADDR                         DIR/ca.{crt,key}, DIR/broker.{crt,key}:
#                                                      a server certificate for IP BROKER_ADDR
#   broker_conf CONF BROKER_ADDR PORT CLIENT_CA DIR    mutual TLS on BROKER_ADDR:PORT (client
#                                                      certificates must chain to CLIENT_CA), and
#                                                      a plain listener on the namespace's own
#                                                      127.0.0.1:1883 for the subscriber
#   broker_start CONF LOG [FAKETIME]                   mosquitto in the namespace (libfaketime
#                                                      preloaded with FAKETIME, e.g. "+25h");
#                                                      sets broker_pid; waits until it listens
#   broker_stop                                        stops the broker broker_start started
#   broker_subscribe OUT ERR [TOPIC]                   mosquitto_sub in the namespace over the
#                                                      plain listener; sets broker_sub_pid
# Names: NS at most 15 characters is not required, but HOST_IF is an interface name (<= 15);
# the peer inside the namespace is called "broker0".
broker_ns="" broker_host_if="" broker_pid="" broker_sub_pid="" broker_addr=""
broker_pids=()

broker_net_up() {
  local ns=$1 host_if=$2 host_addr=$3 addr=$4
  broker_ns=$ns broker_host_if=$host_if broker_addr=$addr
  # A leftover of an interrupted run with the same names goes first.
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$host_if" 2>/dev/null || true
  ip netns add "$ns" &&
    ip link add "$host_if" type veth peer name broker0 netns "$ns" &&
    ip addr add "$host_addr/30" dev "$host_if" &&
    ip link set "$host_if" up &&
    ip -n "$ns" addr add "$addr/30" dev broker0 &&
    ip -n "$ns" link set broker0 up &&
    ip -n "$ns" link set lo up &&
    # Apps' packets reach the broker through moatd's masquerade (as from HOST_ADDR); the replies
    # come in on HOST_IF and are forwarded back to the app's link only if HOST_IF forwards.
    sysctl -qw "net.ipv4.conf.$host_if.forwarding=1"
}

broker_net_down() {
  local p
  for p in "${broker_pids[@]}" $broker_sub_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${broker_pids[@]}" $broker_sub_pid; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  broker_pids=() broker_pid="" broker_sub_pid=""
  if [[ -n $broker_ns ]]; then
    # Removing the namespace removes broker0 and with it its peer, the host side.
    ip netns del "$broker_ns" 2>/dev/null || true
    ip link del "$broker_host_if" 2>/dev/null || true
  fi
}

broker_pki() {
  local dir=$1 addr=$2
  mkdir -p "$dir"
  # Extensions as RFC 5280 (and the apps' strict chain verification) want them: a CA with
  # keyUsage and key identifiers, a server leaf with its usages and the issuer's key ID.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/ca.key" \
    -out "$dir/ca.crt" -days 3 -subj "/CN=broker CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" >/dev/null 2>&1 &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/broker.key" \
      -out "$dir/broker.csr" -subj "/CN=$addr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$dir/broker.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 3 -out "$dir/broker.crt" \
      -extfile <(printf '%s\n' "subjectAltName=IP:$addr" "extendedKeyUsage=serverAuth" \
        "keyUsage=critical,digitalSignature" "basicConstraints=critical,CA:FALSE" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid") >/dev/null 2>&1
}

broker_conf() {
  local conf=$1 addr=$2 port=$3 client_ca=$4 dir=$5
  cat > "$conf" <<CONF
user root
per_listener_settings true
listener $port $addr
cafile $client_ca
certfile $dir/broker.crt
keyfile $dir/broker.key
require_certificate true
use_identity_as_username true
allow_anonymous false
listener 1883 127.0.0.1
allow_anonymous true
CONF
}

broker_start() {
  local conf=$1 out=$2 fake=${3:-}
  # `ip netns exec` and `env` both exec, so $! is mosquitto itself (killing it leaves nothing).
  if [[ -n $fake ]]; then
    ip netns exec "$broker_ns" env LD_PRELOAD="$faketime_lib" FAKETIME="$fake" \
      mosquitto -c "$conf" >>"$out" 2>&1 &
  else
    ip netns exec "$broker_ns" mosquitto -c "$conf" >>"$out" 2>&1 &
  fi
  broker_pid=$!
  broker_pids+=("$broker_pid")
  local deadline=$((SECONDS + 10))
  until ip netns exec "$broker_ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' 2>/dev/null; do
    if ((SECONDS >= deadline)) || ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "broker: mosquitto did not start (log: $out)"; return 1
    fi
    sleep 0.2
  done
}

broker_stop() {
  [[ -n $broker_pid ]] || return 0
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}

broker_subscribe() {
  local out=$1 err=$2 topic=${3:-moat/devices/+/telemetry}
  ip netns exec "$broker_ns" mosquitto_sub -h 127.0.0.1 -p 1883 -t "$topic" -v >"$out" 2>"$err" &
  broker_sub_pid=$!
}
