//! The `tidal._core` extension module: a thin adapter from Python to the
//! core and the server. It converts arguments, releases the GIL around every
//! blocking call, and maps core errors to Python exceptions in one place.
//! Worker threads take the GIL once per batch to run the Python executor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::batch::{BatchInput, BatchOutput};
use crate::error::CoreError;
use crate::model::{BatchingConfig, ModelSpec as CoreSpec, PolicyKind};
use crate::registry::{IndexEntry, RepositoryHooks};
use crate::served::ServedModel;
use crate::server::runtime::NetworkScheduling;
use crate::server::{self, RunningServer, ServerOptions, ServerState};
use crate::tensor::{DataType, TensorSpec as CoreTensor};
use crate::worker::Executor;

/// The load generator's classes and functions.
mod loadgen;

/// The one mapping from core errors to Python exceptions.
fn to_py(error: CoreError) -> PyErr {
    let message = error.to_string();
    match error {
        CoreError::ModelNotFound { .. } | CoreError::NotInRepository { .. } => {
            PyKeyError::new_err(message)
        }
        CoreError::InvalidArgument(_) => PyValueError::new_err(message),
        CoreError::ResourceExhausted(_)
        | CoreError::QueueFull { .. }
        | CoreError::Overloaded { .. }
        | CoreError::Unavailable { .. }
        | CoreError::DeadlineExceeded { .. }
        | CoreError::Cancelled { .. }
        | CoreError::Execution { .. }
        | CoreError::Unimplemented(_)
        | CoreError::Internal(_) => PyRuntimeError::new_err(message),
    }
}

fn parse_datatype(name: &str) -> PyResult<DataType> {
    DataType::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown datatype `{name}`; expected one of BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BF16, BYTES"
        ))
    })
}

/// numpy's name for the element type of `datatype` (BF16 is carried as its bits).
fn numpy_dtype(datatype: DataType) -> &'static str {
    match datatype {
        DataType::Bool => "bool",
        DataType::Uint8 => "uint8",
        DataType::Uint16 | DataType::Bf16 => "uint16",
        DataType::Uint32 => "uint32",
        DataType::Uint64 => "uint64",
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Fp16 => "float16",
        DataType::Fp32 => "float32",
        DataType::Fp64 => "float64",
        DataType::Bytes => "object",
    }
}

/// One input or output of a model.
#[pyclass(frozen, get_all, from_py_object, module = "tidal._core")]
#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

#[pymethods]
impl TensorSpec {
    #[new]
    fn new(name: String, datatype: String, shape: Vec<i64>) -> PyResult<Self> {
        parse_datatype(&datatype)?;
        Ok(Self {
            name,
            datatype,
            shape,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "TensorSpec({:?}, {:?}, {:?})",
            self.name, self.datatype, self.shape
        )
    }
}

impl TensorSpec {
    fn to_core(&self) -> PyResult<CoreTensor> {
        Ok(CoreTensor {
            name: self.name.clone(),
            datatype: parse_datatype(&self.datatype)?,
            shape: self.shape.clone(),
        })
    }
}

/// Everything the core needs to serve one model version.
#[pyclass(frozen, get_all, module = "tidal._core")]
#[derive(Debug, Clone)]
struct ModelSpec {
    name: String,
    version: String,
    platform: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    max_batch_size: usize,
    policy: String,
    slo_ms: f64,
    max_queue_delay_us: u64,
    preferred_batch_sizes: Vec<usize>,
    queue_capacity: usize,
    priority_levels: u32,
    instance_count: usize,
}

#[pymethods]
impl ModelSpec {
    #[new]
    #[pyo3(signature = (
        name, inputs, outputs, *, version = "1".to_string(), platform = "onnxruntime_onnx".to_string(),
        max_batch_size = 64, policy = "adaptive".to_string(), slo_ms = 50.0, max_queue_delay_us = 0,
        preferred_batch_sizes = Vec::new(), queue_capacity = 4096, priority_levels = 2, instance_count = 1
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        version: String,
        platform: String,
        max_batch_size: usize,
        policy: String,
        slo_ms: f64,
        max_queue_delay_us: u64,
        preferred_batch_sizes: Vec<usize>,
        queue_capacity: usize,
        priority_levels: u32,
        instance_count: usize,
    ) -> PyResult<Self> {
        let spec = Self {
            name,
            version,
            platform,
            inputs,
            outputs,
            max_batch_size,
            policy,
            slo_ms,
            max_queue_delay_us,
            preferred_batch_sizes,
            queue_capacity,
            priority_levels,
            instance_count,
        };
        spec.to_core()?.validate().map_err(to_py)?;
        Ok(spec)
    }

