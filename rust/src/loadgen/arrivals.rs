//! Open-loop arrival processes: when each request is meant to be sent.
//!
//! A [`Schedule`] yields intended send times as offsets from the start of the
//! run, in order, lazily (a long run at a high rate never holds them all).
//! The process is fixed by its seed, so two runs with the same seed offer
//! exactly the same load.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Exp1;

/// How requests arrive in open loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    /// Poisson arrivals at `rate` per second (exponential gaps).
    Poisson { rate: f64 },
    /// Evenly spaced arrivals at `rate` per second: the best case, to set
    /// beside Poisson (same mean, a much kinder tail).
    Uniform { rate: f64 },
    /// Bursts: Poisson at `on_rate` for `on`, then at `off_rate` (may be 0)
    /// for `off`, repeated. The run starts with an on phase.
    OnOff {
        on_rate: f64,
        off_rate: f64,
        on: Duration,
        off: Duration,
    },
    /// Recorded arrival times, offsets from the start of the run, ascending;
    /// played once.
    Trace { offsets: Vec<Duration> },
}

impl Arrivals {
    /// Mean arrival rate per second over a long run (a trace: over its span).
    pub fn mean_rate(&self) -> f64 {
        match self {
            Self::Poisson { rate } | Self::Uniform { rate } => *rate,
            Self::OnOff {
                on_rate,
                off_rate,
                on,
                off,
            } => {
                let period = (*on + *off).as_secs_f64();
                if period > 0.0 {
                    (on_rate * on.as_secs_f64() + off_rate * off.as_secs_f64()) / period
                } else {
                    0.0
                }
            }
            Self::Trace { offsets } => match (offsets.first(), offsets.last()) {
                (Some(first), Some(last)) if last > first => {
                    (offsets.len() - 1) as f64 / (*last - *first).as_secs_f64()
                }
                _ => 0.0,
            },
        }
    }

