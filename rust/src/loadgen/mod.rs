//! The load generator behind `tidal bench`: a tonic client on its own tokio
//! runtime that drives any KServe v2 server with unary or streaming calls,
//! closed loop (N calls in flight) or open loop (Poisson, evenly spaced,
//! on/off bursts or a recorded trace), with one or several traffic classes,
//! and records every latency from the request's *intended* send time, so a
//! stalled generator or a queue cannot hide waiting (no coordinated
//! omission). Every answer is checked (status, outputs, shapes, sizes).
//!
//! [`EchoServer`] answers at once; against it the generator measures itself.

mod arrivals;
mod class;
mod connection;
mod echo;
mod report;
mod run;
mod timer;

pub use arrivals::{Arrivals, Schedule};
pub use class::{Class, ExpectedOutput};
pub use echo::{EchoOptions, EchoServer};
pub use report::{code_name, LoadReport, Phase, Progress, ProgressSnapshot, Sample, MALFORMED};
pub use run::{run, Api, Load, LoadConfig, LoadRun};

#[cfg(test)]
mod tests;
