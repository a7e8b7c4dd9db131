#!/usr/bin/env bash
# Local AWS emulators for kinesin's tests and demos.
#
#   scripts/emulators.sh start    install (once), start, wait until ready
#   scripts/emulators.sh stop     stop what `start` started (by pid file only)
#   scripts/emulators.sh status   print what runs; exit 0 only if both are up
#   scripts/emulators.sh running  exit 0 if both processes that `start`
#                                 started are alive (ready or busy)
#   scripts/emulators.sh env      print `export` lines for the test clients:
#                                 eval "$(scripts/emulators.sh env)"
#
# Kinesis: kinesis-mock (npm kinesis-local, the only local server with
# Enhanced Fan-Out), on a plain port (HTTP/1.1 and h2c) and a TLS port
# (HTTP/2 through ALPN) whose certificate is signed by a CA generated here.
# DynamoDB: dynalite (in memory). Everything is in memory: a restart wipes
# streams and tables.
#
# Needs: node + npm (npm registry), openssl (once, for the certificate).
#
# Environment (all optional):
#   KINESIN_EMU_DIR           cache and state dir   (~/.cache/kinesin-emulators)
#   KINESIN_KINESIS_PORT      kinesis plain port    (4568)
#   KINESIN_KINESIS_TLS_PORT  kinesis TLS port      (4567)
#   KINESIN_DYNAMODB_PORT     dynalite port         (4570)
#   KINESIN_EMU_TIMEOUT_S     readiness timeout     (60)
set -euo pipefail

KINESIS_LOCAL_VERSION=0.6.2
DYNALITE_VERSION=4.0.0

EMU_DIR=${KINESIN_EMU_DIR:-${HOME:?HOME is not set; set KINESIN_EMU_DIR}/.cache/kinesin-emulators}
KINESIS_PORT=${KINESIN_KINESIS_PORT:-4568}
KINESIS_TLS_PORT=${KINESIN_KINESIS_TLS_PORT:-4567}
DYNAMODB_PORT=${KINESIN_DYNAMODB_PORT:-4570}
READY_TIMEOUT_S=${KINESIN_EMU_TIMEOUT_S:-60}

NPM_DIR=$EMU_DIR/npm
CERT_DIR=$EMU_DIR/certs
RUN_DIR=$EMU_DIR/run
KINESIS_JS=$NPM_DIR/node_modules/kinesis-local/main.js
DYNALITE_JS=$NPM_DIR/node_modules/dynalite/cli.js

say() { printf 'emulators: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed ($2)"
}

# --- install -----------------------------------------------------------------

installed_version() { # package
  local pkg_json=$NPM_DIR/node_modules/$1/package.json
  [ -f "$pkg_json" ] || return 0
  node -e 'process.stdout.write(String(require(process.argv[1]).version))' "$pkg_json"
}

install_packages() {
  if [ "$(installed_version kinesis-local)" = "$KINESIS_LOCAL_VERSION" ] &&
     [ "$(installed_version dynalite)" = "$DYNALITE_VERSION" ]; then
    return 0
  fi
  need npm "install Node.js with npm"
  say "installing kinesis-local@$KINESIS_LOCAL_VERSION and dynalite@$DYNALITE_VERSION into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  cat >"$NPM_DIR/package.json" <<EOF
{
  "name": "kinesin-emulators",
  "private": true,
  "dependencies": {
    "kinesis-local": "$KINESIS_LOCAL_VERSION",
    "dynalite": "$DYNALITE_VERSION"
  }
}
EOF
  if ! (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error >"$NPM_DIR/install.log" 2>&1); then
    cat "$NPM_DIR/install.log" >&2
    die "npm install failed (log above, also in $NPM_DIR/install.log)"
  fi
  [ "$(installed_version kinesis-local)" = "$KINESIS_LOCAL_VERSION" ] ||
    die "kinesis-local $KINESIS_LOCAL_VERSION missing after npm install"
  [ "$(installed_version dynalite)" = "$DYNALITE_VERSION" ] ||
    die "dynalite $DYNALITE_VERSION missing after npm install"
}

