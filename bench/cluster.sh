#!/usr/bin/env bash
# Deliveries/s with one uipd node against two nodes over Redis (127.0.0.1:6379), on this machine.
# With two nodes, each load generator puts half the clients on one node and publishes half the
# messages through that node's API; every client receives every message; the figure is the sum.
source "$(dirname "$0")/common.sh"
CLIENTS="${CLIENTS:-2000}"; RATE="${RATE:-200}"; MESSAGES="${MESSAGES:-1500}"
out="$RESULTS/cluster"; mkdir -p "$out"
free_port() { "$WORK/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_node() { # name prefix -> prints "pid port api"
  local port api; port=$(free_port); api=$(free_port)
  "$ROOT/.venv/bin/uipd" run -c "$WORK/uipd-bench.toml" --set server.port="$port" --set api.port="$api" \
    --set "sources.state.path=\"$WORK/data/topics-empty.json\"" --set 'broker.kind="redis"' --set "broker.prefix=\"$2\"" \
    --set "broker.node_id=\"$1\"" > "$out/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && break; sleep 0.1; done
  echo "$pid $port $api"
}
run_loadgen() { # port api clients rate messages outfile
  node "$WORK/loadgen/loadgen.js" --ws "ws://127.0.0.1:$1/" --api "http://127.0.0.1:$2" --scenario fanout \
    --clients "$3" --rate "$4" --messages "$5" --size 300 --publish-seconds 20 --drain-max 20 --out "$6" > /dev/null 2>&1 || true
}
prefix="bench-$$"
read -r p1 port1 api1 < <(start_node single "$prefix-1")
run_loadgen "$port1" "$api1" "$CLIENTS" "$RATE" "$MESSAGES" "$out/one-node.json"
kill -TERM "$p1"; wait "$p1" 2>/dev/null || true
read -r pa porta apia < <(start_node node-a "$prefix-2")
read -r pb portb apib < <(start_node node-b "$prefix-2")
run_loadgen "$porta" "$apia" $((CLIENTS / 2)) $((RATE / 2)) $((MESSAGES / 2)) "$out/two-nodes-a.json" &
run_loadgen "$portb" "$apib" $((CLIENTS / 2)) $((RATE / 2)) $((MESSAGES / 2)) "$out/two-nodes-b.json"
wait
kill -TERM "$pa" "$pb"; wait 2>/dev/null || true
"$WORK/venv/bin/python" - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
one = json.loads((d / "one-node.json").read_text())
two = [json.loads((d / f"two-nodes-{x}.json").read_text()) for x in "ab"]
summary = {
    "one_node": {"clients": one["clients"], "deliveries_per_s": one["deliveriesPerSec"], "p99_ms": one["latencyMs"]["p99"], "published": one["publish"]["ok"]},
    "two_nodes": {"clients": sum(t["clients"] for t in two), "deliveries_per_s": sum(t["deliveriesPerSec"] for t in two),
                  "p99_ms": max(t["latencyMs"]["p99"] for t in two), "published": sum(t["publish"]["ok"] for t in two),
                  "received": sum(t["deliveriesReceived"] for t in two)},
}
print(json.dumps(summary, indent=1))
(d / "summary.json").write_text(json.dumps(summary, indent=1))
PY
