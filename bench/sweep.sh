#!/usr/bin/env bash
# Fanout at several client counts for uipd and both references: deliveries/s and p99 latency.
source "$(dirname "$0")/common.sh"
COUNTS="${COUNTS:-250 500 1000 2000 4000}"
out="$RESULTS/sweep"
mkdir -p "$out"
free_port() { "$WORK/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A CMDS=(
  [uipd]="$UIPD_CMD"
  [ref-node]="node $WORK/ref-node/server.js --port {port} --api-port {api_port} --snapshot-file {snapshot_file}"
  [ref-websockets]="$WORK/venv/bin/python $WORK/ref-websockets/server.py --port {port} --api-port {api_port} --snapshot-file {snapshot_file}"
)
for n in $COUNTS; do
  for name in uipd ref-node ref-websockets; do
    port=$(free_port); api=$(free_port)
    cmd="${CMDS[$name]//\{port\}/$port}"; cmd="${cmd//\{api_port\}/$api}"; cmd="${cmd//\{snapshot_file\}/$WORK/data/topics-empty.json}"
    bash -c "exec $cmd" > "$out/$name-$n.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$api") 2>/dev/null && break; sleep 0.1; done
    sleep 0.3
    echo "fanout $n clients: $name" >&2
    node "$WORK/loadgen/loadgen.js" --ws "ws://127.0.0.1:$port/" --api "http://127.0.0.1:$api" --pid "$pid" --name "$name" \
      --scenario fanout --clients "$n" --rate 200 --messages 1000 --size 300 --publish-seconds 15 --drain-max 20 \
      --out "$out/$name-$n.json" > /dev/null 2>&1 || true
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    sleep 1
  done
done
"$WORK/venv/bin/python" "$ROOT/bench/chart.py" "$out" "$ROOT/docs/performance-fanout.png" > "$RESULTS/sweep.json"
echo "chart: docs/performance-fanout.png; numbers: bench/results/sweep.json" >&2
