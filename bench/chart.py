"""Chart of a sweep: deliveries/s and p99 latency against client count, uipd against the references.

usage: chart.py RESULTS_DIR OUT.png   (prints the collected numbers as JSON)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, out = Path(sys.argv[1]), sys.argv[2]
series: dict[str, list[tuple[int, float, float, float]]] = {}
for f in sorted(results.glob("*.json")):
    r = json.loads(f.read_text())
    if "deliveriesPerSec" not in r:
        continue
    cpu = (r.get("server") or {}).get("cpuSecPer1000Deliveries")
    series.setdefault(r["name"], []).append((r["clients"], r["deliveriesPerSec"], r["latencyMs"]["p99"], cpu))
for points in series.values():
    points.sort()
print(json.dumps({k: [dict(zip(("clients", "deliveries_per_s", "p99_ms", "cpu_s_per_1k"), p)) for p in v] for k, v in series.items()}, indent=1))
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for name, points in series.items():
    xs = [p[0] for p in points]
    a.plot(xs, [p[1] for p in points], marker="o", label=name)
    b.plot(xs, [p[2] for p in points], marker="o", label=name)
a.set(title="fan-out throughput", xlabel="clients", ylabel="deliveries/s")
b.set(title="fan-out latency (publish to receive)", xlabel="clients", ylabel="p99 ms", yscale="log")
counts = sorted({p[0] for points in series.values() for p in points})
for ax in (a, b):
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.grid(alpha=0.3)
    ax.legend()
fig.suptitle("uipd vs references, 200 msg/s offered, 300 B messages, 2 cores (server and load generator one each)")
fig.tight_layout()
fig.savefig(out, dpi=110)
