#!/usr/bin/env bash
# The kinesin demo, one command on a fresh machine (needs cargo, node + npm,
# openssl):
#
#   scripts/demo.sh
#
# 1. builds the `kinesin` CLI (debug);
# 2. starts the local Kinesis and DynamoDB emulators (scripts/emulators.sh),
#    unless they already run; stops them at the end only if it started them;
# 3. creates a 4-shard stream and produces records, some KPL-aggregated;
# 4. runs two Enhanced Fan-Out workers sharing one DynamoDB lease table
#    (failover time 3 s through the config's `lease_period`);
# 5. midway: splits a shard, produces more, then stops worker B with
#    kill -9 (a crash: no final checkpoint, no lease released) and measures
#    how long until worker A holds all of B's shards;
# 6. prints `kinesin status` of the fleet (each shard's owner, checkpoint,
#    parent/child state; the split parent ended, its children held);
# 7. ends with a summary: records produced / delivered / duplicated (by the
#    unique id in each record), shards per worker, failover time, lease-table
#    (DynamoDB) writes.
#
# Everything it writes goes to a fresh directory under /tmp (printed).
# Environment: KINESIN_DEMO_RECORDS (records per produce round, default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${KINESIN_DEMO_RECORDS:-2000}
say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

say "building the kinesin CLI (cargo build -p kinesin-cli)"
cargo build -q -p kinesin-cli
K=$PWD/target/debug/kinesin

STARTED_EMULATORS=0
# `running`, not `status`: a kinesis-mock busy with old subscriptions may
# not answer status's check in time, and must not be stopped at the end.
if scripts/emulators.sh running; then
  say "emulators already running: using them (they are left running)"
  scripts/emulators.sh start # waits until they answer
else
  say "starting the emulators (scripts/emulators.sh start)"
  scripts/emulators.sh start
  STARTED_EMULATORS=1
fi
eval "$(scripts/emulators.sh env)"

WORK=$(mktemp -d /tmp/kinesin-demo.XXXXXX)
RUN=demo-$(date +%s)-$$
STREAM=$RUN
TABLE=$RUN-leases
APP=$RUN-app
PID_A=
PID_B=
PID_PROGRESS=

