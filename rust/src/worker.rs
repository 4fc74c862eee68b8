//! The loop each model instance runs on its own thread: wait for a batch,
//! assemble it, execute it once, answer each request.

use std::sync::Arc;
use std::time::Instant;

use crate::batch::{self, BatchInput, BatchOutput};
use crate::error::CoreError;
use crate::model::ModelSpec;
use crate::queue::DropReason;
use crate::scheduler::Scheduler;
use crate::served::Pending;
use crate::stats::{BatchTiming, ModelStats};

/// Runs a model on one assembled batch.
pub trait Executor: Send {
    /// Executes the model on `inputs` (one per model input, in the model's
    /// order, batch dimension first) and returns the outputs listed in
    /// `outputs` (indices into the model's outputs), in that order.
    fn execute(
        &mut self,
        inputs: Vec<BatchInput>,
        outputs: &[usize],
    ) -> Result<Vec<BatchOutput>, String>;
}

/// What a worker shares with its model.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) spec: Arc<ModelSpec>,
    pub(crate) stats: Arc<ModelStats>,
    pub(crate) scheduler: Arc<Scheduler<Pending>>,
}

/// Serves batches until the model's queue is closed and drained.
pub(crate) fn run(context: &Context, mut executor: Box<dyn Executor>) {
    let mut dropped = |pending: Pending, reason: DropReason| {
        let waited = pending.request.arrival.elapsed();
        let model = context.spec.name.clone();
        let error = match reason {
            DropReason::Expired => {
                context.stats.expired(waited);
                CoreError::DeadlineExceeded { model, waited }
            }
            DropReason::Cancelled => {
                context.stats.cancelled(waited);
                CoreError::Cancelled { model }
            }
        };
        let _ = pending.reply.send(Err(error));
    };
    while let Some(batch) = context.scheduler.next_batch(&mut dropped) {
        execute(context, executor.as_mut(), batch);
    }
}

fn execute(context: &Context, executor: &mut dyn Executor, batch: Vec<Pending>) {
    let start = Instant::now();
    for pending in &batch {
        context.stats.dequeued(start - pending.request.arrival);
    }
    let requests: Vec<_> = batch.iter().map(|p| &p.request).collect();
    let rows = requests.iter().map(|r| r.rows).sum();
    let outputs = batch::needed_outputs(&requests);
    let inputs = batch::assemble(&context.spec, &requests);
    let assembled = Instant::now();
    // A panicking executor must fail its batch, not take the worker down.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        executor.execute(inputs, &outputs)
    }))
    .unwrap_or_else(|_| Err("the executor panicked".into()));
    let executed = Instant::now();
    let answers =
        result.and_then(|results| batch::split(&context.spec, &requests, &outputs, results));
    let split = Instant::now();
    context.stats.batch(BatchTiming {
        rows,
        requests: batch.len(),
        input: assembled - start,
        infer: executed - assembled,
        output: split - executed,
    });
    context.scheduler.observe(rows, executed - assembled);
    match answers {
        Ok(answers) => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                context.stats.succeeded(pending.request.arrival.elapsed());
                let _ = pending.reply.send(Ok(answer));
            }
        }
        Err(message) => {
            let error = CoreError::Execution {
                model: context.spec.name.clone(),
                batch_size: rows,
                message,
            };
            for pending in batch {
                context.stats.failed(pending.request.arrival.elapsed());
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}