    fn __repr__(&self) -> String {
        format!(
            "ModelSpec({:?}, version={:?}, policy={:?})",
            self.name, self.version, self.policy
        )
    }
}

impl ModelSpec {
    fn to_core(&self) -> PyResult<CoreSpec> {
        let policy = PolicyKind::parse(&self.policy).ok_or_else(|| {
            PyValueError::new_err(format!(
                "model `{}`: unknown batching policy `{}`; expected `adaptive` or `static`",
                self.name, self.policy
            ))
        })?;
        if !(self.slo_ms.is_finite() && self.slo_ms > 0.0) {
            return Err(PyValueError::new_err(format!(
                "model `{}`: `slo_ms` must be a positive number, got `{}`",
                self.name, self.slo_ms
            )));
        }
        let tensors = |list: &[TensorSpec]| {
            list.iter()
                .map(TensorSpec::to_core)
                .collect::<PyResult<Vec<_>>>()
        };
        Ok(CoreSpec {
            name: self.name.clone(),
            version: self.version.clone(),
            platform: self.platform.clone(),
            inputs: tensors(&self.inputs)?,
            outputs: tensors(&self.outputs)?,
            max_batch_size: self.max_batch_size,
            batching: BatchingConfig {
                policy,
                slo: Duration::from_secs_f64(self.slo_ms / 1e3),
                max_queue_delay: Duration::from_micros(self.max_queue_delay_us),
                preferred_batch_sizes: self.preferred_batch_sizes.clone(),
            },
            queue_capacity: self.queue_capacity,
            priority_levels: self.priority_levels,
            instance_count: self.instance_count,
            // Set by the server that serves it.
            reads_between_batches: false,
        })
    }
}

/// Runs a Python executor callable; see `Executor` in `_core.pyi`.
struct PyExecutor {
    callable: Py<PyAny>,
    spec: Arc<CoreSpec>,
}

static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))
        .map(|m| m.bind(py))
}

impl PyExecutor {
    fn call(
        &self,
        py: Python<'_>,
        inputs: Vec<BatchInput>,
        outputs: &[usize],
    ) -> PyResult<Vec<BatchOutput>> {
        let np = numpy(py)?;
        let arrays = PyDict::new(py);
        for (spec, input) in self.spec.inputs.iter().zip(inputs) {
            let shape = PyTuple::new(py, &input.shape)?;
            let array = if spec.datatype == DataType::Bytes {
                bytes_to_numpy(py, np, &input.data)?
            } else {
                // The batch buffer moves into numpy without a copy; the executor sees a view.
                PyArray1::from_vec(py, input.data)
                    .into_any()
                    .call_method1("view", (numpy_dtype(spec.datatype),))?
            };
            arrays.set_item(&spec.name, array.call_method1("reshape", (shape,))?)?;
        }
        let names = PyList::new(
            py,
            outputs.iter().map(|&i| self.spec.outputs[i].name.as_str()),
        )?;
        let results = self.callable.bind(py).call1((arrays, names))?;
        let results: Vec<Bound<'_, PyAny>> = results.try_iter()?.collect::<PyResult<_>>()?;
        if results.len() != outputs.len() {
            return Err(PyValueError::new_err(format!(
                "the executor returned {} arrays for {} outputs",
                results.len(),
                outputs.len()
            )));
        }
        outputs
            .iter()
            .zip(results)
            .map(|(&i, array)| numpy_to_output(np, &self.spec.outputs[i], &array))
            .collect()
    }
}

impl Executor for PyExecutor {
    fn execute(
        &mut self,
        inputs: Vec<BatchInput>,
        outputs: &[usize],
    ) -> Result<Vec<BatchOutput>, String> {
        Python::attach(|py| self.call(py, inputs, outputs).map_err(|e| e.to_string()))
    }
}

/// A raw BYTES buffer as a flat numpy object array of `bytes`.
fn bytes_to_numpy<'py>(
    py: Python<'py>,
    np: &Bound<'py, PyModule>,
    data: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let offsets = crate::tensor::bytes_element_offsets(data).map_err(PyValueError::new_err)?;
    let items = PyList::empty(py);
    for pair in offsets.windows(2) {
        items.append(PyBytes::new(py, &data[pair[0] + 4..pair[1]]))?;
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", "object")?;
    np.call_method("array", (items,), Some(&kwargs))
}

