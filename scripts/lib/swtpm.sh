# One software TPM (swtpm) per demo device, for scripts/demo-fleet.sh and
# tests/e2e/fleet_e2e_test.sh (sourced; needs bash, openssl, python3, swtpm, swtpm_setup,
# swtpm_localca and tpm2-tools).
#
# A TPM's manufacturer burns an endorsement key (EK) into each chip and signs a certificate for
# it with its CA; the Moat service trusts a TPM whose EK certificate chains to a manufacturer CA
# an operator registered. Here we play that manufacturer:
#
#   swtpm_ca_create DIR            a manufacturer CA (ECDSA P-256, openssl) in DIR: ca.crt,
#                                  ca.key, and the swtpm_setup/swtpm_localca configs that make
#                                  swtpm_localca sign EK certificates with it
#   swtpm_manufacture CA_DIR TPM_DIR
#                                  a new TPM's state in TPM_DIR (swtpm_setup --tpm2
#                                  --create-ek-cert --create-platform-cert: an RSA 2048 EK
#                                  persisted at 0x81010001, its certificate in NV 0x01c00002)
#   swtpm_start TPM_DIR            power on: `swtpm socket --tpm2` on two free adjacent loopback
#                                  ports (data P, control P+1; the swtpm TCTI finds the control
#                                  port at P+1), waits until it listens; TPM_DIR/tcti then holds
#                                  the TCTI string (swtpm:host=127.0.0.1,port=P)
#   swtpm_tcti TPM_DIR             prints that TCTI string
#   swtpm_stop TPM_DIR             power off (SIGTERM, SIGKILL after 3 s; waits). PCRs are
#                                  volatile: the next swtpm_start is a fresh boot (Startup CLEAR)
#   swtpm_stop_all                 stops every swtpm this shell started (for EXIT traps)
#   swtpm_read_ek_certificate TPM_DIR OUT.pem
#                                  the EK certificate, read from NV with tpm2_nvread (what a
#                                  factory station reads off a real TPM)
#   swtpm_ek_device_id TPM_DIR     the device ID Moat derives from the EK: hex SHA-256 of the
#                                  EK's TPMT_PUBLIC (tpm2_readpublic at 0x81010001)
#
# swtpm serves one TCTI connection at a time: read the EK before moatd opens its key store, or
# with moatd stopped. The tpm2-tools functions need the TPM running.
# Each swtpm is a child of the sourcing shell (its PID in TPM_DIR/swtpm.pid and in
# swtpm_pids); SIGINT does not reach it (background jobs of a script ignore SIGINT), so the
# caller's trap must call swtpm_stop_all.

declare -gA swtpm_pids=()

swtpm_ca_create() {  # swtpm_ca_create DIR
  local dir=$1
  mkdir -p "$dir/localca" && chmod 0700 "$dir" || return 1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/O=Demo TPM Vendor/CN=Demo TPM Vendor EK CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; return 1; }
  # swtpm_localca signs with signingkey as issuercert; statedir holds its lock and serial.
  cat >"$dir/swtpm-localca.conf" <<CONF
statedir = $dir/localca
signingkey = $dir/ca.key
issuercert = $dir/ca.crt
certserial = $dir/localca/certserial
CONF
  # The options file (swtpm-tools' /etc/swtpm-localca.options) names the platform certificate's
  # manufacturer, version and model; optional.
  {
    echo "create_certs_tool = $(command -v swtpm_localca)"
    echo "create_certs_tool_config = $dir/swtpm-localca.conf"
    [[ -f /etc/swtpm-localca.options ]] && echo "create_certs_tool_options = /etc/swtpm-localca.options"
    echo "active_pcr_banks = sha256"
  } >"$dir/swtpm_setup.conf"
}

