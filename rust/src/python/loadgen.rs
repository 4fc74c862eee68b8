//! The load generator's Python surface: `LoadClass`, `LoadRun`, `run_load`
//! and `EchoServer` (see `_core.pyi`). Arguments are converted and checked
//! here; the GIL is released while a run is waited for.

use std::time::{Duration, Instant};

use numpy::PyArray1;
use prost::Message as _;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::loadgen::{
    self, Api, Arrivals, Class, EchoOptions, ExpectedOutput, Load, LoadConfig, LoadReport,
};
use crate::server::proto::ModelInferRequest;
use crate::tensor::DataType;

fn decode_requests(class: &str, requests: &[Vec<u8>]) -> PyResult<Vec<ModelInferRequest>> {
    requests
        .iter()
        .map(|bytes| ModelInferRequest::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PyValueError::new_err(format!(
                "class `{class}`: a request is not a serialized ModelInferRequest: {e}"
            ))
        })
}

/// One kind of traffic: see `LoadClass` in `_core.pyi`.
#[pyclass(frozen, module = "tidal._core")]
#[derive(Debug, Clone)]
pub(super) struct LoadClass {
    class: Class,
}

#[pymethods]
impl LoadClass {
    #[new]
    #[pyo3(signature = (name, requests, *, weight = 1.0, expected_outputs = Vec::new(),
                        expected_count = 1, repeat_fraction = None, int_range = (0, 99)))]
    fn new(
        name: String,
        requests: Vec<Vec<u8>>,
        weight: f64,
        expected_outputs: Vec<(String, String, Vec<i64>)>,
        expected_count: usize,
        repeat_fraction: Option<f64>,
        int_range: (i64, i64),
    ) -> PyResult<Self> {
        let requests = decode_requests(&name, &requests)?;
        let class = Class {
            name,
            requests,
            weight,
            expected: expected_outputs
                .into_iter()
                .map(|(name, datatype, shape)| ExpectedOutput {
                    name,
                    datatype,
                    shape,
                })
                .collect(),
            expected_count,
            repeat_fraction,
            int_range,
        };
        class.validate().map_err(PyValueError::new_err)?;
        Ok(Self { class })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.class.name
    }

    #[getter]
    fn weight(&self) -> f64 {
        self.class.weight
    }

    fn __repr__(&self) -> String {
        format!(
            "LoadClass({:?}, {} requests, weight={})",
            self.class.name,
            self.class.requests.len(),
            self.class.weight
        )
    }
}

fn parse_api(api: &str) -> PyResult<Api> {
    match api {
        "unary" => Ok(Api::Unary),
        "stream" => Ok(Api::Stream),
        other => Err(PyValueError::new_err(format!(
            "unknown api `{other}`; expected `unary` or `stream`"
        ))),
    }
}

/// The open-loop arrival process named `kind`.
fn parse_arrivals(
    kind: &str,
    rate: f64,
    on_s: f64,
    off_s: f64,
    off_rate: f64,
    trace_s: Option<Vec<f64>>,
) -> PyResult<Arrivals> {
    let seconds = |name: &str, s: f64| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            PyValueError::new_err(format!(
                "`{name}` must be a number of seconds >= 0, got `{s}`"
            ))
        })
    };
    let arrivals = match kind {
        "poisson" => Arrivals::Poisson { rate },
        "uniform" => Arrivals::Uniform { rate },
        "onoff" => Arrivals::OnOff {
            on_rate: rate,
            off_rate,
            on: seconds("on_s", on_s)?,
            off: seconds("off_s", off_s)?,
        },
        "trace" => {
            let trace = trace_s.ok_or_else(|| {
                PyValueError::new_err("`arrivals=\"trace\"` needs `trace_s`, the arrival times")
            })?;
            Arrivals::Trace {
                offsets: trace
                    .iter()
                    .map(|&s| seconds("trace_s", s))
                    .collect::<PyResult<_>>()?,
            }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown arrivals `{other}`; expected `poisson`, `uniform`, `onoff` or `trace`"
            )))
        }
    };
    arrivals.validate().map_err(PyValueError::new_err)?;
    Ok(arrivals)
}

/// A load run on its own thread: see `LoadRun` in `_core.pyi`.
#[pyclass(frozen, module = "tidal._core")]
#[derive(Debug)]
pub(super) struct LoadRun {
    run: loadgen::LoadRun,
}

