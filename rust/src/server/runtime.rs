//! The tokio runtime the gRPC server runs on, and how the OS schedules its
//! threads against the models' worker threads.
//!
//! Where a network thread shares a core with a worker (one core per server,
//! or more models than cores), every arriving request wakes it, and by
//! default the kernel lets a waking thread preempt the running batch: a
//! context switch, an inter-processor interrupt and cold caches for the
//! model, per request. Those threads have nothing urgent to do mid-batch:
//! what they read joins the next batch, which cannot start before this one
//! ends. As `SCHED_BATCH` threads they never preempt on wakeup; they run when
//! the worker yields after its batch (see `worker`), when it sleeps, or when
//! its time slice ends, and read everything that arrived at once.
//!
//! The runtime also runs without tokio's LIFO slot. With it, a task woken by
//! the running task runs next: when a batch's answers wake their calls, each
//! call hands its response to its connection, which then runs at once and
//! writes that one response (a `writev`, and on loopback the peer's receive
//! path too, on this core). Without it, the connection runs after every
//! answered call, so one write carries all of its responses: about a third
//! fewer writes per request under the mlp's mixed load, 11% less network
//! time per request (docs/benchmarks.md). `disable_lifo_slot` needs
//! `--cfg tokio_unstable`, which `.cargo/config.toml` sets.

use std::str::FromStr;
use std::sync::Once;

use tokio::runtime::Runtime;

/// How the kernel schedules the network threads against a running batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkScheduling {
    /// The kernel's default: a thread woken by an arrival preempts a batch.
    Normal,
    /// `SCHED_BATCH` on Linux: no preemption on wakeup (elsewhere: `Normal`).
    #[default]
    Batch,
}

impl FromStr for NetworkScheduling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Self::Normal),
            "batch" => Ok(Self::Batch),
            other => Err(format!(
                "network scheduling `{other}` is not one of `batch`, `normal`"
            )),
        }
    }
}

/// Whether, scheduled as `scheduling` says, a request that arrives while
/// `workers` workers run batches is read only once one of them ends: the
/// process has no core that a batch cannot be running on, and its network
/// threads do not preempt a batch.
pub fn reads_between_batches(scheduling: NetworkScheduling, workers: usize) -> bool {
    cfg!(target_os = "linux") && scheduling == NetworkScheduling::Batch && cores() <= workers
}

/// Cores available to the process (its affinity mask and quota), at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A multi-threaded runtime of `threads` threads (0: one per core available
/// to the process) named `tidal-grpc`, scheduled as `scheduling` says.
pub fn build(threads: usize, scheduling: NetworkScheduling) -> std::io::Result<Runtime> {
    let threads = match threads {
        0 => cores(),
        n => n,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(threads)
        .thread_name("tidal-grpc")
        .enable_all();
    // Built with RUSTFLAGS of its own, cargo ignores `.cargo/config.toml`:
    // the server then keeps the LIFO slot (and the test below fails).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    if scheduling == NetworkScheduling::Batch {
        builder.on_thread_start(|| {
            if let Err(e) = defer_to_running_batches() {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    log::warn!("network threads keep the default scheduling: {e}");
                });
            }
        });
    }
    builder.build()
}

/// Makes the calling thread `SCHED_BATCH` (no wakeup preemption, same share
/// of the CPU as a normal thread; no privilege needed).
#[cfg(target_os = "linux")]
fn defer_to_running_batches() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` outlives the call, and pid 0 names the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_to_running_batches() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduling_parses_its_two_names_and_names_the_choices_otherwise() {
        assert_eq!("batch".parse(), Ok(NetworkScheduling::Batch));
        assert_eq!("normal".parse(), Ok(NetworkScheduling::Normal));
        let err = "fifo".parse::<NetworkScheduling>().unwrap_err();
        assert!(err.contains("`fifo`") && err.contains("`batch`"), "{err}");
    }

    #[test]
    fn requests_wait_for_a_batch_only_where_no_core_is_left_to_read_them() {
        let cores = cores();
        let batch = NetworkScheduling::Batch;
        assert_eq!(
            reads_between_batches(batch, cores),
            cfg!(target_os = "linux")
        );
        // A core no batch runs on, or network threads that preempt batches,
        // read a request as it arrives.
        assert!(!reads_between_batches(batch, cores - 1));
        assert!(!reads_between_batches(NetworkScheduling::Normal, cores));
    }

    #[test]
    fn tasks_woken_by_a_running_task_run_in_the_order_they_were_woken() {
        let runtime = build(1, NetworkScheduling::Normal).unwrap();
        let order = runtime.block_on(async {
            tokio::spawn(async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for i in 0..3 {
                    let tx = tx.clone();
                    tokio::spawn(async move { tx.send(i).unwrap() });
                }
                drop(tx);
                let mut order = Vec::new();
                while let Some(i) = rx.recv().await {
                    order.push(i);
                }
                order
            })
            .await
            .unwrap()
        });
        // The LIFO slot would run the last one woken first.
        assert_eq!(order, [0, 1, 2]);
    }

    #[cfg(target_os = "linux")]
    fn policy_of_a_runtime_thread(scheduling: NetworkScheduling) -> i32 {
        let runtime = build(1, scheduling).unwrap();
        // SAFETY: sched_getscheduler(0) only reads the calling thread's policy.
        runtime.block_on(async {
            tokio::spawn(async { unsafe { libc::sched_getscheduler(0) } })
                .await
                .unwrap()
        })
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn batch_scheduling_applies_to_the_runtime_threads_only_when_asked() {
        assert_eq!(
            policy_of_a_runtime_thread(NetworkScheduling::Batch),
            libc::SCHED_BATCH
        );
        assert_eq!(
            policy_of_a_runtime_thread(NetworkScheduling::Normal),
            libc::SCHED_OTHER
        );
    }
}
