//! Drives the load and collects samples.
//!
//! # One thread
//! Everything runs on one current-thread tokio runtime: the sender, every
//! call, every stream reader. On one core that is the cheapest arrangement
//! (no cross-thread wake-ups, uncontended locks), and it is what lets the
//! generator sustain tens of thousands of calls per second there.
//!
//! # Timing
//! tokio's timer ticks in milliseconds, so sleeping on it until each arrival
//! would send the arrivals of one tick together, a burst the schedule never
//! asked for. The open-loop sender waits with [`Timer`] instead (a timerfd
//! on Linux), which wakes it within microseconds of the intended instant;
//! the send lag it reports is its own timing error.
//!
//! # What is recorded
//! Every latency runs from the request's *intended* send time, so a generator
//! that falls behind, or a connection that stalls, adds to the latency
//! instead of hiding it. Only requests intended inside the measured window
//! are recorded; the in-flight count is integrated over the window for the
//! Little's law check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::arrivals::{Arrivals, Schedule};
use super::class::Class;
use super::connection::Connection;
use super::report::{code_name, LoadReport, Phase, Progress, Sample, MALFORMED};
use super::timer::Timer;
use crate::server::proto::infer_parameter::ParameterChoice;
use crate::server::proto::{ModelInferRequest, ModelInferResponse};
use crate::server::STREAM_ERROR_CODE;

/// How requests are offered.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// `concurrency` calls always in flight; each client sends its next
    /// request when the previous one is answered.
    Closed { concurrency: usize },
    /// Requests arrive on their own schedule, whatever the answers do.
    Open { arrivals: Arrivals },
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
    /// The kinds of traffic, sharing the load by weight.
    pub classes: Vec<Class>,
    pub load: Load,
    pub api: Api,
    /// HTTP/2 connections the calls are spread over (streams: one stream each).
    pub connections: usize,
    /// Load before the measured window; its answers are not recorded.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait for answers after the last request is sent.
    pub drain: Duration,
    /// Seeds the arrivals, the choice of class and of repeated inputs.
    pub seed: u64,
    /// Stop sending after this many requests (warm-up included); the window
    /// then ends with the last one.
    pub max_requests: Option<u64>,
}

impl LoadConfig {
    /// Checks the configuration; the message names the offending value.
    pub fn validate(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("no traffic class to send".into());
        }
        if self.classes.len() > usize::from(u16::MAX) {
            return Err(format!("too many traffic classes: {}", self.classes.len()));
        }
        for class in &self.classes {
            class.validate()?;
        }
        match &self.load {
            Load::Closed { concurrency } if *concurrency == 0 => {
                Err("closed-loop load needs at least 1 call in flight".into())
            }
            Load::Closed { .. } => Ok(()),
            Load::Open { arrivals } => arrivals.validate(),
        }
    }
}

/// A run on its own thread, watched from another.
#[derive(Debug)]
pub struct LoadRun {
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<LoadReport, String>>>>,
}

impl LoadRun {
    /// Validates `config` and starts the run on a new thread.
    pub fn start(config: LoadConfig) -> Result<Self, String> {
        config.validate()?;
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, stop) = (Arc::clone(&progress), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("tidal-loadgen".into())
                .spawn(move || run_with(config, &progress, &stop))
                .map_err(|e| format!("cannot start the load generator's thread: {e}"))?
        };
        Ok(Self {
            progress,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Ends the run early: nothing more is sent, answers in flight are
    /// waited for (up to the drain time), and the window ends now.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.thread
            .lock()
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Waits for the end of the run and returns its report; a second call
    /// returns an error.
    pub fn join(&self) -> Result<LoadReport, String> {
        let thread = self
            .thread
            .lock()
            .take()
            .ok_or_else(|| "the run's result was already taken".to_string())?;
        thread
            .join()
            .map_err(|_| "the load generator's thread panicked".to_string())?
    }
}

/// Runs the load on a new single-threaded runtime in the calling thread.
pub fn run(config: LoadConfig) -> Result<LoadReport, String> {
    config.validate()?;
    run_with(
        config,
        &Arc::new(Progress::default()),
        &Arc::new(AtomicBool::new(false)),
    )
}

fn run_with(
    config: LoadConfig,
    progress: &Arc<Progress>,
    stop: &Arc<AtomicBool>,
) -> Result<LoadReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))?;
    let report = runtime.block_on(drive(config, Arc::clone(progress), Arc::clone(stop)));
    progress.set_phase(Phase::Done);
    // Calls still in flight after the drain time are dropped with the runtime.
    runtime.shutdown_background();
    report
}

