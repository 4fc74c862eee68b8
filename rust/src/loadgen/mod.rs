//! The load generator behind `tidal bench`: a tonic client on its own tokio
//! runtime that drives any KServe v2 server with unary or streaming calls,
//! closed loop (N calls in flight) or open loop (Poisson arrivals), and
//! records every latency from the request's *intended* send time, so a
//! stalled generator or a queue cannot hide waiting (no coordinated omission).

mod report;
mod run;

pub use report::{LoadReport, Sample};
pub use run::{run, Api, LoadConfig, Mode};