cleanup() {
  local rc=$?
  for p in $PID_PROGRESS $PID_A $PID_B; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in $PID_A $PID_B; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$STARTED_EMULATORS" = 1 ]; then
    scripts/emulators.sh stop || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/consumer.yaml" <<EOF
# Bento aws_kinesis names; short periods so that the demo takes a minute.
lease_period: 3s        # failover time: a silent worker loses its leases after 3 s
rebalance_period: 5s
commit_period: 1s
shard_sync_period: 2s   # ListShards: how fast the split is noticed
shutdown_timeout: 5s
EOF

say "work dir: $WORK (stream $STREAM, lease table $TABLE, EFO consumer $APP)"

say "creating a 4-shard stream; producing $N records, then $N in KPL aggregates of 20"
$K produce --stream "$STREAM" --create --shards 4 --count "$N" --keys 64 2>&1 | grep -v INFO
$K produce --stream "$STREAM" --count "$N" --keys 64 --aggregate 20 2>&1 | grep -v INFO
PRODUCED=$((2 * N))

start_worker() { # name
  $K consume --config "$WORK/consumer.yaml" --stream "$STREAM" --efo "$APP" \
    --lease-table "$TABLE" --create-table --worker-id "worker-$1" \
    >"$WORK/$1.jsonl" 2>"$WORK/$1.log" &
}

say "starting two EFO workers (worker-a, worker-b) on one lease table"
start_worker a
PID_A=$!
sleep 1
start_worker b
PID_B=$!

lines() { cat "$WORK/$1.jsonl" 2>/dev/null | wc -l | tr -d ' '; }
held_by() { # worker -> leases it holds now
  $K leases --lease-table "$TABLE" 2>/dev/null |
    awk -v w="worker-$1" 'NR > 1 && $3 == w && $7 != "ended" { n++ } END { print n + 0 }'
}
progress() {
  local t0
  t0=$(now)
  while sleep 2; do
    printf '   [%5ss] delivered: worker-a %6s, worker-b %6s   leases held: a %s, b %s\n' \
      "$(since "$t0")" "$(lines a)" "$(lines b)" "$(held_by a)" "$(held_by b)" >&2
  done
}
progress &
PID_PROGRESS=$!

wait_delivered() { # total timeout_s
  local deadline=$((SECONDS + $2))
  while [ $(($(lines a) + $(lines b))) -lt "$1" ]; do
    if [ $SECONDS -ge $deadline ]; then
      say "warning: only $(($(lines a) + $(lines b))) of $1 records delivered after $2 s"
      return 0
    fi
    sleep 1
  done
}

wait_delivered "$PRODUCED" 90
sleep 4 # let the balancing pass split the shards between the workers
LEASES_BEFORE=$($K leases --lease-table "$TABLE")
say "lease table with both workers:"
echo "$LEASES_BEFORE" >&2

say "splitting shardId-000000000000 (kinesin admin split), then producing $N more records"
$K admin split --stream "$STREAM" --shard shardId-000000000000 >/dev/null
$K produce --stream "$STREAM" --count "$N" --keys 64 2>&1 | grep -v INFO
PRODUCED=$((PRODUCED + N))
wait_delivered "$PRODUCED" 90

say "producing $N more; meanwhile kill -9 worker-b (a crash: no final checkpoint, no lease released)"
$K produce --stream "$STREAM" --count "$N" --keys 64 2>&1 | grep -v INFO &
PID_PRODUCE=$!
sleep 2
B_HELD=$(held_by b)
B_WRITES=$(grep -o '[0-9]* lease-table writes' "$WORK/b.log" | tail -1 | cut -d' ' -f1)
{ kill -9 "$PID_B"; T_KILL=$(now); wait "$PID_B" || true; } 2>/dev/null
PID_B=
wait "$PID_PRODUCE"
PRODUCED=$((PRODUCED + N))
FAILOVER=
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  if [ "$(held_by b)" = 0 ]; then
    FAILOVER=$(since "$T_KILL")
    break
  fi
  sleep 0.3
done
wait_delivered "$PRODUCED" 90
sleep 3 # a last look for stragglers (duplicates arrive before this)

LEASES_AFTER=$($K leases --lease-table "$TABLE")
say "lease table after the failover:"
echo "$LEASES_AFTER" >&2

# The operator's view of the same fleet (read-only; a failure here is
# reported, not fatal: the demo's outcome is the summary below).
say "kinesin status --lease-table $TABLE --stream $STREAM:"
$K status --lease-table "$TABLE" --stream "$STREAM" --sample 0 >&2 ||
  say "warning: kinesin status failed (exit $?)"

say "stopping worker-a with SIGTERM (final checkpoints, leases released)"
kill "$PID_PROGRESS" 2>/dev/null || true
PID_PROGRESS=
kill -TERM "$PID_A"
wait "$PID_A" && A_RC=0 || A_RC=$?
PID_A=
A_WRITES=$(grep -o '[0-9]* lease-table writes' "$WORK/a.log" | tail -1 | cut -d' ' -f1)

TALLY=$($K admin tally --expect "$PRODUCED" "$WORK/a.jsonl" "$WORK/b.jsonl")
field() { echo "$TALLY" | awk -v k="$1" '$1 == k { print $2 }'; }
shards_of() { # worker -> distinct shards it delivered records from
  echo "$TALLY" | awk -v f="$WORK/$1.jsonl" '$1 == "file" && $2 == f { for (i = 4; i <= NF; i++) printf "%s ", $i }'
}
CHILDREN=$(echo "$LEASES_AFTER" | awk 'NR > 1 && $6 == "shardId-000000000000" { printf "%s ", $2 }')
CHILDREN_READ=$(for c in $CHILDREN; do
  if grep -q "\"shard\":\"$c\"" "$WORK/a.jsonl" "$WORK/b.jsonl"; then printf '%s ' "$c"; fi
done)
count_owned() { # table worker
  echo "$1" | awk -v w="worker-$2" 'NR > 1 && $3 == w { n++ } END { print n + 0 }'
}

cat <<EOF

================ kinesin demo summary ================
records produced          $PRODUCED ($N of them in KPL aggregates of 20)
records delivered         $(field delivered) (worker-a $(lines a), worker-b $(lines b))
distinct records          $(field unique)
duplicates                $(field duplicates) (at-least-once: what worker-b delivered after its last checkpoint is read again by worker-a)
missing                   $(field missing)
shards per worker         before the crash: worker-a $(count_owned "$LEASES_BEFORE" a), worker-b $(count_owned "$LEASES_BEFORE" b); after: worker-a $(count_owned "$LEASES_AFTER" a), worker-b $(count_owned "$LEASES_AFTER" b)
shards read               worker-a: $(shards_of a)
                          worker-b: $(shards_of b)
resharding                shardId-000000000000 split into ${CHILDREN:-?}; children with records delivered: ${CHILDREN_READ:-none}
failover time             ${FAILOVER:-not observed within 60 s} s from kill -9 until worker-a held all of worker-b's $B_HELD shards (lease_period 3s)
DynamoDB writes           worker-a ${A_WRITES:-?} (whole run), worker-b at least ${B_WRITES:-?} (last log line before the kill)
worker-a exit code        $A_RC (after SIGTERM)
outputs                   $WORK/{a,b}.jsonl, logs $WORK/{a,b}.log
======================================================
EOF