swtpm_manufacture() {  # swtpm_manufacture CA_DIR TPM_DIR
  local ca=$1 dir=$2
  mkdir -p "$dir" && chmod 0700 "$dir" || return 1
  if ! swtpm_setup --tpm2 --tpmstate "$dir" --create-ek-cert --create-platform-cert \
      --config "$ca/swtpm_setup.conf" --overwrite --logfile "$dir/swtpm_setup.log" >/dev/null 2>&1; then
    echo "swtpm_manufacture: swtpm_setup failed for $dir:" >&2
    tail -5 "$dir/swtpm_setup.log" >&2
    return 1
  fi
}

# Two adjacent free ports on 127.0.0.1, both bound at once (then released: a small race).
swtpm_free_ports() {
  python3 - <<'PY'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p >= 65535:
        a.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); b.close(); continue
    a.close(); b.close(); print(p); break
else:
    raise SystemExit("no two adjacent free ports")
PY
}

swtpm_start() {  # swtpm_start TPM_DIR
  local dir=$1 port pid _
  port=$(swtpm_free_ports) || return 1
  swtpm socket --tpm2 --tpmstate "dir=$dir" \
    --server "type=tcp,bindaddr=127.0.0.1,port=$port" \
    --ctrl "type=tcp,bindaddr=127.0.0.1,port=$((port + 1))" \
    --flags not-need-init,startup-clear --log "file=$dir/swtpm.log" </dev/null >/dev/null 2>&1 &
  pid=$!
  swtpm_pids[$dir]=$pid
  echo "$pid" >"$dir/swtpm.pid"
  echo "swtpm:host=127.0.0.1,port=$port" >"$dir/tcti"
  # Ready when the control port accepts (a probe on the data port would take swtpm's one
  # client slot until it notices the close).
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "swtpm_start: swtpm exited at start ($dir/swtpm.log)" >&2; return 1; }
    sleep 0.05
  done
  echo "swtpm_start: swtpm did not listen on port $((port + 1)) within 5 s" >&2
  swtpm_stop "$dir"
  return 1
}

swtpm_tcti() { cat "$1/tcti"; }

swtpm_stop() {  # swtpm_stop TPM_DIR
  local dir=$1 pid=${swtpm_pids[$1]:-} _
  [[ -n $pid ]] || return 0
  unset "swtpm_pids[$dir]"
  # swtpm acts on SIGTERM between commands; one blocked on an open client connection needs
  # SIGKILL. Its NV state is written by each command it completed, so either is consistent.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$dir/swtpm.pid"
}

swtpm_stop_all() {
  local dir
  for dir in "${!swtpm_pids[@]}"; do kill -TERM "${swtpm_pids[$dir]}" 2>/dev/null || true; done
  for dir in "${!swtpm_pids[@]}"; do swtpm_stop "$dir"; done
}

swtpm_read_ek_certificate() {  # swtpm_read_ek_certificate TPM_DIR OUT.pem
  local dir=$1 out=$2
  if ! TPM2TOOLS_TCTI=$(swtpm_tcti "$dir") tpm2_nvread 0x01c00002 -o "$out.der" >"$dir/tpm2-tools.log" 2>&1 ||
    ! openssl x509 -inform der -in "$out.der" -out "$out" 2>>"$dir/tpm2-tools.log"; then
    echo "swtpm_read_ek_certificate: $(tail -1 "$dir/tpm2-tools.log")" >&2
    rm -f "$out.der"
    return 1
  fi
  rm -f "$out.der"
}

swtpm_ek_device_id() {  # swtpm_ek_device_id TPM_DIR
  local dir=$1
  TPM2TOOLS_TCTI=$(swtpm_tcti "$dir") tpm2_readpublic -c 0x81010001 -f tpmt -o "$dir/ek.tpmt" \
    >"$dir/tpm2-tools.log" 2>&1 || { echo "swtpm_ek_device_id: $(tail -1 "$dir/tpm2-tools.log")" >&2; return 1; }
  sha256sum "$dir/ek.tpmt" | cut -d' ' -f1
}
