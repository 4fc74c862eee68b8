//! Drives the load and collects samples.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Exp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::report::{LoadReport, Sample};
use crate::server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::server::proto::{ModelInferRequest, ModelInferResponse};

type Client = GrpcInferenceServiceClient<Channel>;

/// How arrivals are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` calls always in flight.
    Closed { concurrency: usize },
    /// Poisson arrivals at `rate` requests per second, independent of answers.
    Open { rate: f64 },
}

/// Which RPC carries the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Unary,
    /// ModelStreamInfer: many requests in flight on each stream.
    Stream,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `host:port`.
    pub target: String,
    /// Requests to send, cycled through.
    pub requests: Vec<ModelInferRequest>,
    pub mode: Mode,
    pub api: Api,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    /// Load before the measured window; its answers are not recorded.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Outputs each answer must carry.
    pub expected_outputs: usize,
    pub seed: u64,
}

/// Runs the load on a new single-threaded runtime in the calling thread.
pub fn run(config: LoadConfig) -> Result<LoadReport, String> {
    if config.requests.is_empty() {
        return Err("no requests to send".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))?;
    runtime.block_on(drive(config))
}

/// What the senders share: the clock, the window and the results.
struct Shared {
    config: LoadConfig,
    start: Instant,
    window_start: Instant,
    end: Instant,
    report: Mutex<LoadReport>,
}

impl Shared {
    fn in_window(&self, intended: Instant) -> bool {
        intended >= self.window_start && intended < self.end
    }

    fn sent(&self, intended: Instant, actual: Instant) {
        if self.in_window(intended) {
            let mut report = self.report.lock();
            report.sent += 1;
            report
                .send_lag
                .push(actual.saturating_duration_since(intended));
        }
    }

    fn answered(&self, intended: Instant, result: Result<ModelInferResponse, tonic::Status>) {
        let now = Instant::now();
        if !self.in_window(intended) {
            return;
        }
        let mut report = self.report.lock();
        let code = match result {
            Ok(response) => {
                if response.raw_output_contents.len() != self.config.expected_outputs {
                    report.malformed += 1;
                }
                0
            }
            Err(status) => {
                let name = format!("{:?}", status.code());
                *report.errors.entry(name.clone()).or_default() += 1;
                report
                    .error_examples
                    .entry(name)
                    .or_insert_with(|| status.message().to_string());
                status.code() as i32
            }
        };
        report.samples.push(Sample {
            intended: intended - self.window_start,
            latency: now - intended,
            code,
        });
    }
}

async fn connect(target: &str) -> Result<Client, String> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| format!("invalid target `{target}`: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to `{target}`: {e}"))?;
    Ok(GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

async fn drive(config: LoadConfig) -> Result<LoadReport, String> {
    let mut clients = Vec::new();
    for _ in 0..config.connections.max(1) {
        clients.push(connect(&config.target).await?);
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        window_start: start + config.warmup,
        end: start + config.warmup + config.duration,
        report: Mutex::new(LoadReport::default()),
        config,
    });
    match (shared.config.mode, shared.config.api) {
        (Mode::Closed { concurrency }, Api::Unary) => {
            closed_unary(&shared, &clients, concurrency).await
        }
        (Mode::Open { rate }, Api::Unary) => open_unary(&shared, &clients, rate).await,
        (mode, Api::Stream) => streamed(&shared, &clients, mode).await?,
    }
    let mut report = std::mem::take(&mut *shared.report.lock());
    report.window = shared.config.duration;
    Ok(report)
}