#[pymethods]
impl LoadRun {
    #[new]
    #[pyo3(signature = (target, classes, *, mode = "closed", concurrency = 1, arrivals = "poisson",
                        rate = 0.0, on_s = 0.0, off_s = 0.0, off_rate = 0.0, trace_s = None,
                        api = "unary", connections = 4, warmup_s = 1.0, duration_s = 5.0,
                        drain_s = 10.0, seed = 0, max_requests = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        target: String,
        classes: Vec<PyRef<'_, LoadClass>>,
        mode: &str,
        concurrency: usize,
        arrivals: &str,
        rate: f64,
        on_s: f64,
        off_s: f64,
        off_rate: f64,
        trace_s: Option<Vec<f64>>,
        api: &str,
        connections: usize,
        warmup_s: f64,
        duration_s: f64,
        drain_s: f64,
        seed: u64,
        max_requests: Option<u64>,
    ) -> PyResult<Self> {
        let load = match mode {
            "closed" => Load::Closed { concurrency },
            "open" => Load::Open {
                arrivals: parse_arrivals(arrivals, rate, on_s, off_s, off_rate, trace_s)?,
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown mode `{other}`; expected `closed` or `open`"
                )))
            }
        };
        let seconds = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!(
                    "`{name}` must be a number of seconds >= 0, got `{s}`"
                ))
            })
        };
        let config = LoadConfig {
            target,
            classes: classes.iter().map(|c| c.class.clone()).collect(),
            load,
            api: parse_api(api)?,
            connections: connections.max(1),
            warmup: seconds("warmup_s", warmup_s)?,
            duration: seconds("duration_s", duration_s)?,
            drain: seconds("drain_s", drain_s)?,
            seed,
            max_requests,
        };
        let run = loadgen::LoadRun::start(config).map_err(PyValueError::new_err)?;
        Ok(Self { run })
    }

    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.run.progress().snapshot();
        let d = PyDict::new(py);
        d.set_item("phase", s.phase.as_str())?;
        d.set_item("elapsed_s", s.elapsed)?;
        d.set_item("sent", s.sent)?;
        d.set_item("answered", s.answered)?;
        d.set_item("errors", s.errors)?;
        d.set_item("recent_rate", s.recent_rate)?;
        d.set_item("recent_p99_ms", s.recent_p99_ms)?;
        Ok(d)
    }

    fn stop(&self) {
        self.run.stop();
    }

    fn done(&self) -> bool {
        self.run.is_finished()
    }

    #[pyo3(signature = (timeout_s = None))]
    fn wait(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<bool> {
        let until = timeout_s.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            // Back with the GIL every 50 ms: Ctrl-C raises KeyboardInterrupt
            // here instead of after the end of the run.
            let slice = Instant::now() + Duration::from_millis(50);
            let finished = py.detach(|| loop {
                if self.run.is_finished() {
                    return true;
                }
                let now = Instant::now();
                if now >= slice || until.is_some_and(|u| now >= u) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            });
            if finished {
                return Ok(true);
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.wait(py, None)?;
        let report = py
            .detach(|| self.run.join())
            .map_err(PyRuntimeError::new_err)?;
        report_to_dict(py, report)
    }
}

fn report_to_dict(py: Python<'_>, report: LoadReport) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let samples = &report.samples;
    d.set_item("sent", report.sent.iter().sum::<u64>())?;
    d.set_item("sent_by_class", report.sent.clone())?;
    d.set_item("intended", report.intended)?;
    d.set_item("sent_in_window", report.sent_in_window)?;
    d.set_item("window_s", report.window.as_secs_f64())?;
    d.set_item("malformed", report.malformed)?;
    d.set_item("malformed_example", report.malformed_example)?;
    d.set_item("unanswered", report.unanswered)?;
    d.set_item("mean_in_flight", report.mean_in_flight)?;
    d.set_item("stopped", report.stopped)?;
    d.set_item(
        "intended_s",
        PyArray1::from_iter(py, samples.iter().map(|s| s.intended.as_secs_f64())),
    )?;
    d.set_item(
        "latency_ms",
        PyArray1::from_iter(py, samples.iter().map(|s| ms(s.latency))),
    )?;
    d.set_item(
        "sample_send_lag_ms",
        PyArray1::from_iter(py, samples.iter().map(|s| ms(s.send_lag))),
    )?;
    d.set_item(
        "sample_receive_lag_ms",
        PyArray1::from_iter(py, samples.iter().map(|s| ms(s.receive_lag))),
    )?;
    d.set_item(
        "code",
        PyArray1::from_iter(py, samples.iter().map(|s| s.code)),
    )?;
    d.set_item(
        "class_index",
        PyArray1::from_iter(py, samples.iter().map(|s| i32::from(s.class))),
    )?;
    d.set_item(
        "send_lag_ms",
        PyArray1::from_iter(py, report.send_lag.iter().map(|&l| ms(l))),
    )?;
    d.set_item("errors", report.errors.into_pyobject(py)?)?;
    d.set_item("error_examples", report.error_examples.into_pyobject(py)?)?;
    Ok(d)
}

/// Drives a KServe v2 server with one kind of request; see `run_load` in `_core.pyi`.
#[pyfunction]
#[pyo3(signature = (target, requests, *, mode = "closed", concurrency = 1, rate = 0.0, api = "unary",
                    connections = 4, warmup_s = 1.0, duration_s = 5.0, expected_outputs = 1, seed = 0,
                    max_requests = None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn run_load<'py>(
    py: Python<'py>,
    target: String,
    requests: Vec<Vec<u8>>,
    mode: &str,
    concurrency: usize,
    rate: f64,
    api: &str,
    connections: usize,
    warmup_s: f64,
    duration_s: f64,
    expected_outputs: usize,
    seed: u64,
    max_requests: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let class = LoadClass::new(
        "default".into(),
        requests,
        1.0,
        Vec::new(),
        expected_outputs,
        None,
        (0, 99),
    )?;
    let classes = vec![Bound::new(py, class)?.borrow()];
    let run = LoadRun::new(
        target,
        classes,
        mode,
        concurrency,
        "poisson",
        rate,
        0.0,
        0.0,
        0.0,
        None,
        api,
        connections,
        warmup_s,
        duration_s,
        10.0,
        seed,
        max_requests,
    )?;
    run.result(py)
}