    /// Checks the parameters; the message names the offending value.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, rate: f64| {
            if rate.is_finite() && rate > 0.0 {
                Ok(())
            } else {
                Err(format!("`{name}` must be a positive number, got `{rate}`"))
            }
        };
        match self {
            Self::Poisson { rate } | Self::Uniform { rate } => positive("rate", *rate),
            Self::OnOff {
                on_rate,
                off_rate,
                on,
                ..
            } => {
                positive("rate", *on_rate)?;
                if !(off_rate.is_finite() && *off_rate >= 0.0) {
                    return Err(format!(
                        "`off_rate` must be zero or a positive number, got `{off_rate}`"
                    ));
                }
                if on.is_zero() {
                    return Err("the on phase of a burst must last longer than 0 s".into());
                }
                Ok(())
            }
            Self::Trace { offsets } => {
                if offsets.is_empty() {
                    return Err("the arrival trace is empty".into());
                }
                if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
                    return Err(format!(
                        "the arrival trace must be sorted; entry {} ({:?}) comes before {:?}",
                        i + 1,
                        offsets[i + 1],
                        offsets[i]
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The intended send times of one run, as offsets from its start.
#[derive(Debug)]
pub struct Schedule {
    arrivals: Arrivals,
    rng: StdRng,
    /// Seconds from the start; the last arrival handed out (or 0 before the first).
    now: f64,
    /// Arrivals handed out so far.
    count: u64,
    /// On/off only: whether `now` is in an on phase, and when that phase ends.
    in_on: bool,
    phase_end: f64,
}

impl Schedule {
    pub fn new(arrivals: Arrivals, seed: u64) -> Self {
        Self {
            arrivals,
            rng: StdRng::seed_from_u64(seed),
            now: 0.0,
            count: 0,
            in_on: true,
            phase_end: 0.0,
        }
    }

    /// An exponential gap at `rate`; the inverse transform of a uniform is
    /// what `Exp1` does, without a per-rate distribution object.
    fn gap(&mut self, rate: f64) -> f64 {
        let unit: f64 = self.rng.sample(Exp1);
        unit / rate
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let at = match &self.arrivals {
            Arrivals::Poisson { rate } => {
                let rate = *rate;
                // The first arrival is at 0 so a run starts loaded at once.
                if self.count > 0 {
                    self.now += self.gap(rate);
                }
                self.now
            }
            Arrivals::Uniform { rate } => self.count as f64 / rate,
            Arrivals::OnOff {
                on_rate,
                off_rate,
                on,
                off,
            } => {
                let (on_rate, off_rate) = (*on_rate, *off_rate);
                let (on, off) = (on.as_secs_f64(), off.as_secs_f64());
                // Piecewise-constant rate: draw a gap at the current phase's
                // rate; if it crosses the phase's end, restart from that end
                // at the next phase's rate. Exponential gaps are memoryless,
                // so this is exact. The first arrival is at 0, in an on phase.
                if self.count > 0 {
                    let mut t = self.now;
                    loop {
                        let rate = if self.in_on { on_rate } else { off_rate };
                        if rate > 0.0 {
                            let next = t + self.gap(rate);
                            if next < self.phase_end {
                                t = next;
                                break;
                            }
                        }
                        t = self.phase_end;
                        self.in_on = !self.in_on;
                        self.phase_end += if self.in_on { on } else { off };
                    }
                    self.now = t;
                } else {
                    self.in_on = true;
                    self.phase_end = on;
                }
                self.now
            }
            Arrivals::Trace { offsets } => {
                let at = offsets.get(usize::try_from(self.count).ok()?)?;
                self.count += 1;
                return Some(*at);
            }
        };
        self.count += 1;
        Some(Duration::from_secs_f64(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_until(arrivals: Arrivals, seconds: f64, seed: u64) -> Vec<f64> {
        Schedule::new(arrivals, seed)
            .map(|d| d.as_secs_f64())
            .take_while(|&t| t < seconds)
            .collect()
    }

    #[test]
    fn poisson_mean_rate_and_exponential_gaps() {
        let times = take_until(Arrivals::Poisson { rate: 5000.0 }, 20.0, 1);
        let n = times.len() as f64;
        // 100,000 expected; the standard deviation is about 316.
        assert!((n - 100_000.0).abs() < 2_000.0, "{n} arrivals");
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // An exponential distribution has its standard deviation equal to its mean.
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.03, "coefficient of variation {cv}");
    }

    #[test]
    fn ordered_and_reproducible() {
        let a = take_until(Arrivals::Poisson { rate: 1000.0 }, 2.0, 7);
        let b = take_until(Arrivals::Poisson { rate: 1000.0 }, 2.0, 7);
        let c = take_until(Arrivals::Poisson { rate: 1000.0 }, 2.0, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn uniform_is_evenly_spaced() {
        let times = take_until(Arrivals::Uniform { rate: 400.0 }, 1.0, 0);
        assert_eq!(times.len(), 400);
        for (i, t) in times.iter().enumerate() {
            assert!((t - i as f64 / 400.0).abs() < 1e-9);
        }
    }

    #[test]
    fn on_off_phases() {
        let arrivals = Arrivals::OnOff {
            on_rate: 10_000.0,
            off_rate: 0.0,
            on: Duration::from_millis(100),
            off: Duration::from_millis(400),
        };
        assert!((arrivals.mean_rate() - 2_000.0).abs() < 1e-9);
        let times = take_until(arrivals, 10.0, 3);
        // Nothing in the off phases.
        assert!(times.iter().all(|t| t % 0.5 < 0.1));
        // 20 on phases of 1,000 expected arrivals each.
        let n = times.len() as f64;
        assert!((n - 20_000.0).abs() < 600.0, "{n} arrivals");
        // Every on phase got its share.
        for phase in 0..20 {
            let start = phase as f64 * 0.5;
            let count = times
                .iter()
                .filter(|&&t| t >= start && t < start + 0.1)
                .count();
            assert!((850..1150).contains(&count), "phase {phase}: {count}");
        }
    }

    #[test]
    fn on_off_with_a_background_rate() {
        let arrivals = Arrivals::OnOff {
            on_rate: 4_000.0,
            off_rate: 1_000.0,
            on: Duration::from_millis(250),
            off: Duration::from_millis(250),
        };
        let times = take_until(arrivals, 20.0, 5);
        let off = times.iter().filter(|&&t| t % 0.5 >= 0.25).count() as f64;
        let on = times.len() as f64 - off;
        // 40,000 and 10,000 expected.
        assert!((on - 40_000.0).abs() < 1_000.0, "{on}");
        assert!((off - 10_000.0).abs() < 500.0, "{off}");
    }

    #[test]
    fn trace_is_played_once() {
        let offsets: Vec<Duration> = [0.0, 0.5, 0.5, 2.0]
            .iter()
            .map(|&s| Duration::from_secs_f64(s))
            .collect();
        let arrivals = Arrivals::Trace {
            offsets: offsets.clone(),
        };
        assert!(arrivals.validate().is_ok());
        assert!((arrivals.mean_rate() - 1.5).abs() < 1e-9);
        assert_eq!(Schedule::new(arrivals, 0).collect::<Vec<_>>(), offsets);
    }

    #[test]
    fn validation_names_the_value() {
        let err = Arrivals::Poisson { rate: -1.0 }.validate().unwrap_err();
        assert!(err.contains("`-1`"), "{err}");
        let err = Arrivals::Trace {
            offsets: vec![Duration::from_secs(2), Duration::from_secs(1)],
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("sorted"), "{err}");
        assert!(Arrivals::Trace { offsets: vec![] }.validate().is_err());
    }
}