/// What every task shares: the clock, the classes and the results.
struct Shared {
    classes: Vec<Class>,
    start: Instant,
    window_start: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    state: Mutex<State>,
    /// Signalled when the last call in flight finishes.
    idle: Notify,
    /// Requests that may still be sent (`u64::MAX`: no limit).
    budget: AtomicU64,
    /// Open loop: calls spawned that have not finished. A call counts as in
    /// flight only once its task runs, so the drain must also wait for
    /// these, or the last arrivals would be dropped unsent.
    spawned: AtomicUsize,
}

/// Mutable results; one lock, never contended on the one runtime thread
/// (the progress reader has a lock of its own).
struct State {
    report: LoadReport,
    /// Calls sent and not yet answered, warm-up ones included.
    in_flight: u64,
    /// When `in_flight` last changed.
    changed: Instant,
    /// Integral of `in_flight` over the window so far, in call-seconds.
    area: f64,
    /// When a stop was asked for, if it was.
    stopped_at: Option<Instant>,
}

impl State {
    /// Accounts the in-flight count from the last change until `now`.
    fn integrate(&mut self, now: Instant, window_start: Instant, end: Instant) {
        let from = self.changed.max(window_start);
        let to = now.min(end);
        if to > from {
            self.area += self.in_flight as f64 * (to - from).as_secs_f64();
        }
        self.changed = now;
    }
}

/// An answer as the recorder sees it.
enum Outcome {
    Ok(ModelInferResponse),
    Failed { code: i32, message: String },
}

impl Shared {
    fn in_window(&self, intended: Instant) -> bool {
        intended >= self.window_start && intended < self.end
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Nothing in flight, and no call spawned that has yet to start.
    fn is_idle(&self) -> bool {
        self.spawned.load(Ordering::Relaxed) == 0 && self.state.lock().in_flight == 0
    }

    /// Wakes the drain when the last call is over.
    fn notify_if_idle(&self) {
        if self.is_idle() {
            self.idle.notify_waiters();
        }
    }

    fn scheduled(&self, intended: Instant) {
        if self.in_window(intended) {
            self.state.lock().report.intended += 1;
        }
    }

    /// A request left at `now`; it was meant to leave at `intended`.
    fn sent(&self, intended: Instant, class: u16, now: Instant) {
        self.progress.sent();
        let mut state = self.state.lock();
        state.integrate(now, self.window_start, self.end);
        state.in_flight += 1;
        if now >= self.window_start && now < self.end {
            state.report.sent_in_window += 1;
        }
        if self.in_window(intended) {
            state.report.sent[usize::from(class)] += 1;
            state
                .report
                .send_lag
                .push(now.saturating_duration_since(intended));
        }
    }

    /// The answer to a request meant for `intended` and sent at `sent_at`,
    /// whose last bytes reached the generator's socket at `received`.
    fn answered(
        &self,
        intended: Instant,
        sent_at: Instant,
        received: Instant,
        class: u16,
        outcome: Outcome,
    ) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(intended);
        let (code, failure) = match outcome {
            Outcome::Ok(response) => match self.classes[usize::from(class)].check(&response) {
                Ok(()) => (0, None),
                Err(reason) => (MALFORMED, Some(reason)),
            },
            Outcome::Failed { code, message } => (code, Some(message)),
        };
        self.progress.answered(latency, code == 0);
        let mut state = self.state.lock();
        state.integrate(now, self.window_start, self.end);
        state.in_flight = state.in_flight.saturating_sub(1);
        if !self.in_window(intended) {
            return;
        }
        let report = &mut state.report;
        if code == MALFORMED {
            report.malformed += 1;
            if report.malformed_example.is_none() {
                report.malformed_example = failure;
            }
        } else if code != 0 {
            let name = code_name(code).to_string();
            *report.errors.entry(name.clone()).or_default() += 1;
            report
                .error_examples
                .entry(name)
                .or_insert_with(|| failure.unwrap_or_default());
        }
        report.samples.push(Sample {
            intended: intended - self.window_start,
            latency,
            send_lag: sent_at.saturating_duration_since(intended),
            receive_lag: now.saturating_duration_since(received),
            code,
            class,
        });
    }
}

