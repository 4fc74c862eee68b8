"""Prometheus metrics, read from the core's counters at scrape time.

The core counts everything itself (atomics and histograms on the request
path); this module only converts a snapshot of `Server.statistics` into
Prometheus series when `/metrics` is scraped, so serving pays nothing for
metrics between scrapes.

Series, each labelled with `model`:

- `tidal_requests_total`: requests answered, successfully or not
- `tidal_request_failures_total`: requests answered with an error (refusals
  and malformed requests included)
- `tidal_request_refusals_total`: requests refused at admission (queue full,
  predicted to miss its deadline, unloading)
- `tidal_request_invalid_total`: requests refused as malformed before
  admission (`INVALID_ARGUMENT`: tensors that do not match the signature, bad
  parameters)
- `tidal_request_duration_seconds_total`: time from arrival to answer, summed
- `tidal_inferences_total`: samples run through the model (a batch of n counts n)
- `tidal_executions_total`: model executions, i.e. batches
- `tidal_queue_duration_seconds_total`: time requests spent queued, summed
- `tidal_compute_duration_seconds_total`: time spent running batches (input
  copy, inference, output copy), summed
- `tidal_queue_depth`: requests waiting now
- `tidal_batches_total`: batches run, labelled also with `batch_size`
- `tidal_priority_requests_total`: requests by `priority` and `outcome`
  (admitted, refused, expired, cancelled, completed, failed)
- `tidal_priority_latency_seconds`: queue, compute and end-to-end latency
  quantiles by `priority`, `stage` and `quantile`
- `tidal_batch_cost_seconds`: the scheduler's fitted batch cost, by `term`
  (fixed, per_row)
- `tidal_batch_cost_tail_factor`: how much longer a slow batch runs than the
  fitted cost says
- `tidal_admission_reserve`: the share of a request's time to its deadline
  that admission keeps back, by `priority`, learnt from admitted requests of
  that priority that finished late
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import _core

__all__ = ["MetricsExporter", "StatisticsCollector", "start_metrics_server"]

_NS = 1e-9


def _count(stats: Mapping[str, int | dict[int, int]], key: str) -> int:
    value = stats.get(key, 0)
    return value if isinstance(value, int) else 0


class StatisticsCollector:
    """A Prometheus collector over the statistics of every model a server serves.

    Args:
        server: the server whose models are reported.
    """

    def __init__(self, server: _core.Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        """Yield one family per series, with a sample per model being served now."""
        label = ["model"]
        requests = CounterMetricFamily(
            "tidal_requests", "Requests answered, successfully or not.", labels=label
        )
        failures = CounterMetricFamily(
            "tidal_request_failures", "Requests answered with an error.", labels=label
        )
        request_time = CounterMetricFamily(
            "tidal_request_duration_seconds",
            "Time from a request's arrival to its answer, summed over requests.",
            labels=label,
        )
        inferences = CounterMetricFamily(
            "tidal_inferences",
            "Samples run through the model; a batch of n samples counts n.",
            labels=label,
        )
        executions = CounterMetricFamily(
            "tidal_executions", "Model executions (batches).", labels=label
        )
        queue_time = CounterMetricFamily(
            "tidal_queue_duration_seconds",
            "Time requests spent queued, summed over requests.",
            labels=label,
        )
        compute_time = CounterMetricFamily(
            "tidal_compute_duration_seconds",
            "Time spent running batches (input copy, inference, output copy), summed.",
            labels=label,
        )
        refusals = CounterMetricFamily(
            "tidal_request_refusals",
            "Requests refused at admission (queue full, predicted to miss its deadline,"
            " model unloading).",
            labels=label,
        )
        invalid = CounterMetricFamily(
            "tidal_request_invalid",
            "Requests refused as malformed before admission (INVALID_ARGUMENT).",
            labels=label,
        )
        depth = GaugeMetricFamily("tidal_queue_depth", "Requests waiting now.", labels=label)
        batches = CounterMetricFamily(
            "tidal_batches", "Batches run, by batch size.", labels=["model", "batch_size"]
        )
        by_priority = ["model", "priority", "outcome"]
        outcomes = CounterMetricFamily(
            "tidal_priority_requests",
            "Requests by priority level and what became of them: admitted, refused (at"
            " once: queue full or predicted to miss its deadline), expired (dropped"
            " before computing, deadline passed or unreachable), cancelled (client gone),"
            " completed, failed (execution error).",
            labels=by_priority,
        )
        latency = GaugeMetricFamily(
            "tidal_priority_latency_seconds",
            "Latency quantiles since the model loaded, by priority level and stage"
            " (queue, compute, end_to_end), from HDR histograms; queue and end_to_end"
            " run from when the request's bytes reached the server's socket.",
            labels=["model", "priority", "stage", "quantile"],
        )
        cost = GaugeMetricFamily(
            "tidal_batch_cost_seconds",
            "The fitted batch cost t(b) = fixed + per_row * b that the scheduler uses.",
            labels=["model", "term"],
        )
        reserve = GaugeMetricFamily(
            "tidal_admission_reserve",
            "Share of a request's time to its deadline that admission keeps back,"
            " by priority level, learnt from admitted requests of that level that finished"
            " late (0 when none do).",
            labels=["model", "priority"],
        )
        tail = GaugeMetricFamily(
            "tidal_batch_cost_tail_factor",
            "How much longer than the fitted cost a slow batch (90th percentile) runs;"
            " the scheduler's batch cap and admission allow for it.",
            labels=["model"],
        )

        for name in self.server.model_names():
            try:
                stats = self.server.statistics(name)
            except KeyError:
                continue  # unloaded between the listing and now
            model = [name]
            success, fail = _count(stats, "success_count"), _count(stats, "fail_count")
            # Refused requests are answered too (UNAVAILABLE), but the core
            # counts them apart from the admitted ones that failed.
            refused = _count(stats, "refused_count")
            malformed = _count(stats, "invalid_count")
            requests.add_metric(model, success + fail + refused + malformed)
            failures.add_metric(model, fail + refused + malformed)
            refusals.add_metric(model, refused)
            invalid.add_metric(model, malformed)
            request_ns = _count(stats, "success_ns") + _count(stats, "fail_ns")
            request_time.add_metric(model, request_ns * _NS)
            inferences.add_metric(model, _count(stats, "inference_count"))
            executions.add_metric(model, _count(stats, "execution_count"))
            queue_time.add_metric(model, _count(stats, "queue_ns") * _NS)
            compute_ns = sum(
                _count(stats, k)
                for k in ("compute_input_ns", "compute_infer_ns", "compute_output_ns")
            )
            compute_time.add_metric(model, compute_ns * _NS)
            depth.add_metric(model, _count(stats, "queue_depth"))
            sizes = stats.get("batch_sizes", {})
            if isinstance(sizes, dict):
                for size, n in sorted(sizes.items()):
                    batches.add_metric([name, str(size)], n)
            for level, lane in enumerate(_lanes(stats), start=1):
                priority = str(level)
                for outcome in _OUTCOMES:
                    outcomes.add_metric([name, priority, outcome], lane.get(outcome, 0))
                for stage in ("queue", "compute", "end_to_end"):
                    for quantile, key in _QUANTILES:
                        seconds = lane.get(f"{stage}_{key}", 0) * 1e-6
                        latency.add_metric([name, priority, stage, quantile], seconds)
                reserve.add_metric([name, priority], float(lane.get("admission_reserve", 0.0)))
            for term in ("fixed", "per_row"):
                cost.add_metric([name, term], float(stats.get(f"cost_{term}_us", 0.0)) * 1e-6)
            tail.add_metric(model, float(stats.get("cost_tail_factor", 1.0)))

        yield from (
            requests,
            failures,
            refusals,
            invalid,
            request_time,
            inferences,
            executions,
            queue_time,
            compute_time,
            depth,
            batches,
            outcomes,
            latency,
            cost,
            tail,
            reserve,
        )


_OUTCOMES = ("admitted", "refused", "expired", "cancelled", "completed", "failed")
_QUANTILES = (("0.5", "p50_us"), ("0.9", "p90_us"), ("0.99", "p99_us"), ("0.999", "p999_us"))


def _lanes(stats: Mapping[str, object]) -> list[Mapping[str, int | float]]:
    lanes = stats.get("priorities", [])
    return lanes if isinstance(lanes, list) else []


class MetricsExporter:
    """Serves `/metrics` over HTTP from a background thread.

    Usable as a context manager that closes it on exit.

    Args:
        server: the server whose models are reported.
        port: the port to listen on; 0 picks a free one (see `port`).
        host: the address to listen on.

    Attributes:
        port: the bound port.
        registry: the registry the endpoint serves.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, server: _core.Server, *, port: int = 8002, host: str = "127.0.0.1") -> None:
        # A registry of our own: the global default one would also carry
        # whatever else the embedding process registered.
        self.registry = CollectorRegistry()
        self.registry.register(StatisticsCollector(server))
        ProcessCollector(registry=self.registry)
        self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._closed = False

    def close(self) -> None:
        """Stop serving and release the port; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsExporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_metrics_server(server: _core.Server, port: int = 8002, host: str = "127.0.0.1") -> int:
    """Serve `/metrics` for `server` over HTTP from a background thread.

    The exporter runs until the process exits; use `MetricsExporter` to
    stop it earlier.

    Args:
        server: the server whose models are reported.
        port: the port to listen on; 0 picks a free one.
        host: the address to listen on.

    Returns:
        The bound port.

    Raises:
        OSError: the address cannot be bound.
    """
    return MetricsExporter(server, port=port, host=host).port
