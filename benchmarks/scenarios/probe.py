"""One model configuration under one load, seen from the client and from the server.

Serves a zoo model under one configuration on one core, offers it an
open-loop Poisson load from the other core (optionally a second,
batch-priority flood at the same time), then prints the client's figures
beside the server's own: admitted, refused, expired and completed requests,
queue, compute and end-to-end quantiles, and the fitted batch cost. The
difference between the client's and the server's end-to-end times is the
time a request spends outside the server's clock (socket, network thread,
encoding).

This is the tool for comparing two builds: run it on one, rebuild, run it on
the other, and alternate for a few rounds, since this machine's figures move
from minute to minute.

Usage:
    python benchmarks/scenarios/probe.py --model transformer_large --slo-ms 100 \\
        --max-batch 32 --rate 2500[,R...] [--flood 1500] [--duration 5] [--rounds 1] \\
        [--serve=--network-scheduling=normal]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import grpc
from tidal._proto import grpc_service_pb2 as pb
from tidal._proto import grpc_service_pb2_grpc as pb_grpc
from tidal.bench import TrafficClass, Workload, make_workload, run_step
from tidal.bench.launch import ServerProcess
from tidal.zoo import write_zoo


def server_figures(target: str, model: str) -> list[str]:
    """The server's own statistics of `model`, a line per priority level and one for the cost."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]
    lines = []
    for lane in stats.priority_stats:
        if not (lane.admitted or lane.refused):
            continue
        quantiles = "  ".join(
            f"{stage} p50 {getattr(lane, stage).p50_us / 1e3:.2f} p99 "
            f"{getattr(lane, stage).p99_us / 1e3:.2f}"
            for stage in ("queue", "compute", "end_to_end")
        )
        lines.append(
            f"  server, priority {lane.priority}: admitted {lane.admitted} refused "
            f"{lane.refused} expired {lane.expired} completed {lane.completed}; {quantiles} ms"
        )
    cost = stats.batch_cost
    lines.append(
        f"  fitted cost: {cost.fixed_us:.0f} us + {cost.per_row_us:.1f} us/row, "
        f"tail factor {cost.tail_factor:.2f}"
    )
    return lines


def probe(args: argparse.Namespace, repo: Path, round_: int) -> None:
    """One round on a fresh server, whose statistics then cover this round only."""
    with ServerProcess(repo, cpus=[args.server_cpu], extra_args=args.serve) as server:

        def at(priority: int) -> Workload:
            return make_workload(
                server.target,
                "m",
                count=64,
                classes=(TrafficClass(name=f"priority {priority}", priority=priority),),
            )

        results: dict[str, Any] = {}

        def drive(name: str, load: Workload, rate: float, seed: int) -> None:
            results[name] = run_step(
                server.target,
                load,
                label=name,
                mode="open",
                rate=rate,
                slo_ms=args.slo_ms,
                duration_s=args.duration,
                warmup_s=args.warmup,
                seed=seed,
            )

        online, flood = at(1), at(2)
        for rate in (float(r) for r in args.rate.split(",")):
            loads = [("online", online, rate, 1)]
            if args.flood:
                loads.append(("flood", flood, args.flood, 2))
            threads = [threading.Thread(target=drive, args=load) for load in loads]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"round {round_}: {args.model}, {args.policy}, slo {args.slo_ms:g} ms")
            for name, r in results.items():
                print(
                    f"  client, {name}: offered {r.offered_rate:.0f}/s answered "
                    f"{r.throughput:.0f}/s goodput {r.goodput:.0f}/s p50 {r.p50_ms:.2f} "
                    f"p99 {r.p99_ms:.2f} ms, mean batch {r.mean_batch_size or 0:.1f}, "
                    f"errors {r.errors}"
                )
            # The server's figures cover the whole round so far.
            for line in server_figures(server.target, "m"):
                print(line)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp", help="a zoo model")
    parser.add_argument("--slo-ms", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--policy", default="adaptive", choices=("adaptive", "static"))
    parser.add_argument(
        "--rate", required=True, help="online requests/s; R,R,... runs each in turn on one server"
    )
    parser.add_argument("--flood", type=float, default=0.0, help="batch-priority requests/s")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="OPTION",
        help="a `tidal serve` option, e.g. --serve=--network-scheduling=normal (repeatable)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.client_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="tidal-probe-"))
    write_zoo(tmp / "zoo")
    folder = tmp / "repo" / "m"
    folder.mkdir(parents=True)
    shutil.copy(tmp / "zoo" / args.model / "model.onnx", folder / "model.onnx")
    (folder / "tidal.toml").write_text(
        f'max_batch_size = {args.max_batch}\n[batching]\npolicy = "{args.policy}"\n'
        f"slo_ms = {args.slo_ms}\n"
    )
    try:
        for round_ in range(1, args.rounds + 1):
            probe(args, tmp / "repo", round_)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
