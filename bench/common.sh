# Shared by the bench scripts: a scratch copy of ../shared/bench with its dependencies installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
WORK="${BENCH_WORK:-/tmp/uipd-bench}"
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
[ -x "$ROOT/.venv/bin/uipd" ] || "$ROOT/scripts/setup"
if [ ! -d "$WORK/loadgen/node_modules" ]; then
  rm -rf "$WORK" && cp -r "$SHARED" "$WORK" && chmod -R u+w "$WORK"
  (cd "$WORK/loadgen" && npm ci --silent) && (cd "$WORK/ref-node" && npm ci --silent)
fi
if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet -r "$WORK/ref-websockets/requirements.txt" matplotlib==3.11.2
fi
# uipd serves the scenario's state file through the bundled `file` source.
cat > "$WORK/uipd-bench.toml" <<TOML
[server]
host = "127.0.0.1"
[log]
level = "warning"
[sources.state]
plugin = "file"
path = "$WORK/data/topics-empty.json"
TOML
UIPD_CMD="$ROOT/.venv/bin/uipd run -c $WORK/uipd-bench.toml --set server.port={port} --set api.port={api_port} --set sources.state.path='\"{snapshot_file}\"'"