/// An executor's output array in the raw layout of `spec`'s datatype.
fn numpy_to_output(
    np: &Bound<'_, PyModule>,
    spec: &CoreTensor,
    array: &Bound<'_, PyAny>,
) -> PyResult<BatchOutput> {
    let array = np.call_method1("ascontiguousarray", (array,))?;
    let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
        PyValueError::new_err(format!("output `{}` is not a numpy array", spec.name))
    })?;
    let shape: Vec<i64> = untyped.shape().iter().map(|&d| d as i64).collect();
    if spec.datatype == DataType::Bytes {
        let mut data = Vec::new();
        for item in array.call_method0("ravel")?.try_iter()? {
            let item = item?;
            let bytes: Vec<u8> = if let Ok(s) = item.cast::<PyString>() {
                s.to_str()?.as_bytes().to_vec()
            } else {
                item.extract::<Vec<u8>>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "output `{}` holds an element that is neither bytes nor str",
                        spec.name
                    ))
                })?
            };
            data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(&bytes);
        }
        return Ok(BatchOutput {
            shape,
            data: Bytes::from(data),
        });
    }
    let expected = numpy_dtype(spec.datatype);
    let dtype = array.getattr("dtype")?;
    if !dtype.eq(np.call_method1("dtype", (expected,))?)? && spec.datatype != DataType::Bf16 {
        return Err(PyValueError::new_err(format!(
            "output `{}` has dtype `{}`, the model declares {} (`{expected}`)",
            spec.name,
            dtype.str()?,
            spec.datatype
        )));
    }
    let flat = array
        .call_method1("view", ("uint8",))?
        .call_method1("reshape", (-1,))?;
    let bytes: PyReadonlyArray1<'_, u8> = flat.extract()?;
    Ok(BatchOutput {
        shape,
        data: Bytes::copy_from_slice(bytes.as_slice()?),
    })
}

/// Calls the Python repository object; see `RepositoryHooks` in `_core.pyi`.
struct PyRepository(Py<PyAny>);

impl PyRepository {
    fn call(&self, method: &str, name: &str) -> Result<(), CoreError> {
        Python::attach(|py| {
            self.0
                .bind(py)
                .call_method1(method, (name,))
                .map(drop)
                .map_err(|e| {
                    if e.is_instance_of::<PyKeyError>(py) {
                        CoreError::ModelNotFound {
                            name: name.into(),
                            version: String::new(),
                        }
                    } else {
                        CoreError::Internal(format!(
                            "cannot {method} model `{name}`: {}",
                            e.value(py)
                        ))
                    }
                })
        })
    }
}

impl RepositoryHooks for PyRepository {
    fn index(&self) -> Result<Vec<IndexEntry>, CoreError> {
        Python::attach(|py| {
            let rows: Vec<(String, String, String, String)> = self
                .0
                .bind(py)
                .call_method0("index")
                .and_then(|r| r.extract())
                .map_err(|e| CoreError::Internal(format!("cannot index the repository: {e}")))?;
            Ok(rows
                .into_iter()
                .map(|(name, version, state, reason)| IndexEntry {
                    name,
                    version,
                    state,
                    reason,
                })
                .collect())
        })
    }

    fn load(&self, name: &str) -> Result<(), CoreError> {
        self.call("load", name)
    }

    fn unload(&self, name: &str) -> Result<(), CoreError> {
        self.call("unload", name)
    }
}

/// The gRPC server and the models it serves.
#[pyclass(frozen, module = "tidal._core")]
struct Server {
    options: ServerOptions,
    runtime_threads: usize,
    network_scheduling: NetworkScheduling,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    running: Mutex<Option<RunningServer>>,
}

impl Server {
    fn state(&self) -> PyResult<Arc<ServerState>> {
        self.running
            .lock()
            .as_ref()
            .map(|r| Arc::clone(&r.state))
            .ok_or_else(|| PyRuntimeError::new_err("the server is not started; call start() first"))
    }
}

