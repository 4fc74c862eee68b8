"""How much the machine itself delays a thread, per core, with nothing of
tidal running: the noise floor under every latency a benchmark reports.

On a shared or virtual machine a core can be taken away from a running
thread (another tenant, the hypervisor), and a core that went idle can take
milliseconds to come back when its thread is woken: a virtual CPU that halts
is descheduled by its host, and is woken only when the host gets round to
it. A server at 10% load and a load generator between sends sleep most of
the time, so the second kind lands on their tails directly. Each core is
measured in two phases, in its own process pinned to it, all cores at once:

- *wake-up*: sleep 1 ms, again and again; how late each sleep returns;
- *running*: read the clock in a tight loop; every gap longer than
  `GAP_S` is time the core was taken from the thread.

And between two cores, the *round trip* of one byte over a pair of pipes,
back to back: each side wakes the other, as a request and its answer wake
a server and its client on loopback. On a nested virtual machine a wake-up
across cores is an interrupt the hypervisors relay, and its cost can stay
hidden while each core alone looks quiet.

`python -m tidal.bench.noise --cpus 0,1 --seconds 10` prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["CoreNoise", "RoundTrip", "measure", "print_noise", "print_round_trip", "round_trip"]

SLEEP_S = 0.001
"""The wake-up phase's sleep."""
GAP_S = 50e-6
"""A clock gap longer than this in the running phase is time taken away
(the loop itself reads the clock every fraction of a microsecond, and a
timer tick costs a few)."""


@dataclass
class CoreNoise:
    """One core's figures (milliseconds)."""

    cpu: int
    seconds: float
    """Length of each phase."""
    wake_p50_ms: float
    """How late a 1 ms sleep returned: median..."""
    wake_p99_ms: float
    wake_p999_ms: float
    wake_max_ms: float
    wake_over_5ms: int
    """Sleeps that returned more than 5 ms late."""
    run_lost: float
    """Share of the running phase in clock gaps longer than `GAP_S`."""
    run_max_gap_ms: float
    run_gaps_over_1ms: int


@dataclass
class RoundTrip:
    """Round trips of one byte between two cores (milliseconds)."""

    cpus: list[int]
    """The pinging core, then the answering one."""
    seconds: float
    trips: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    over_1ms: int
    """Round trips longer than 1 ms."""


def _wake_phase(seconds: float) -> np.ndarray:
    late = []
    end = time.monotonic() + seconds
    while (start := time.monotonic()) < end:
        time.sleep(SLEEP_S)
        late.append(time.monotonic() - start - SLEEP_S)
    return np.array(late) * 1e3


def _run_phase(seconds: float) -> np.ndarray:
    gaps = []
    clock = time.perf_counter
    last = begin = clock()
    end = begin + seconds
    while (now := clock()) < end:
        if now - last > GAP_S:
            gaps.append(now - last)
        last = now
    return np.array(gaps) * 1e3


def _measure_here(cpu: int, seconds: float) -> CoreNoise:
    os.sched_setaffinity(0, {cpu})
    late = _wake_phase(seconds)
    gaps = _run_phase(seconds)
    return CoreNoise(
        cpu=cpu,
        seconds=seconds,
        wake_p50_ms=float(np.percentile(late, 50)),
        wake_p99_ms=float(np.percentile(late, 99)),
        wake_p999_ms=float(np.percentile(late, 99.9)),
        wake_max_ms=float(late.max()),
        wake_over_5ms=int((late > 5.0).sum()),
        run_lost=float(gaps.sum() / 1e3 / seconds),
        run_max_gap_ms=float(gaps.max()) if gaps.size else 0.0,
        run_gaps_over_1ms=int((gaps > 1.0).sum()),
    )


def _ping(cpu: int, seconds: float, out_fd: int, in_fd: int) -> RoundTrip:
    os.sched_setaffinity(0, {cpu})
    trips = []
    clock = time.perf_counter
    end = clock() + seconds
    while (start := clock()) < end:
        os.write(out_fd, b"x")
        os.read(in_fd, 1)
        trips.append(clock() - start)
    rtt = np.array(trips) * 1e3
    return RoundTrip(
        cpus=[cpu],
        seconds=seconds,
        trips=int(rtt.size),
        p50_ms=float(np.percentile(rtt, 50)),
        p99_ms=float(np.percentile(rtt, 99)),
        p999_ms=float(np.percentile(rtt, 99.9)),
        max_ms=float(rtt.max()),
        over_1ms=int((rtt > 1.0).sum()),
    )