# A CA and a localhost certificate that rustls accepts (kinesis-local's
# bundled certificate has no subjectAltName), written as kinesis-mock's
# {"server":{"key":..,"cert":..}}. Generated once into a temp dir, then
# moved into place, so an interrupted run never leaves half a set.
make_certs() {
  [ -f "$CERT_DIR/server.json" ] && [ -f "$CERT_DIR/ca.pem" ] && return 0
  need openssl "needed once to make a localhost certificate"
  say "generating a local CA and a localhost certificate in $CERT_DIR"
  local tmp
  tmp=$(mktemp -d "${EMU_DIR}/certs.tmp.XXXXXX")
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.pem -subj "/CN=kinesin emulators local CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 \
      -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    cat >server.ext <<'EOF'
subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
EOF
    openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.pem -CAkey ca.key \
      -CAcreateserial -extfile server.ext -out server.pem 2>/dev/null
    node -e '
      const fs = require("fs");
      const server = { key: fs.readFileSync("server.key", "utf8"), cert: fs.readFileSync("server.pem", "utf8") };
      fs.writeFileSync("server.json", JSON.stringify({ server }));'
  ) || { rm -rf "$tmp"; die "certificate generation failed"; }
  rm -rf "$CERT_DIR"
  mv "$tmp" "$CERT_DIR"
}

# --- processes -----------------------------------------------------------------

pid_file() { echo "$RUN_DIR/$1.pid"; }
script_of() { # service
  case $1 in
    kinesis) echo "$KINESIS_JS" ;;
    dynamodb) echo "$DYNALITE_JS" ;;
  esac
}

# The pid recorded for a service, if that process is alive and still the
# emulator we started (not a recycled pid).
our_pid() { # service
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  cmdline_of "$pid" | grep -qF "$(script_of "$1")" || return 1
  echo "$pid"
}

cmdline_of() { # pid
  if [ -r "/proc/$1/cmdline" ]; then
    tr '\0' ' ' <"/proc/$1/cmdline"
  else
    ps -ww -p "$1" -o args= 2>/dev/null
  fi
}

port_open() { # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

refuse_busy() { # service port var
  if port_open "$2"; then
    die "port $2 (for $1) is already in use by a process this script did not start.
  Stop it, or choose another port: export $3=<free port>, then run
  scripts/emulators.sh start and eval \"\$(scripts/emulators.sh env)\" again."
  fi
}

start_kinesis() {
  KINESIS_MOCK_CERT_PATH="$CERT_DIR/server.json" \
  KINESIS_MOCK_PLAIN_PORT="$KINESIS_PORT" \
  KINESIS_MOCK_TLS_PORT="$KINESIS_TLS_PORT" \
  SHARD_LIMIT=500 \
  LOG_LEVEL=WARN \
  CREATE_STREAM_DURATION=100ms \
  DELETE_STREAM_DURATION=100ms \
  REGISTER_STREAM_CONSUMER_DURATION=100ms \
  DEREGISTER_STREAM_CONSUMER_DURATION=100ms \
  SPLIT_SHARD_DURATION=100ms \
  MERGE_SHARDS_DURATION=100ms \
  UPDATE_SHARD_COUNT_DURATION=100ms \
    nohup node "$KINESIS_JS" </dev/null >"$RUN_DIR/kinesis.log" 2>&1 &
  echo $! >"$(pid_file kinesis)"
}

start_dynamodb() {
  nohup node "$DYNALITE_JS" --host 127.0.0.1 --port "$DYNAMODB_PORT" \
    --createTableMs 50 --deleteTableMs 50 --updateTableMs 50 \
    </dev/null >"$RUN_DIR/dynamodb.log" 2>&1 &
  echo $! >"$(pid_file dynamodb)"
}

# Answers HTTP at all (any status). With a CA file, the TLS handshake must
# verify against it for the URL's host name.
http_answers() { # url [ca.pem]
  node -e '
    const [url, ca] = process.argv.slice(1);
    const mod = require(url.startsWith("https:") ? "https" : "http");
    const opts = ca ? { ca: require("fs").readFileSync(ca) } : {};
    const req = mod.get(url, opts, (res) => { res.resume(); process.exit(0); });
    req.on("error", () => process.exit(1));
    req.setTimeout(2000, () => process.exit(1));
  ' "$@"
}

# Ready = our process is alive AND its ports answer HTTP. The TLS port is
# checked with the generated CA, which also proves the certificate works.
is_ready() { # service
  our_pid "$1" >/dev/null && ports_answer "$1"
}

# Alive and not a zombie. Unlike our_pid, this does not look at the command
# line: right after `start_*`, the child may still be the forked shell that
# has not yet exec'd node (CI once failed on exactly that window).
started_alive() { # service
  local pid state
  pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -c1)
    [ "$state" != Z ] || return 1
  fi
}

ports_answer() { # service
  case $1 in
    kinesis)
      http_answers "http://127.0.0.1:$KINESIS_PORT/" &&
        http_answers "https://localhost:$KINESIS_TLS_PORT/" "$CERT_DIR/ca.pem"
      ;;
    dynamodb)
      http_answers "http://127.0.0.1:$DYNAMODB_PORT/"
      ;;
  esac
}