async fn drive(
    config: LoadConfig,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<LoadReport, String> {
    let mut connections = Vec::new();
    for _ in 0..config.connections.max(1) {
        connections.push(Connection::open(&config.target).await?);
    }
    progress.set_phase(if config.warmup.is_zero() {
        Phase::Measuring
    } else {
        Phase::Warmup
    });
    let start = Instant::now();
    let window_start = start + config.warmup;
    let classes = config.classes.len();
    let shared = Arc::new(Shared {
        classes: config.classes,
        start,
        window_start,
        end: window_start + config.duration,
        stop,
        progress: Arc::clone(&progress),
        state: Mutex::new(State {
            report: LoadReport {
                sent: vec![0; classes],
                ..LoadReport::default()
            },
            in_flight: 0,
            changed: start,
            area: 0.0,
            stopped_at: None,
        }),
        idle: Notify::new(),
        budget: AtomicU64::new(config.max_requests.unwrap_or(u64::MAX)),
        spawned: AtomicUsize::new(0),
    });
    let phases = tokio::spawn(track_phases(Arc::clone(&shared)));
    let mut rng = StdRng::seed_from_u64(config.seed);
    match config.api {
        Api::Unary => match config.load {
            Load::Closed { concurrency } => closed_unary(&shared, &connections, concurrency).await,
            Load::Open { arrivals } => {
                let schedule = Schedule::new(arrivals, rng.random());
                open_unary(&shared, &connections, schedule, &mut rng).await;
            }
        },
        Api::Stream => streamed(&shared, &connections, config.load, &mut rng).await?,
    }
    phases.abort();
    progress.set_phase(Phase::Draining);
    // Answers still in flight are waited for, but not forever.
    let _ = tokio::time::timeout(config.drain, wait_idle(&shared)).await;
    let now = Instant::now();
    let mut state = shared.state.lock();
    state.integrate(now, shared.window_start, shared.end);
    let window_end = state.stopped_at.map_or(shared.end, |s| s.min(shared.end));
    let mut report = std::mem::take(&mut state.report);
    report.window = window_end.saturating_duration_since(shared.window_start);
    report.stopped = state.stopped_at.is_some();
    let window = report.window.as_secs_f64();
    report.mean_in_flight = if window > 0.0 {
        state.area / window
    } else {
        0.0
    };
    let sent: u64 = report.sent.iter().sum();
    report.unanswered = sent.saturating_sub(report.samples.len() as u64);
    Ok(report)
}

/// Moves the progress phase from warm-up to measuring, and notes a stop.
async fn track_phases(shared: Arc<Shared>) {
    let window_start = tokio::time::Instant::from_std(shared.window_start);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(window_start) => {
                shared.progress.set_phase(Phase::Measuring);
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if shared.stopping() { break; }
            }
        }
    }
}

async fn wait_idle(shared: &Shared) {
    loop {
        let notified = shared.idle.notified();
        if shared.is_idle() {
            return;
        }
        notified.await;
    }
}

/// Whether sending is over: the window has passed, a stop was asked for,
/// or the request budget is spent (the last two end the window at `now`).
fn sending_over(shared: &Shared, now: Instant) -> bool {
    if now >= shared.end {
        return true;
    }
    if shared.stopping() || shared.budget.load(Ordering::Relaxed) == 0 {
        let mut state = shared.state.lock();
        state.stopped_at.get_or_insert(now);
        return true;
    }
    false
}