/// The server that answers at once: see `EchoServer` in `_core.pyi`.
#[pyclass(frozen, module = "tidal._core")]
#[derive(Debug)]
pub(super) struct EchoServer {
    options: EchoOptions,
    server: parking_lot::Mutex<Option<loadgen::EchoServer>>,
}

#[pymethods]
impl EchoServer {
    #[new]
    #[pyo3(signature = (*, host = "127.0.0.1".to_string(), port = 0, threads = 1,
                        model = "echo".to_string(), datatype = "FP32", shape = vec![16],
                        max_batch_size = 0, fail_every = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: u16,
        threads: usize,
        model: String,
        datatype: &str,
        shape: Vec<i64>,
        max_batch_size: u32,
        fail_every: u64,
    ) -> PyResult<Self> {
        let datatype = DataType::parse(datatype)
            .ok_or_else(|| PyValueError::new_err(format!("unknown datatype `{datatype}`")))?;
        if shape.iter().any(|&d| d < 1) {
            return Err(PyValueError::new_err(format!(
                "the echo model's shape must have fixed sizes >= 1, got `{shape:?}`"
            )));
        }
        Ok(Self {
            options: EchoOptions {
                host,
                port,
                threads,
                model,
                datatype,
                shape,
                max_batch_size,
                fail_every,
            },
            server: parking_lot::Mutex::new(None),
        })
    }

    fn start(&self, py: Python<'_>) -> PyResult<u16> {
        let mut server = self.server.lock();
        if server.is_some() {
            return Err(PyRuntimeError::new_err(
                "the echo server is already started",
            ));
        }
        let options = self.options.clone();
        let started = py
            .detach(|| loadgen::EchoServer::start(options))
            .map_err(|e| PyOSError::new_err(format!("cannot start the echo server: {e}")))?;
        let port = started.port;
        *server = Some(started);
        Ok(port)
    }

    fn calls(&self) -> u64 {
        self.server
            .lock()
            .as_ref()
            .map_or(0, loadgen::EchoServer::calls)
    }

    fn stop(&self, py: Python<'_>) {
        let server = self.server.lock().take();
        py.detach(|| drop(server));
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_load, m)?)?;
    m.add_class::<LoadClass>()?;
    m.add_class::<LoadRun>()?;
    m.add_class::<EchoServer>()?;
    Ok(())
}