# Waits for a service this call started: alive (by pid) until its ports
# answer, and by then it must be the emulator itself (our_pid).
wait_ready() { # service
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until started_alive "$1" && ports_answer "$1" && our_pid "$1" >/dev/null; do
    if ! started_alive "$1"; then
      tail -n 30 "$RUN_DIR/$1.log" >&2 || true
      rm -f "$(pid_file "$1")"
      die "$1 exited during start-up (log above, also in $RUN_DIR/$1.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$RUN_DIR/$1.log" >&2 || true
      die "$1 not ready after ${READY_TIMEOUT_S}s (log above, also in $RUN_DIR/$1.log); raise KINESIN_EMU_TIMEOUT_S on a slow machine"
    fi
    sleep 0.1
  done
}

# With `started` as second argument, the pid file is trusted without the
# command-line check: the failure path of a start that this very call made,
# possibly before the child exec'd node.
stop_service() { # service [started]
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 0
  if pid=$(our_pid "$1") ||
     { [ "${2:-}" = started ] && started_alive "$1" && pid=$(cat "$f"); }; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
    say "stopped $1 (pid $pid)"
  else
    say "$1 was not running (stale pid file removed)"
  fi
  rm -f "$f"
}

# --- commands -----------------------------------------------------------------

cmd_start() {
  need node "install Node.js (with npm)"
  mkdir -p "$EMU_DIR" "$RUN_DIR"
  install_packages
  make_certs

  # Decide first, check every port, then start: never leave half a set.
  local todo=() svc
  for svc in kinesis dynamodb; do
    if our_pid "$svc" >/dev/null; then
      say "$svc already running (pid $(our_pid "$svc"))"
    else
      rm -f "$(pid_file "$svc")"
      todo+=("$svc")
    fi
  done
  for svc in ${todo[@]+"${todo[@]}"}; do
    case $svc in
      kinesis)
        refuse_busy kinesis "$KINESIS_PORT" KINESIN_KINESIS_PORT
        refuse_busy kinesis "$KINESIS_TLS_PORT" KINESIN_KINESIS_TLS_PORT
        ;;
      dynamodb) refuse_busy dynamodb "$DYNAMODB_PORT" KINESIN_DYNAMODB_PORT ;;
    esac
  done
  # A start that fails stops what this call started.
  STARTED=()
  trap 'for svc in ${STARTED[@]+"${STARTED[@]}"}; do stop_service "$svc" started; done' EXIT
  for svc in ${todo[@]+"${todo[@]}"}; do
    "start_$svc"
    STARTED+=("$svc")
  done
  wait_ready kinesis
  wait_ready dynamodb
  trap - EXIT
  if [ ${#todo[@]} -gt 0 ]; then
    say "ready: kinesis http://127.0.0.1:$KINESIS_PORT https://localhost:$KINESIS_TLS_PORT, dynamodb http://127.0.0.1:$DYNAMODB_PORT"
  fi
  say "for clients: eval \"\$(scripts/emulators.sh env)\""
}

cmd_stop() {
  stop_service kinesis
  stop_service dynamodb
}

cmd_status() {
  local ok=0 pid
  if pid=$(our_pid kinesis) && is_ready kinesis; then
    echo "kinesis:  running (pid $pid) on http://127.0.0.1:$KINESIS_PORT and https://localhost:$KINESIS_TLS_PORT"
  else
    echo "kinesis:  not running"; ok=3
  fi
  if pid=$(our_pid dynamodb) && is_ready dynamodb; then
    echo "dynamodb: running (pid $pid) on http://127.0.0.1:$DYNAMODB_PORT"
  else
    echo "dynamodb: not running"; ok=3
  fi
  return $ok
}

# For scripts that stop at the end only what they started: alive by pid
# file, whether or not the ports answer right now (a busy kinesis-mock can
# take longer than the status check's 2 s).
cmd_running() {
  our_pid kinesis >/dev/null && our_pid dynamodb >/dev/null
}

cmd_env() {
  emit() { printf 'export %s=%q\n' "$1" "$2"; }
  emit AWS_ACCESS_KEY_ID AKIDLOCAL
  emit AWS_SECRET_ACCESS_KEY secretlocal
  emit AWS_REGION us-east-1
  emit AWS_ENDPOINT_URL_KINESIS "http://127.0.0.1:$KINESIS_PORT"
  emit AWS_ENDPOINT_URL_DYNAMODB "http://127.0.0.1:$DYNAMODB_PORT"
  emit KINESIN_TLS_ENDPOINT "https://localhost:$KINESIS_TLS_PORT"
  emit KINESIN_TEST_CA "$CERT_DIR/ca.pem"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  running) cmd_running ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 start|stop|status|running|env" >&2
    exit 2
    ;;
esac
