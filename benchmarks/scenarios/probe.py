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

With `--one-generator` the online load and the flood are two classes of
one generator's Poisson stream (one clock), and a line compares their
fates in the windows where online answers came late. With `--watch S` the
server's per-priority counts and admission reserve are sampled every S
seconds and printed as a timeline. With `--freeze MS` the server is
stopped for MS milliseconds every 0.3 s: a stall of its core on demand.
Every class's line has its "in flight" P99: latency less the generator's
own send and receive lag.

Usage:
    python benchmarks/scenarios/probe.py --model transformer_large --slo-ms 100 \\
        --max-batch 32 --rate 2500[,R...] [--flood 1500] [--duration 5] [--rounds 1] \\
        [--flood-priority 2] [--one-generator] [--watch 0.25] [--freeze 30] \\
        [--serve=--network-scheduling=normal]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tidal._proto import grpc_service_pb2 as pb
from tidal._proto import grpc_service_pb2_grpc as pb_grpc
from tidal.bench import ClassFigures, TrafficClass, Workload, make_workload, run_step
from tidal.bench.launch import ServerProcess
from tidal.zoo import write_zoo


class Freezer(threading.Thread):
    """Stops the server (SIGSTOP) for `freeze` seconds every
    `FREEZE_EVERY` seconds after `after` seconds, until stopped: a stall
    of the server's core, made to order, to see what becomes of the
    requests that arrive during it."""

    def __init__(self, pid: int, freeze: float, after: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.freeze, self.after = pid, freeze, after
        self.done = threading.Event()
        self.count = 0

    def run(self) -> None:
        if self.done.wait(self.after):
            return
        while not self.done.is_set():
            os.kill(self.pid, signal.SIGSTOP)
            try:
                time.sleep(self.freeze)
            finally:
                os.kill(self.pid, signal.SIGCONT)
            self.count += 1
            self.done.wait(FREEZE_EVERY)


def model_stats(target: str, model: str) -> Any:
    """The server's ModelStatistics of `model`."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]


def lane_counts(target: str, model: str) -> dict[int, tuple[int, int, int, float]]:
    """Per priority level: admitted, refused and expired so far, and the admission reserve."""
    stats = model_stats(target, model)
    return {
        lane.priority: (lane.admitted, lane.refused, lane.expired, lane.admission_reserve)
        for lane in stats.priority_stats
    }


class Watch(threading.Thread):
    """Samples the lanes' counts every `interval` seconds until stopped, so
    that admission's course through a round can be read afterwards."""

    def __init__(self, target: str, model: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.target, self.model, self.interval = target, model, interval
        self.samples: list[tuple[float, dict[int, tuple[int, int, int, float]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.done.wait(self.interval):
            self.samples.append((time.monotonic() - started, lane_counts(self.target, self.model)))

    def lines(self) -> list[str]:
        """One line per interval: per priority, requests admitted, refused and expired in it, and the reserve at its end."""
        out = []
        for (_, before), (t, after) in itertools.pairwise(self.samples):
            parts = []
            for priority, (admitted, refused, expired, reserve) in sorted(after.items()):
                a0, r0, e0, _ = before.get(priority, (0, 0, 0, 0.0))
                parts.append(
                    f"p{priority} +{admitted - a0} admitted +{refused - r0} refused "
                    f"+{expired - e0} expired reserve {reserve:.2f}"
                )
            out.append(f"    {t:5.1f} s  " + " | ".join(parts))
        return out


# Period of `--freeze`'s stalls.
FREEZE_EVERY = 0.3
# Width of the windows in which the classes' fates are compared.
_WINDOW_S = 0.005


def samples(raw: dict[str, Any], index: int) -> dict[str, np.ndarray]:
    """The generator's per-answer arrays of traffic class `index`."""
    mine = np.asarray(raw["class_index"]) == index
    keys = ("intended_s", "latency_ms", "sample_send_lag_ms", "sample_receive_lag_ms", "code")
    return {key: np.asarray(raw[key])[mine] for key in keys}


def in_flight_p99(s: dict[str, np.ndarray]) -> float:
    """P99 over the successes of latency less the generator's own send and
    receive lag: the time from the request leaving the generator's hands to
    its answer reaching the generator's socket."""
    ok = s["code"] == 0
    if not ok.any():
        return float("nan")
    rest = s["latency_ms"] - s["sample_send_lag_ms"] - s["sample_receive_lag_ms"]
    return float(np.percentile(rest[ok], 99))


def answered_late(s: dict[str, np.ndarray], slo_ms: float) -> int:
    """Successes whose latency at the client exceeded the objective."""
    return int(((s["code"] == 0) & (s["latency_ms"] > slo_ms)).sum())


def class_line(
    figures: ClassFigures, offered: float, s: dict[str, np.ndarray], slo_ms: float
) -> str:
    """A traffic class's line, for classes sharing one run: its figures, and
    from its samples what they leave out."""
    return (
        f"  client, {figures.name}: offered {offered:.0f}/s answered {figures.throughput:.0f}/s "
        f"p50 {figures.p50_ms:.2f} p99 {figures.p99_ms:.2f} ms "
        f"({answered_late(s, slo_ms)} over {slo_ms:g} ms), in flight p99 "
        f"{in_flight_p99(s):.2f} ms, send lag p99 "
        f"{np.percentile(s['sample_send_lag_ms'], 99):.2f} ms, receive lag p99 "
        f"{figures.receive_lag_p99_ms or 0:.2f} ms, errors {figures.errors}"
    )


def late_windows(online: dict[str, np.ndarray], flood: dict[str, np.ndarray], slo_ms: float) -> str:
    """What the flood got in the windows where online answers came late.

    Both classes wait through the same stalls; online requests overtake the
    flood, so in a stalled window the flood's are refused or expire while
    the online ones are answered late. The online P99 then carries the
    stalls and the flood's looks the better for having lost them.
    """
    late = (online["code"] == 0) & (online["latency_ms"] > slo_ms)
    windows = np.unique(np.floor(online["intended_s"][late] / _WINDOW_S))
    inside = np.isin(np.floor(flood["intended_s"] / _WINDOW_S), windows)

    def fate(mask: np.ndarray) -> str:
        n = int(mask.sum())
        answered = int((mask & (flood["code"] == 0)).sum())
        return f"{n} sent, {answered / max(n, 1):.0%} answered"

    return (
        f"  online answers over {slo_ms:g} ms: {int(late.sum())}, in {len(windows)} windows of "
        f"{_WINDOW_S * 1e3:g} ms; the flood in those windows: {fate(inside)}; "
        f"elsewhere: {fate(~inside)}"
    )


def server_figures(target: str, model: str) -> list[str]:
    """The server's own statistics of `model`, a line per priority level and one for the cost."""
    stats = model_stats(target, model)
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

        online, flood = at(1), at(args.flood_priority)
        for rate in (float(r) for r in args.rate.split(",")):
            loads = [("online", online, rate, 1)]
            if args.flood and args.one_generator:
                both = make_workload(
                    server.target,
                    "m",
                    count=64,
                    classes=(
                        TrafficClass(name="online", priority=1, weight=rate),
                        TrafficClass(name="flood", priority=args.flood_priority, weight=args.flood),
                    ),
                )
                loads = [("both", both, rate + args.flood, 1)]
            elif args.flood:
                loads.append(("flood", flood, args.flood, 2))
            threads = [threading.Thread(target=drive, args=load) for load in loads]
            watch = Watch(server.target, "m", args.watch) if args.watch else None
            freezer = Freezer(server.pid, args.freeze / 1e3, args.warmup) if args.freeze else None
            before, started = thread_times(server.pid), time.monotonic()
            for helper in (watch, freezer):
                if helper:
                    helper.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for helper in (watch, freezer):
                if helper:
                    helper.done.set()
                    helper.join()
            after, seconds = thread_times(server.pid), time.monotonic() - started
            # Warm-up and measured window together: what the thread times cover.
            window = args.warmup + args.duration
            stalls = f", the server stopped {freezer.count} times" if freezer else ""
            print(f"round {round_}: {args.model}, {args.policy}, slo {args.slo_ms:g} ms{stalls}")
            steps = list(results.values())
            shared = results.pop("both", None)
            if shared:
                on, fl = samples(shared.raw, 0), samples(shared.raw, 1)
                print(class_line(shared.classes[0], rate, on, args.slo_ms))
                print(class_line(shared.classes[1], args.flood, fl, args.slo_ms))
                print(late_windows(on, fl, args.slo_ms))
            for name, r in results.items():
                mine = samples(r.raw, 0)
                print(
                    f"  client, {name}: offered {r.offered_rate:.0f}/s answered "
                    f"{r.throughput:.0f}/s goodput {r.goodput:.0f}/s p50 {r.p50_ms:.2f} "
                    f"p99 {r.p99_ms:.2f} ms ({answered_late(mine, args.slo_ms)} over "
                    f"{args.slo_ms:g} ms), in flight p99 {in_flight_p99(mine):.2f} "
                    f"ms, mean batch {r.mean_batch_size or 0:.1f}, "
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
                    offered=sum(r.offered_rate for r in steps) * window,
                    answered=sum(r.throughput for r in steps) * window,
                )
            )
            # The server's figures cover the whole round so far.
            for line in server_figures(server.target, "m"):
                print(line)
            if watch:
                print(f"  every {args.watch:g} s:")
                for line in watch.lines():
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
    parser.add_argument(
        "--flood-priority", type=int, default=2, help="the flood's priority (1 is the highest)"
    )
    parser.add_argument(
        "--freeze",
        type=float,
        default=0.0,
        metavar="MS",
        help=f"stop the server for MS milliseconds every {FREEZE_EVERY:g} s of the round",
    )
    parser.add_argument(
        "--one-generator",
        action="store_true",
        help="send the online load and the flood from one generator, as two classes of one"
        " Poisson stream, and compare the two classes' fates window by window",
    )
    parser.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sample the server's per-priority counts and admission reserve this often",
    )
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
