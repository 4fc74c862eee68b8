//! A model being served: its specification, scheduler, statistics and the
//! worker threads that execute its batches.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::cost::CostModel;
use crate::error::CoreError;
use crate::model::{ModelSpec, PolicyKind};
use crate::policy;
use crate::queue::{Job, Queue};
use crate::request::{InferRequest, InferResponse};
use crate::scheduler::{Rejected, Scheduler};
use crate::stats::ModelStats;
use crate::worker::{self, Executor};

/// Where a request's answer goes.
pub type Reply = oneshot::Sender<Result<InferResponse, CoreError>>;
/// Where a submitter waits for its answer.
pub type Answer = oneshot::Receiver<Result<InferResponse, CoreError>>;

/// A request in the queue with the channel its answer goes to.
#[derive(Debug)]
pub struct Pending {
    pub request: InferRequest,
    pub reply: Reply,
}

impl Job for Pending {
    fn rows(&self) -> usize {
        self.request.rows
    }
    fn priority(&self) -> u32 {
        self.request.priority
    }
    fn deadline(&self) -> Option<Instant> {
        self.request.deadline
    }
    fn arrival(&self) -> Instant {
        self.request.arrival
    }
    /// The submitter dropped its [`Answer`]: a cancelled call or a closed stream.
    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
    fn batches_with(&self, other: &Self) -> bool {
        self.request.batches_with(&other.request)
    }
}

/// A served model. Dropping the last handle does not stop its workers; call
/// [`ServedModel::shutdown`].
#[derive(Debug)]
pub struct ServedModel {
    pub spec: Arc<ModelSpec>,
    pub stats: Arc<ModelStats>,
    scheduler: Arc<Scheduler<Pending>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ServedModel {
    /// Validates `spec`, profiles the batch cost when the policy needs it
    /// (on the first executor, in the calling thread), and starts one worker
    /// thread per executor.
    pub fn start(
        spec: ModelSpec,
        mut executors: Vec<Box<dyn Executor>>,
    ) -> Result<Self, CoreError> {
        spec.validate()?;
        if executors.is_empty() {
            return Err(CoreError::invalid(format!(
                "model `{}` needs at least one executor",
                spec.name
            )));
        }
        let spec = Arc::new(spec);
        let stats = Arc::new(ModelStats::new(spec.priority_levels));
        let cost = Arc::new(CostModel::new(spec.batch_limit()));
        if spec.batching.policy == PolicyKind::Adaptive {
            worker::profile(&spec, executors[0].as_mut(), &cost);
        }
        let scheduler = Arc::new(Scheduler::new(
            Queue::new(spec.queue_capacity, spec.priority_levels),
            policy::for_model(&spec, Arc::clone(&cost)),
            cost,
            spec.batch_limit(),
            executors.len(),
        ));
        let mut workers = Vec::with_capacity(executors.len());
        for (i, executor) in executors.into_iter().enumerate() {
            let context = worker::Context {
                spec: Arc::clone(&spec),
                stats: Arc::clone(&stats),
                scheduler: Arc::clone(&scheduler),
            };
            let handle = std::thread::Builder::new()
                .name(format!("tidal-{}-{i}", spec.name))
                .spawn(move || worker::run(&context, i, executor))
                .map_err(|e| CoreError::Internal(format!("cannot start a worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Self {
            spec,
            stats,
            scheduler,
            workers: Mutex::new(workers),
        })
    }

    /// Admits `request` to the queue; the answer arrives on the returned channel.
    pub fn submit(&self, request: InferRequest) -> Result<Answer, CoreError> {
        let (reply, answer) = oneshot::channel();
        let priority = request.priority;
        let client_deadline = request.client_deadline;
        match self.scheduler.submit(Pending { request, reply }) {
            Ok(()) => {
                self.stats.admitted(priority);
                Ok(answer)
            }
            Err(rejected) => {
                self.stats.refused(priority);
                let model = self.spec.name.clone();
                Err(match rejected {
                    Rejected::Full { capacity, .. } => CoreError::QueueFull { model, capacity },
                    // The client's own deadline cannot be met: that is what
                    // DEADLINE_EXCEEDED says. The model's objective cannot be
                    // met: the model is overloaded, try elsewhere.
                    Rejected::Late(_) if client_deadline => CoreError::DeadlineExceeded {
                        model,
                        waited: std::time::Duration::ZERO,
                    },
                    Rejected::Late(_) => CoreError::Overloaded { model },
                    Rejected::Closed(_) => CoreError::Unavailable {
                        model,
                        reason: "it is being unloaded".into(),
                    },
                })
            }
        }
    }

    /// The model's batch cost model (fitted line), for reports.
    pub fn cost(&self) -> &Arc<CostModel> {
        self.scheduler.cost()
    }

    /// The share of a request's time to its deadline that admission keeps
    /// back now at `priority`, learnt from admitted requests of that
    /// priority that turned out late.
    pub fn admission_reserve(&self, priority: u32) -> f64 {
        self.scheduler.admission_reserve(priority)
    }

    /// Requests admitted and waiting.
    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }

    /// Stops admitting; what is queued is dispatched at once (nothing more
    /// will come to fill a batch). Does not wait; see [`ServedModel::shutdown`].
    pub fn close(&self) {
        self.scheduler.close(self.workers.lock().len());
    }

    /// Stops admitting, answers everything admitted, and joins the workers.
    /// Blocks until the last batch is done.
    pub fn shutdown(&self) {
        let workers = std::mem::take(&mut *self.workers.lock());
        self.scheduler.close(workers.len());
        for handle in workers {
            // A worker that panicked has already failed its batch's requests.
            let _ = handle.join();
        }
    }
}