/// Claims the right to send one more request meant for `now` (an open
/// loop's intended instant, which may be a little past by now).
fn claim(shared: &Shared, now: Instant) -> bool {
    if sending_over(shared, now) {
        return false;
    }
    // Only this runtime's thread sends, but the closed-loop clients
    // interleave: the decrement must not go below zero.
    shared
        .budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// One unary call and what came of it, with when its answer's bytes arrived.
async fn infer(connection: &mut Connection, request: ModelInferRequest) -> (Outcome, Instant) {
    let outcome = match connection.client.model_infer(request).await {
        Ok(response) => Outcome::Ok(response.into_inner()),
        Err(status) => Outcome::Failed {
            code: status.code() as i32,
            message: status.message().to_string(),
        },
    };
    (outcome, connection.received())
}

async fn call(
    shared: Arc<Shared>,
    mut connection: Connection,
    request: ModelInferRequest,
    intended: Instant,
    class: u16,
) {
    let sent_at = Instant::now();
    shared.sent(intended, class, sent_at);
    let (outcome, received) = infer(&mut connection, request).await;
    shared.answered(intended, sent_at, received, class, outcome);
    shared.spawned.fetch_sub(1, Ordering::Relaxed);
    shared.notify_if_idle();
}

/// Which class each of `n` closed-loop clients sends: in proportion to the
/// weights (largest remainder), and every class at least one client when
/// there are enough clients for that.
fn split_clients(classes: &[Class], n: usize) -> Vec<u16> {
    let total: f64 = classes.iter().map(|c| c.weight).sum();
    let share = |i: usize| classes[i].weight / total * n as f64;
    let mut counts: Vec<usize> = (0..classes.len())
        .map(|i| share(i).floor() as usize)
        .collect();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| {
        let rest = |i: usize| share(i) - share(i).floor();
        rest(b).total_cmp(&rest(a))
    });
    let given: usize = counts.iter().sum();
    // The floors leave fewer than one client per class unassigned.
    for &i in order.iter().take(n - given) {
        counts[i] += 1;
    }
    if n >= classes.len() {
        while let Some(empty) = counts.iter().position(|&c| c == 0) {
            let largest = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0);
            counts[largest] -= 1;
            counts[empty] += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .flat_map(|(class, &count)| std::iter::repeat_n(class as u16, count))
        .collect()
}

async fn closed_unary(shared: &Arc<Shared>, connections: &[Connection], concurrency: usize) {
    let mut tasks = Vec::new();
    for (worker, class) in split_clients(&shared.classes, concurrency)
        .into_iter()
        .enumerate()
    {
        let shared = Arc::clone(shared);
        let mut connection = connections[worker % connections.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            // Each client walks its class's pool from its own offset.
            let mut n = worker as u64;
            loop {
                let intended = Instant::now();
                if !claim(&shared, intended) {
                    break;
                }
                shared.scheduled(intended);
                let request = shared.classes[usize::from(class)].request(n, &mut rng);
                n += concurrency as u64;
                shared.sent(intended, class, intended);
                let (outcome, received) = infer(&mut connection, request).await;
                shared.answered(intended, intended, received, class, outcome);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Picks a class for each arrival, in proportion to the weights.
struct ClassPicker {
    cumulative: Vec<f64>,
}

impl ClassPicker {
    fn new(classes: &[Class]) -> Self {
        let mut sum = 0.0;
        let cumulative = classes
            .iter()
            .map(|c| {
                sum += c.weight;
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn pick(&self, rng: &mut impl Rng) -> u16 {
        if self.cumulative.len() == 1 {
            return 0;
        }
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.cumulative.len() - 1) as u16
    }
}

/// Sends this many due requests in a row, at most, before letting the
/// runtime poll the network and run the calls.
const MAX_BURST: u32 = 32;

/// Paces an open-loop sender: sleeps until each arrival's intended instant,
/// and when arrivals are already due, yields to the runtime every
/// [`MAX_BURST`] of them.
struct Pacer {
    timer: Timer,
    burst: u32,
}

impl Pacer {
    fn new() -> Self {
        Self {
            timer: Timer::new(),
            burst: 0,
        }
    }

    async fn wait(&mut self, intended: Instant) {
        if Instant::now() < intended {
            self.timer.sleep_until(intended).await;
            self.burst = 0;
        } else {
            self.burst += 1;
            if self.burst >= MAX_BURST {
                self.burst = 0;
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The open-loop sender: one arrival after the other, each sent at its
/// intended instant by a task of its own.
async fn open_unary(
    shared: &Arc<Shared>,
    connections: &[Connection],
    schedule: Schedule,
    rng: &mut StdRng,
) {
    let picker = ClassPicker::new(&shared.classes);
    let mut counters = vec![0u64; shared.classes.len()];
    let mut pacer = Pacer::new();
    for (i, offset) in schedule.enumerate() {
        let intended = shared.start + offset;
        pacer.wait(intended).await;
        // Claimed at its intended instant: an arrival due inside the window
        // is sent even when the pacer woke after the window's end, and its
        // latency shows the lag rather than the count losing it.
        if !claim(shared, intended) {
            break;
        }
        shared.scheduled(intended);
        let class = picker.pick(rng);
        let n = &mut counters[usize::from(class)];
        let request = shared.classes[usize::from(class)].request(*n, rng);
        *n += 1;
        let connection = connections[i % connections.len()].clone();
        shared.spawned.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(call(
            Arc::clone(shared),
            connection,
            request,
            intended,
            class,
        ));
    }
}

/// A request in flight on a stream: its id maps back to this.
#[derive(Clone, Copy)]
struct InFlight {
    intended: Instant,
    sent_at: Instant,
    class: u16,
    /// Closed loop: the client slot that sends the next request on answer.
    slot: Option<usize>,
}

/// One ModelStreamInfer call: where requests go and which are in flight.
struct Stream {
    tx: mpsc::UnboundedSender<ModelInferRequest>,
    pending: Mutex<HashMap<u64, InFlight>>,
}

/// Sends requests on the streams; shared by the sender and (closed loop)
/// the readers, which send a slot's next request when its answer comes.
struct StreamSender {
    shared: Arc<Shared>,
    streams: Vec<Arc<Stream>>,
    next_id: Mutex<(u64, StdRng, Vec<u64>)>,
}

impl StreamSender {
    fn send(&self, stream: usize, class: u16, intended: Instant, slot: Option<usize>) {
        let (id, mut request) = {
            let mut guard = self.next_id.lock();
            let (next_id, rng, counters) = &mut *guard;
            let id = *next_id;
            *next_id += 1;
            let n = counters[usize::from(class)];
            counters[usize::from(class)] += 1;
            (id, self.shared.classes[usize::from(class)].request(n, rng))
        };
        request.id = id.to_string();
        let stream = &self.streams[stream % self.streams.len()];
        let now = Instant::now();
        self.shared.sent(intended, class, now);
        stream.pending.lock().insert(
            id,
            InFlight {
                intended,
                sent_at: now,
                class,
                slot,
            },
        );
        if stream.tx.send(request).is_err() {
            // The stream has ended; the request fails like a refused call.
            if let Some(flight) = stream.pending.lock().remove(&id) {
                self.shared.answered(
                    flight.intended,
                    flight.sent_at,
                    now,
                    class,
                    Outcome::Failed {
                        code: tonic::Code::Unavailable as i32,
                        message: "the stream has ended".into(),
                    },
                );
            }
        }
    }
}

async fn streamed(
    shared: &Arc<Shared>,
    connections: &[Connection],
    load: Load,
    rng: &mut StdRng,
) -> Result<(), String> {
    let mut streams = Vec::new();
    let mut inbound = Vec::new();
    for connection in connections {
        let (tx, rx) = mpsc::unbounded_channel::<ModelInferRequest>();
        let mut client = connection.client.clone();
        let answers = client
            .model_stream_infer(UnboundedReceiverStream::new(rx))
            .await
            .map_err(|e| format!("cannot open a stream: {e}"))?
            .into_inner();
        streams.push(Arc::new(Stream {
            tx,
            pending: Mutex::new(HashMap::new()),
        }));
        inbound.push(answers);
    }
    let sender = Arc::new(StreamSender {
        shared: Arc::clone(shared),
        streams: streams.clone(),
        next_id: Mutex::new((
            0,
            StdRng::seed_from_u64(rng.random()),
            vec![0; shared.classes.len()],
        )),
    });
    let slots = match &load {
        Load::Closed { concurrency } => split_clients(&shared.classes, *concurrency),
        Load::Open { .. } => Vec::new(),
    };
    let slots = Arc::new(slots);
    for (index, mut answers) in inbound.into_iter().enumerate() {
        let stream = Arc::clone(&streams[index]);
        let connection = connections[index].clone();
        let sender = Arc::clone(&sender);
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let shared = Arc::clone(&sender.shared);
            while let Some(message) = answers.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(status) => {
                        // The stream broke: everything in flight on it failed.
                        let lost: Vec<InFlight> =
                            stream.pending.lock().drain().map(|(_, f)| f).collect();
                        for flight in lost {
                            shared.answered(
                                flight.intended,
                                flight.sent_at,
                                connection.received(),
                                flight.class,
                                Outcome::Failed {
                                    code: status.code() as i32,
                                    message: status.message().to_string(),
                                },
                            );
                        }
                        break;
                    }
                };
                let id = message
                    .infer_response
                    .as_ref()
                    .and_then(|r| r.id.parse::<u64>().ok());
                let Some(flight) = id.and_then(|id| stream.pending.lock().remove(&id)) else {
                    continue;
                };
                let outcome = if message.error_message.is_empty() {
                    Outcome::Ok(message.infer_response.unwrap_or_default())
                } else {
                    Outcome::Failed {
                        code: stream_error_code(message.infer_response.as_ref()),
                        message: message.error_message,
                    }
                };
                shared.answered(
                    flight.intended,
                    flight.sent_at,
                    connection.received(),
                    flight.class,
                    outcome,
                );
                if let Some(slot) = flight.slot {
                    let now = Instant::now();
                    if claim(&shared, now) {
                        shared.scheduled(now);
                        sender.send(slot, slots[slot], now, Some(slot));
                    }
                }
                shared.notify_if_idle();
            }
        });
    }
    match load {
        Load::Closed { .. } => {
            let now = Instant::now();
            for (slot, &class) in slots.iter().enumerate() {
                if !claim(shared, now) {
                    break;
                }
                shared.scheduled(now);
                sender.send(slot, class, now, Some(slot));
            }
            // The readers keep the loop going until the window ends.
            while !sending_over(shared, Instant::now()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Load::Open { arrivals } => {
            let schedule = Schedule::new(arrivals, rng.random());
            let picker = ClassPicker::new(&shared.classes);
            let mut pacer = Pacer::new();
            for (i, offset) in schedule.enumerate() {
                let intended = shared.start + offset;
                pacer.wait(intended).await;
                // At its intended instant, as in `open_unary`.
                if !claim(shared, intended) {
                    break;
                }
                shared.scheduled(intended);
                let class = picker.pick(rng);
                sender.send(i, class, intended, None);
            }
        }
    }
    // The readers go on until the drain is over: `drive` waits for the
    // calls in flight, not for the streams to end.
    Ok(())
}

/// A streamed error's gRPC code: the one tidal sends beside the message, or
/// UNKNOWN where the server sends none (the protocol has no field for it).
fn stream_error_code(response: Option<&ModelInferResponse>) -> i32 {
    let code = response
        .and_then(|r| r.parameters.get(STREAM_ERROR_CODE))
        .and_then(|p| match p.parameter_choice {
            Some(ParameterChoice::Int64Param(code)) => i32::try_from(code).ok(),
            _ => None,
        });
    code.unwrap_or(tonic::Code::Unknown as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(weight: f64) -> Class {
        Class {
            name: "c".into(),
            requests: vec![ModelInferRequest::default()],
            weight,
            expected: vec![],
            expected_count: 0,
            repeat_fraction: None,
            int_range: (0, 1),
        }
    }

    #[test]
    fn clients_split_by_weight() {
        let classes = [class(3.0), class(1.0)];
        let split = split_clients(&classes, 8);
        assert_eq!(split, vec![0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(split_clients(&classes, 1).len(), 1);
        let split = split_clients(&[class(1.0), class(1.0), class(1.0)], 10);
        assert_eq!(split.len(), 10);
        // A small class still gets a client.
        let split = split_clients(&[class(0.99), class(0.01)], 4);
        assert_eq!(split, vec![0, 0, 0, 1]);
    }

    #[test]
    fn picker_follows_weights() {
        let picker = ClassPicker::new(&[class(0.8), class(0.2)]);
        let mut rng = StdRng::seed_from_u64(0);
        let ones = (0..100_000).filter(|_| picker.pick(&mut rng) == 1).count();
        assert!((19_000..21_000).contains(&ones), "{ones}");
    }
}
