//! Waiting until an instant with microsecond precision, inside a tokio runtime.
//!
//! tokio's own timer ticks in milliseconds: an open-loop sender that slept on
//! it would send every arrival of a tick together, in a burst the schedule
//! never asked for. On Linux a `timerfd` (an hrtimer, armed without timer
//! slack) registered with the runtime's reactor wakes the runtime within a
//! few microseconds of the instant, and the thread sleeps in between. Gaps too
//! short to be worth a system call are waited out by yielding to the runtime,
//! which polls the network meanwhile. Elsewhere, the sender sleeps on tokio's
//! timer until shortly before the instant and yields for the rest (precise,
//! but it keeps the core busy).

use std::time::{Duration, Instant};

/// Gaps shorter than this are waited out by yielding, not by arming a timer:
/// about what arming and waking would cost.
const YIELD_BELOW: Duration = Duration::from_micros(20);

/// A precise sleeper for one task; see the module docs.
#[derive(Debug)]
pub(super) struct Timer {
    #[cfg(target_os = "linux")]
    fd: Option<linux::TimerFd>,
}

impl Timer {
    /// A timer on the current runtime (falls back to yielding if the
    /// system refuses a timerfd).
    pub(super) fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            fd: linux::TimerFd::new().ok(),
        }
    }

    /// Returns at `at` or within microseconds after it.
    pub(super) async fn sleep_until(&self, at: Instant) {
        loop {
            let now = Instant::now();
            if now >= at {
                return;
            }
            let left = at - now;
            if left < YIELD_BELOW {
                tokio::task::yield_now().await;
                continue;
            }
            #[cfg(target_os = "linux")]
            if let Some(fd) = &self.fd {
                if fd.sleep(left).await.is_ok() {
                    continue;
                }
            }
            coarse(at, left).await;
        }
    }
}

/// tokio's timer until a little more than one tick before `at`, then yields.
async fn coarse(at: Instant, left: Duration) {
    const MARGIN: Duration = Duration::from_micros(1500);
    if left > 2 * MARGIN {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at - MARGIN)).await;
    } else {
        tokio::task::yield_now().await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A non-blocking CLOCK_MONOTONIC timerfd registered with the reactor.
    #[derive(Debug)]
    pub(super) struct TimerFd {
        fd: AsyncFd<OwnedFd>,
    }

    impl TimerFd {
        pub(super) fn new() -> io::Result<Self> {
            // SAFETY: timerfd_create has no memory arguments; the result is
            // checked before use.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a file descriptor we just opened and own alone.
            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the `OwnedFd` keeps the descriptor open, and the same,
            // for as long as the `AsyncFd` that owns it lives.
            let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
            Ok(Self { fd })
        }

        /// Sleeps for `wait` (> 0) on the timer.
        pub(super) async fn sleep(&self, wait: Duration) -> io::Result<()> {
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
                    // A zero value would disarm the timer instead of firing it.
                    tv_nsec: libc::c_long::from(wait.subsec_nanos().max(1)),
                },
            };
            // SAFETY: the fd is a timerfd we own; `spec` outlives the call and
            // the old value is not asked for (null).
            let armed = unsafe {
                libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            if armed < 0 {
                return Err(io::Error::last_os_error());
            }
            loop {
                let mut ready = self.fd.readable().await?;
                let read = ready.try_io(|fd| {
                    let mut expirations = 0u64;
                    // SAFETY: reads 8 bytes into a u64 that lives across the call.
                    let n = unsafe {
                        libc::read(
                            fd.as_raw_fd(),
                            std::ptr::addr_of_mut!(expirations).cast(),
                            std::mem::size_of::<u64>(),
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                });
                match read {
                    Ok(result) => return result,
                    // Not expired yet: the readiness was stale; wait again.
                    Err(_would_block) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_instant_not_a_tick_later() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let late: Vec<Duration> = runtime.block_on(async {
            let timer = Timer::new();
            let mut late = Vec::new();
            for i in 0..200u64 {
                let at = Instant::now() + Duration::from_micros(100 + 37 * (i % 10));
                timer.sleep_until(at).await;
                late.push(Instant::now() - at);
            }
            late
        });
        let mut sorted = late.clone();
        sorted.sort();
        // Never early; the median well under tokio's millisecond tick (a
        // loaded machine can delay any wake-up, so not every one).
        assert!(late.iter().all(|l| *l < Duration::from_secs(1)));
        assert!(
            sorted[sorted.len() / 2] < Duration::from_micros(500),
            "median lateness {:?}",
            sorted[sorted.len() / 2]
        );
    }
}
