"""The workers' nice value against latency near saturation and goodput under overload.

One `tidal serve` pinned to one core serves the `mlp` (objective 10 ms) and
`transformer_large` (objective 100 ms) under the adaptive policy once per nice
value studied; the load generator on the other core offers, in interleaved
rounds, the mlp a Poisson load near its capacity and transformer_large five
times its capacity.

Usage:
    python benchmarks/scenarios/worker_nice.py [--nice 0,5,10,19] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tidal.bench import make_workload, run_step
from tidal.bench.launch import ServerProcess
from tidal.zoo import write_zoo

# model -> (objective ms, max_batch_size)
MODELS = {"mlp": (10.0, 64), "transformer_large": (100.0, 32)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nice", default="0,5,10,19")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlp-rate", type=float, default=10_500.0)
    parser.add_argument("--large-rate", type=float, default=2_500.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.client_cpu})
    nices = [int(n) for n in args.nice.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="tidal-nice-"))
    write_zoo(tmp / "zoo")
    for model, (slo, max_batch) in MODELS.items():
        for nice in nices:
            folder = tmp / "repo" / f"{model}_n{nice}"
            folder.mkdir(parents=True)
            shutil.copy(tmp / "zoo" / model / "model.onnx", folder / "model.onnx")
            (folder / "tidal.toml").write_text(
                f"max_batch_size = {max_batch}\n[batching]\nslo_ms = {slo}\n"
                f"[instances]\nnice = {nice}\n"
            )
    rates = {"mlp": args.mlp_rate, "transformer_large": args.large_rate}
    rows: list[dict[str, float | str | int]] = []
    with ServerProcess(tmp / "repo", cpus=[args.server_cpu]) as server:
        workloads = {
            f"{m}_n{n}": make_workload(server.target, f"{m}_n{n}", count=64)
            for m in MODELS
            for n in nices
        }
        for round_ in range(1, args.rounds + 1):
            for model, (slo, _) in MODELS.items():
                for nice in nices:
                    name = f"{model}_n{nice}"
                    r = run_step(
                        server.target,
                        workloads[name],
                        label=name,
                        mode="open",
                        rate=rates[model],
                        slo_ms=slo,
                        duration_s=args.duration,
                        warmup_s=1.0,
                    )
                    row = {
                        "model": model,
                        "nice": nice,
                        "round": round_,
                        "offered": r.offered_rate or 0.0,
                        "throughput": r.throughput,
                        "goodput": r.goodput,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "refused": sum(r.errors.values()),
                        "batch": r.mean_batch_size or 0.0,
                    }
                    rows.append(row)
                    print(
                        f"round {round_} {name:24s} thr {r.throughput:8.0f}/s good {r.goodput:8.0f}/s"
                        f" p50 {r.p50_ms:6.2f} p99 {r.p99_ms:7.2f} batch {row['batch']:5.1f}"
                        f" errors {r.errors}",
                        flush=True,
                    )
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n| model | nice | goodput/s (median) | P50 ms | P99 ms (median) | P99 per round |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        for nice in nices:
            mine = [r for r in rows if r["model"] == model and r["nice"] == nice]
            p99s = [float(r["p99_ms"]) for r in mine]
            print(
                f"| {model} | {nice} | {statistics.median(float(r['goodput']) for r in mine):,.0f} | "
                f"{statistics.median(float(r['p50_ms']) for r in mine):.2f} | "
                f"{statistics.median(p99s):.1f} | {' / '.join(f'{p:.1f}' for p in p99s)} |"
            )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "worker_nice.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