async fn closed_unary(shared: &Arc<Shared>, clients: &[Client], concurrency: usize) {
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let shared = Arc::clone(shared);
        let mut client = clients[worker % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let requests = &shared.config.requests;
            let mut i = worker;
            loop {
                let intended = Instant::now();
                if intended >= shared.end {
                    break;
                }
                shared.sent(intended, intended);
                let result = client
                    .model_infer(requests[i % requests.len()].clone())
                    .await;
                shared.answered(intended, result.map(tonic::Response::into_inner));
                i += concurrency;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Poisson arrival times after `start`, until `end`.
struct Arrivals {
    rng: StdRng,
    gap: Exp<f64>,
    next: Instant,
}

impl Arrivals {
    fn new(start: Instant, rate: f64, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            gap: Exp::new(rate.max(1e-9)).expect("a positive rate"),
            next: start,
        }
    }

    fn advance(&mut self) -> Instant {
        let at = self.next;
        self.next += Duration::from_secs_f64(self.rng.sample(self.gap));
        at
    }
}

async fn open_unary(shared: &Arc<Shared>, clients: &[Client], rate: f64) {
    let mut arrivals = Arrivals::new(shared.start, rate, shared.config.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    loop {
        let intended = arrivals.advance();
        if intended >= shared.end {
            break;
        }
        // The timer wheel ticks in milliseconds: arrivals due within the same
        // tick go out together, each still timed from its own intended instant.
        tokio::time::sleep_until(intended).await;
        let shared2 = Arc::clone(shared);
        let mut client = clients[i % clients.len()].clone();
        let request = shared.config.requests[i % shared.config.requests.len()].clone();
        i += 1;
        tasks.spawn(async move {
            shared2.sent(intended, Instant::now());
            let result = client.model_infer(request).await;
            shared2.answered(intended, result.map(tonic::Response::into_inner));
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn streamed(shared: &Arc<Shared>, clients: &[Client], mode: Mode) -> Result<(), String> {
    // Requests on a stream carry their sequence number as id; the table maps
    // it back to the intended send time when the answer comes.
    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for client in clients {
        let (tx, rx) = mpsc::channel::<ModelInferRequest>(4096);
        let mut client = client.clone();
        let mut answers = client
            .model_stream_infer(ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("cannot open a stream: {e}"))?
            .into_inner();
        let shared = Arc::clone(shared);
        let pending = Arc::clone(&pending);
        let done_tx = done_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(message) = answers.next().await {
                let Ok(message) = message else { break };
                let id = message
                    .infer_response
                    .as_ref()
                    .map(|r| r.id.clone())
                    .unwrap_or_default();
                let Some(intended) = pending.lock().remove(&id) else {
                    continue;
                };
                let result = if message.error_message.is_empty() {
                    Ok(message.infer_response.unwrap_or_default())
                } else {
                    Err(tonic::Status::unknown(message.error_message))
                };
                shared.answered(intended, result);
                let _ = done_tx.send(());
            }
        }));
        senders.push(tx);
    }
    let requests = &shared.config.requests;
    let send = |i: usize, intended: Instant| {
        let mut request = requests[i % requests.len()].clone();
        request.id = i.to_string();
        pending.lock().insert(request.id.clone(), intended);
        let tx = senders[i % senders.len()].clone();
        let shared = Arc::clone(shared);
        async move {
            if tx.send(request).await.is_ok() {
                shared.sent(intended, Instant::now());
            }
        }
    };
    let mut i = 0usize;
    match mode {
        Mode::Closed { concurrency } => {
            for _ in 0..concurrency.max(1) {
                send(i, Instant::now()).await;
                i += 1;
            }
            while done_rx.recv().await.is_some() {
                let now = Instant::now();
                if now >= shared.end {
                    break;
                }
                send(i, now).await;
                i += 1;
            }
        }
        Mode::Open { rate } => {
            let mut arrivals = Arrivals::new(shared.start, rate, shared.config.seed);
            loop {
                let intended = arrivals.advance();
                if intended >= shared.end {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                send(i, intended).await;
                i += 1;
            }
        }
    }
    drop(senders);
    // Answers still in flight at the end are waited for, but not forever.
    let grace = Instant::now() + Duration::from_secs(10);
    for reader in readers {
        let _ = tokio::time::timeout_at(grace, reader).await;
    }
    Ok(())
}
