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
from minute to minute. The server's threads' CPU time over the step (Linux)
says where the core went: the network threads' time per request offered,
the workers' time per request answered.

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
import time
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
            f"{lane.refused} expired {lane.expired} completed {lane.completed}; {quantiles} ms;"
            f" reserve {lane.admission_reserve:.2f}"
        )
    cost = stats.batch_cost
    lines.append(
        f"  fitted cost: {cost.fixed_us:.0f} us + {cost.per_row_us:.1f} us/row, "
        f"tail factor {cost.tail_factor:.2f}"
    )
    return lines


_TICK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's network threads and model workers,
    summed by kind (Linux /proc)."""
    totals: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        kind = "network" if name == "tidal-grpc" else "worker" if name.startswith("tidal-") else ""
        if kind:
            fields = stat.rsplit(")", 1)[1].split()
            totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return totals


def thread_figures(
    before: dict[str, float],
    after: dict[str, float],
    seconds: float,
    offered: float,
    answered: float,
) -> str:
    """What the network threads cost per request offered, and the workers per request answered."""
    network = after.get("network", 0.0) - before.get("network", 0.0)
    workers = after.get("worker", 0.0) - before.get("worker", 0.0)
    return (
        f"  server threads: network {network / seconds:.0%} of the core, "
        f"{network / max(offered, 1) * 1e6:.1f} us per request offered; workers "
        f"{workers / seconds:.0%}, {workers / max(answered, 1) * 1e6:.1f} us per request answered"
    )


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
            before, started = thread_times(server.pid), time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after, seconds = thread_times(server.pid), time.monotonic() - started
            # Warm-up and measured window together: what the thread times cover.
            window = args.warmup + args.duration
            print(f"round {round_}: {args.model}, {args.policy}, slo {args.slo_ms:g} ms")
            for name, r in results.items():
                print(
                    f"  client, {name}: offered {r.offered_rate:.0f}/s answered "
                    f"{r.throughput:.0f}/s goodput {r.goodput:.0f}/s p50 {r.p50_ms:.2f} "
                    f"p99 {r.p99_ms:.2f} ms, mean batch {r.mean_batch_size or 0:.1f}, "
                    f"send lag p50 {r.send_lag_p50_ms or 0:.2f} p99 {r.send_lag_p99_ms or 0:.2f} ms, "
                    f"receive lag p50 {r.receive_lag_p50_ms or 0:.2f} "
                    f"p99 {r.receive_lag_p99_ms or 0:.2f} ms, "
                    f"errors {r.errors}"
                )
            print(
                thread_figures(
                    before,
                    after,
                    seconds,
                    offered=sum(r.offered_rate for r in results.values()) * window,
                    answered=sum(r.throughput for r in results.values()) * window,
                )
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
