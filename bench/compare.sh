#!/usr/bin/env bash
# The standard suite against uipd and both references, one run; the table is printed and saved.
source "$(dirname "$0")/common.sh"
out="$RESULTS/compare-$(date +%Y%m%d-%H%M%S)"
"$WORK/compare.sh" --python "$WORK/venv/bin/python" --server "$UIPD_CMD" --name uipd --out "$out" "$@" | tee "$out.md"
echo "raw results: $out" >&2