def _pong(cpu: int, in_fd: int, out_fd: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while os.read(in_fd, 1):
        os.write(out_fd, b"x")


def _child(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """This module in a process of its own, in one of its child modes."""
    return subprocess.Popen(
        [sys.executable, "-m", "tidal.bench.noise", *args],
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _failure(child: subprocess.Popen[str], stderr: str) -> str:
    """Why `child` failed: the last line it wrote to stderr, else its exit code."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {child.returncode}"


def round_trip(cpus: Sequence[int], seconds: float = 10.0) -> RoundTrip:
    """Round trips between the first two of `cpus`, each side in its own
    process pinned to its core, back to back for `seconds`."""
    if len(cpus) < 2:
        raise ValueError(f"a round trip needs two cores, got {list(cpus)}")
    ping, pong = cpus[0], cpus[1]
    there_r, there_w = os.pipe()
    back_r, back_w = os.pipe()
    answering = _child("--pong", str(pong), str(there_r), str(back_w), pass_fds=(there_r, back_w))
    pinging = _child(
        "--ping",
        str(ping),
        str(seconds),
        str(there_w),
        str(back_r),
        pass_fds=(there_w, back_r),
        stdout=subprocess.PIPE,
    )
    for fd in (there_r, there_w, back_r, back_w):
        os.close(fd)
    out, err = pinging.communicate(timeout=2 * seconds + 30)
    _, pong_err = answering.communicate(timeout=30)
    for child, cpu, why in ((pinging, ping, err), (answering, pong, pong_err)):
        if child.returncode != 0:
            raise RuntimeError(f"the round trip on cpu {cpu} failed: {_failure(child, why)}")
    trip = RoundTrip(**json.loads(out))
    trip.cpus = [ping, pong]
    return trip


def measure(cpus: Sequence[int], seconds: float = 10.0) -> list[CoreNoise]:
    """Measures each of `cpus` at once, each in its own process (so that no
    lock between them is measured), for `seconds` per phase."""
    children = [_child("--child", str(cpu), str(seconds), stdout=subprocess.PIPE) for cpu in cpus]
    figures = []
    for cpu, child in zip(cpus, children, strict=True):
        out, err = child.communicate(timeout=4 * seconds + 30)
        if child.returncode != 0:
            raise RuntimeError(f"measuring cpu {cpu} failed: {_failure(child, err)}")
        figures.append(CoreNoise(**json.loads(out)))
    return figures


def print_noise(figures: Sequence[CoreNoise], title: str = "the machine's own noise") -> None:
    """The figures as a table."""
    table = Table(title=f"{title} (ms): a 1 ms sleep's lateness; time lost while running")
    for name in ("cpu", "late P50", "P99", "P99.9", "max", "> 5 ms"):
        table.add_column(name, justify="right")
    for name in ("lost", "longest gap", "gaps > 1 ms"):
        table.add_column(name, justify="right")
    for f in figures:
        table.add_row(
            str(f.cpu),
            f"{f.wake_p50_ms:.3f}",
            f"{f.wake_p99_ms:.3f}",
            f"{f.wake_p999_ms:.3f}",
            f"{f.wake_max_ms:.2f}",
            f"{f.wake_over_5ms:,}",
            f"{f.run_lost:.2%}",
            f"{f.run_max_gap_ms:.2f}",
            f"{f.run_gaps_over_1ms:,}",
        )
    Console().print(table)


def print_round_trip(trip: RoundTrip, title: str = "round trips between cores") -> None:
    """The round trips as a table."""
    table = Table(title=f"{title} (ms)")
    for name in ("cpus", "trips", "P50", "P99", "P99.9", "max", "> 1 ms"):
        table.add_column(name, justify="right")
    table.add_row(
        " -> ".join(str(c) for c in trip.cpus),
        f"{trip.trips:,}",
        f"{trip.p50_ms:.3f}",
        f"{trip.p99_ms:.3f}",
        f"{trip.p999_ms:.3f}",
        f"{trip.max_ms:.2f}",
        f"{trip.over_1ms:,}",
    )
    Console().print(table)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpus", default="0,1", help="cores to measure, all at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--child", nargs=2, metavar=("CPU", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--ping", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--pong", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        cpu, seconds = int(args.child[0]), float(args.child[1])
        print(json.dumps(asdict(_measure_here(cpu, seconds))))
        return 0
    if args.ping:
        cpu, seconds, out_fd, in_fd = args.ping
        print(json.dumps(asdict(_ping(int(cpu), float(seconds), int(out_fd), int(in_fd)))))
        return 0
    if args.pong:
        cpu, in_fd, out_fd = (int(a) for a in args.pong)
        _pong(cpu, in_fd, out_fd)
        return 0
    cpus = [int(c) for c in args.cpus.split(",")]
    print_noise(measure(cpus, args.seconds))
    if len(cpus) >= 2:
        print_round_trip(round_trip(cpus, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
