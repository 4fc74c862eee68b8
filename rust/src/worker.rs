//! The loop each model instance runs on its own thread: wait for a batch,
//! assemble it, execute it once, answer each request. And the warm-up
//! profile that seeds a model's cost model before it serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{self, BatchInput, BatchOutput};
use crate::cost::CostModel;
use crate::error::CoreError;
use crate::feedback::Verdict;
use crate::handover::Handover;
use crate::model::ModelSpec;
use crate::queue::DropReason;
use crate::scheduler::Scheduler;
use crate::served::Pending;
use crate::stats::{BatchTiming, ModelStats};
use crate::tensor::DataType;

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

/// Serves batches as instance `instance` until the model's queue is closed and drained.
pub(crate) fn run(context: &Context, instance: usize, mut executor: Box<dyn Executor>) {
    // Per lane, (punctual, late) admitted requests since the last batch was
    // settled: requests that expired in the queue count as late here, and
    // admission hears of them with the next batch's outcomes.
    let outcomes = std::cell::RefCell::new(vec![(0usize, 0usize); context.scheduler.levels()]);
    let mut dropped = |pending: Pending, reason: DropReason| {
        let waited = pending.request.arrival.elapsed();
        let priority = pending.request.priority;
        let model = context.spec.name.clone();
        let error = match reason {
            DropReason::Expired => {
                outcomes.borrow_mut()[context.scheduler.lane(priority)].1 += 1;
                context.stats.expired(priority, waited);
                CoreError::DeadlineExceeded { model, waited }
            }
            DropReason::Cancelled => {
                context.stats.cancelled(priority, waited);
                CoreError::Cancelled { model }
            }
        };
        let _ = pending.reply.send(Err(error));
    };
    while let Some(batch) = context.scheduler.next_batch(instance, &mut dropped) {
        execute(
            context,
            instance,
            executor.as_mut(),
            batch,
            &mut outcomes.borrow_mut(),
        );
        // Where the network threads share this core, the answers just sent
        // and the requests that arrived during the batch wait for it; without
        // this they would wait out the next batch too (or the scheduler's
        // slice). Where they have cores of their own it returns at once.
        std::thread::yield_now();
    }
}

/// Runs `executor` without letting a panic take the worker down.
fn guarded(
    executor: &mut dyn Executor,
    inputs: Vec<BatchInput>,
    outputs: &[usize],
) -> Result<Vec<BatchOutput>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        executor.execute(inputs, outputs)
    }))
    .unwrap_or_else(|_| Err("the executor panicked".into()))
}

fn execute(
    context: &Context,
    instance: usize,
    executor: &mut dyn Executor,
    batch: Vec<Pending>,
    outcomes: &mut [(usize, usize)],
) {
    let start = Instant::now();
    for pending in &batch {
        context
            .stats
            .dequeued(pending.request.priority, start - pending.request.arrival);
    }
    let requests: Vec<_> = batch.iter().map(|p| &p.request).collect();
    let rows = requests.iter().map(|r| r.rows).sum();
    context.scheduler.started(instance, rows);
    let outputs = batch::needed_outputs(&requests);
    let inputs = batch::assemble(&context.spec, &requests);
    let assembled = Instant::now();
    let result = guarded(executor, inputs, &outputs);
    let executed = Instant::now();
    let answers =
        result.and_then(|results| batch::split(&context.spec, &requests, &outputs, results));
    let timing = BatchTiming {
        rows,
        requests: batch.len(),
        input: assembled - start,
        infer: executed - assembled,
        output: Instant::now() - executed,
    };
    context.stats.batch(timing);
    let settlement = context.scheduler.settlement(outcomes);
    outcomes.fill((0, 0));
    match answers {
        Ok(answers) => {
            for (pending, mut answer) in batch.into_iter().zip(answers) {
                let request = &pending.request;
                let verdict = request.deadline.map(|deadline| {
                    let lane = context.scheduler.lane(request.priority);
                    Verdict::new(Arc::clone(&settlement), lane, deadline)
                });
                answer.handover = Some(Handover::new(
                    Arc::clone(&context.stats),
                    request.priority,
                    request.arrival,
                    timing.total(),
                    verdict,
                ));
                let _ = pending.reply.send(Ok(answer));
            }
        }
        Err(message) => {
            let finished = Instant::now();
            for request in batch.iter().map(|p| &p.request) {
                if let Some(deadline) = request.deadline {
                    let lane = context.scheduler.lane(request.priority);
                    settlement.judge(lane, request.arrival, deadline, finished);
                }
            }
            let error = CoreError::Execution {
                model: context.spec.name.clone(),
                batch_size: rows,
                message,
            };
            for pending in batch {
                context
                    .stats
                    .failed(pending.request.priority, pending.request.arrival.elapsed());
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
    // The instance was busy for all of it, not only for the model's run:
    // assembling, splitting and answering are part of what a batch costs,
    // and much of its fixed part when the model itself has none.
    context.scheduler.finished(instance, rows, start.elapsed());
}

/// Repetitions per batch size in the warm-up profile.
const PROFILE_REPEATS: usize = 3;
/// The profile stops growing the batch once one takes longer than this or
/// the profile as a whole has taken [`PROFILE_BUDGET`].
const PROFILE_BATCH_LIMIT: Duration = Duration::from_secs(1);
const PROFILE_BUDGET: Duration = Duration::from_secs(3);

/// Times batches of 1, 2, 4, ... up to the model's limit on zero-filled
/// inputs and feeds the timings to `cost`. A model that fails on zeros is
/// left unprofiled (the cost model then learns from real batches).
pub(crate) fn profile(spec: &ModelSpec, executor: &mut dyn Executor, cost: &CostModel) {
    let started = Instant::now();
    let outputs: Vec<usize> = (0..spec.outputs.len()).collect();
    let mut rows = 1;
    loop {
        let mut slowest = Duration::ZERO;
        for _ in 0..PROFILE_REPEATS {
            let t0 = Instant::now();
            if let Err(e) = guarded(executor, zero_inputs(spec, rows), &outputs) {
                log::warn!(
                    "model `{}`: warm-up profile stopped at batch {rows}: {e}",
                    spec.name
                );
                cost.refit();
                return;
            }
            let took = t0.elapsed();
            cost.observe(rows, took);
            slowest = slowest.max(took);
        }
        let limit = spec.batch_limit();
        if rows >= limit || slowest > PROFILE_BATCH_LIMIT || started.elapsed() > PROFILE_BUDGET {
            break;
        }
        rows = (rows * 2).min(limit);
    }
    cost.refit();
}

/// Zero-filled inputs for a batch of `rows` (variable dimensions set to 1,
/// BYTES elements empty).
fn zero_inputs(spec: &ModelSpec, rows: usize) -> Vec<BatchInput> {
    spec.inputs
        .iter()
        .map(|input| {
            let fixed = input.shape.iter().map(|&d| if d < 0 { 1 } else { d });
            let shape: Vec<i64> = if spec.batches() {
                std::iter::once(rows as i64).chain(fixed).collect()
            } else {
                fixed.collect()
            };
            let elements: usize = shape.iter().map(|&d| d as usize).product();
            let bytes = match input.datatype {
                DataType::Bytes => 4,
                other => other.element_size().unwrap_or(1),
            };
            BatchInput {
                shape,
                data: vec![0; elements * bytes],
            }
        })
        .collect()
}