impl Drop for Server {
    /// A server dropped without `stop()` stops now, with the GIL released: its
    /// threads may need the GIL to finish (a batch in Python, a log record),
    /// and ending the runtime waits for them.
    fn drop(&mut self) {
        if self.running.get_mut().is_some() {
            Python::attach(|py| {
                let _ = self.stop(py, 0.0);
            });
        }
    }
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (*, host = "127.0.0.1".to_string(), port = 8001, max_message_bytes = i32::MAX as usize,
                        runtime_threads = 0, network_scheduling = "batch", name = "tidal".to_string(),
                        version = env!("CARGO_PKG_VERSION").to_string()))]
    fn new(
        host: String,
        port: u16,
        max_message_bytes: usize,
        runtime_threads: usize,
        network_scheduling: &str,
        name: String,
        version: String,
    ) -> PyResult<Self> {
        Ok(Self {
            options: ServerOptions {
                host,
                port,
                max_message_bytes,
                name,
                version,
            },
            runtime_threads,
            network_scheduling: network_scheduling.parse().map_err(PyValueError::new_err)?,
            runtime: Mutex::new(None),
            running: Mutex::new(None),
        })
    }

    fn start(&self, py: Python<'_>) -> PyResult<u16> {
        if self.running.lock().is_some() {
            return Err(PyRuntimeError::new_err("the server is already started"));
        }
        let (threads, scheduling) = (self.runtime_threads, self.network_scheduling);
        let options = self.options.clone();
        let (runtime, running) = py
            .detach(move || -> std::io::Result<_> {
                let runtime = server::runtime::build(threads, scheduling)?;
                let running = runtime.block_on(server::start(options))?;
                Ok((runtime, running))
            })
            .map_err(|e| {
                PyOSError::new_err(format!(
                    "cannot serve on {}:{}: {e}",
                    self.options.host, self.options.port
                ))
            })?;
        let port = running.port;
        *self.runtime.lock() = Some(runtime);
        *self.running.lock() = Some(running);
        Ok(port)
    }

    fn set_repository(&self, hooks: Py<PyAny>) -> PyResult<()> {
        self.state()?.set_repository(Arc::new(PyRepository(hooks)));
        Ok(())
    }

    fn add_model(
        &self,
        py: Python<'_>,
        spec: PyRef<'_, ModelSpec>,
        executors: Vec<Py<PyAny>>,
    ) -> PyResult<()> {
        let state = self.state()?;
        let mut core = spec.to_core()?;
        core.reads_between_batches =
            server::runtime::reads_between_batches(self.network_scheduling, core.instance_count);
        let core = Arc::new(core);
        let executors: Vec<Box<dyn Executor>> = executors
            .into_iter()
            .map(|callable| {
                Box::new(PyExecutor {
                    callable,
                    spec: Arc::clone(&core),
                }) as Box<dyn Executor>
            })
            .collect();
        let model = ServedModel::start((*core).clone(), executors).map_err(to_py)?;
        if let Some(replaced) = state.add_model(model) {
            // Its workers need the GIL to finish what they admitted.
            py.detach(|| replaced.shutdown());
        }
        Ok(())
    }

    fn remove_model(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let removed = self
            .state()?
            .remove_model(name)
            .ok_or_else(|| PyKeyError::new_err(format!("model `{name}` is not served")))?;
        py.detach(|| removed.shutdown());
        Ok(())
    }

    fn model_names(&self) -> PyResult<Vec<String>> {
        Ok(self.state()?.registry.names())
    }

    fn set_ready(&self, ready: bool) -> PyResult<()> {
        self.state()?.set_ready(ready);
        Ok(())
    }

    fn statistics<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let model = self.state()?.registry.get(name, "").map_err(to_py)?;
        let s = model.stats.snapshot();
        let d = PyDict::new(py);
        for (key, value) in [
            ("inference_count", s.inference_count),
            ("execution_count", s.execution_count),
            ("success_count", s.success.count),
            ("success_ns", s.success.ns),
            ("fail_count", s.fail.count),
            ("fail_ns", s.fail.ns),
            ("queue_count", s.queue.count),
            ("queue_ns", s.queue.ns),
            ("compute_count", s.compute_infer.count),
            ("compute_input_ns", s.compute_input.ns),
            ("compute_infer_ns", s.compute_infer.ns),
            ("compute_output_ns", s.compute_output.ns),
            ("admitted_count", s.total(|l| l.admitted)),
            ("refused_count", s.total(|l| l.refused)),
            ("expired_count", s.total(|l| l.expired)),
            ("cancelled_count", s.total(|l| l.cancelled)),
            ("completed_count", s.total(|l| l.completed)),
            ("invalid_count", s.invalid),
            ("queue_depth", model.queued() as u64),
        ] {
            d.set_item(key, value)?;
        }
        let line = model.cost().line();
        d.set_item("cost_fixed_us", line.fixed_ns / 1e3)?;
        d.set_item("cost_per_row_us", line.per_row_ns / 1e3)?;
        d.set_item("cost_tail_factor", line.tail_factor)?;
        let lanes = PyList::empty(py);
        for (priority, lane) in (1..).zip(&s.lanes) {
            let l = PyDict::new(py);
            l.set_item("admission_reserve", model.admission_reserve(priority))?;
            for (key, value) in [
                ("admitted", lane.admitted),
                ("refused", lane.refused),
                ("expired", lane.expired),
                ("cancelled", lane.cancelled),
                ("completed", lane.completed),
                ("failed", lane.failed),
            ] {
                l.set_item(key, value)?;
            }
            for (name, p) in [
                ("queue", lane.queue),
                ("compute", lane.compute),
                ("end_to_end", lane.end_to_end),
            ] {
                for (suffix, value) in [
                    ("p50_us", p.p50_us),
                    ("p90_us", p.p90_us),
                    ("p99_us", p.p99_us),
                    ("p999_us", p.p999_us),
                    ("max_us", p.max_us),
                ] {
                    l.set_item(format!("{name}_{suffix}"), value)?;
                }
            }
            lanes.append(l)?;
        }
        d.set_item("priorities", lanes)?;
        let batches = PyDict::new(py);
        for (size, figures) in &s.batches {
            batches.set_item(size, figures.count)?;
        }
        d.set_item("batch_sizes", batches)?;
        Ok(d)
    }

    #[pyo3(signature = (grace_s = 5.0))]
    fn stop(&self, py: Python<'_>, grace_s: f64) -> PyResult<()> {
        let Some(running) = self.running.lock().take() else {
            return Ok(());
        };
        let runtime = self.runtime.lock().take();
        let grace = Duration::from_secs_f64(grace_s.max(0.0));
        py.detach(move || {
            let state = Arc::clone(&running.state);
            state.set_ready(false);
            // Close the queues first: what waits for a batch to fill is
            // dispatched now, so calls in flight finish within the grace period.
            for model in state.registry.all() {
                model.close();
            }
            if let Some(runtime) = runtime {
                let _ = runtime
                    .block_on(async { tokio::time::timeout(grace, running.shutdown()).await });
                for name in state.registry.names() {
                    if let Some(model) = state.remove_model(&name) {
                        model.shutdown();
                    }
                }
                runtime.shutdown_timeout(grace);
            }
        });
        Ok(())
    }

    #[pyo3(signature = (timeout_s = None))]
    fn wait(&self, py: Python<'_>, timeout_s: Option<f64>) -> bool {
        let until = timeout_s.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        py.detach(|| loop {
            let finished = self
                .running
                .lock()
                .as_ref()
                .is_none_or(RunningServer::is_finished);
            if finished {
                return true;
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        })
    }
}

/// Routes the extension's `log` records, and the HTTP/2 stack's `tracing`
/// warnings (`server::trace_log`), to Python's `logging` (loggers named after
/// the Rust module: `_core.server.runtime`, `h2.proto.streams.recv`). Levels
/// are cached, so a record below its logger's level never takes the GIL. A
/// second import in the same process keeps the first logger.
///
/// Records below WARN, the core's own included, never leave Rust: with
/// `log`'s global level at WARN, every `debug!` of h2 and hyper (several per
/// request) is rejected by one atomic load. With any target at DEBUG the
/// global level is DEBUG, and each of those records went on to the logger's
/// per-target filter, a hash and a string search per record: 16.8% of the
/// network thread's samples under the mlp's mixed load, about 5% of the
/// server's core (docs/benchmarks.md, change 16). The core logs only warnings.
fn install_logging(py: Python<'_>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels)?
        .filter(log::LevelFilter::Warn);
    let _ = logger.install();
    crate::server::trace_log::install();
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_logging(m.py())?;
    loadgen::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<TensorSpec>()?;
    m.add_class::<ModelSpec>()?;
    m.add_class::<Server>()?;
    Ok(())
}
