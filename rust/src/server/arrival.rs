//! When a request reached the server: the kernel's receive time of the bytes
//! that carried it, not the moment the network thread got round to reading
//! them.
//!
//! Where the network thread shares a core with a running batch, or falls
//! behind in a burst, requests wait in their sockets before anything in the
//! server sees them. That wait is part of what the client measures, but a
//! clock started at the read leaves it out: admission would admit a request
//! that has already spent most of its objective unread, the objective's
//! deadline would be set from the read, and the statistics would show a
//! server inside its objective while its clients saw it miss. So every
//! accepted socket asks the kernel to stamp what it receives
//! (`SO_TIMESTAMPNS`), each read takes the stamp with the bytes (`recvmsg`),
//! and a request's arrival is the stamp of the read that completed it.
//!
//! TCP reports the stamp of the last segment a read returns, so a read that
//! drains a backlog dates every request in it by its newest bytes: the wait
//! is never overstated, only understated. Reading a backlog in smaller
//! pieces would not narrow it: while a socket goes unread, the kernel merges
//! each arriving segment into the one queued before it and the merged
//! buffer takes the newer stamp, so every byte of the backlog carries the
//! time of its newest segment, however it is read (three 100-byte messages
//! sent 30 ms apart, read one at a time, all came stamped with the third's
//! time). A request that waited in its socket while the server's core was
//! stalled is therefore dated no earlier than the end of that backlog: the
//! server cannot see the part of the stall that came before (a server
//! frozen for 30 ms every 300 ms under 2,000 mlp requests/s answered 489
//! requests more than 20 ms after they were sent, inside their objective by
//! its own clock). A stamp
//! that puts the bytes in the future or more than [`MAX_WAIT`] ago can only
//! be a step of the system clock, and the read's own time stands instead, as
//! it does for a read without a stamp: the kernel turns stamping on a moment
//! after the first socket of the host asks for it, so the first bytes a
//! fresh server receives may come without one.
//!
//! The load generator reads its answers through the same reader, so that it
//! can tell how long an answer waited in its own socket: the generator's
//! delay on the way back, as the send lag is on the way out.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

/// Longest wait in a socket taken from a stamp; beyond it, a clock step.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The process's reference point for arrivals kept as integers: far enough
/// back that every arrival taken from a stamp comes after it.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(MAX_WAIT).unwrap_or(now)
    })
}

/// When the bytes of a connection's latest read arrived, shared by the
/// connection and the calls it carries (tonic hands it to each call as the
/// connection's `ConnectInfo`).
#[derive(Debug, Clone)]
pub(crate) struct Arrivals(Arc<AtomicU64>);

impl Arrivals {
    /// A cell whose latest arrival is `now` until a read records one.
    pub(crate) fn new(now: Instant) -> Self {
        let arrivals = Self(Arc::new(AtomicU64::new(0)));
        arrivals.record(now);
        arrivals
    }

    fn record(&self, arrival: Instant) {
        let nanos = arrival.saturating_duration_since(base()).as_nanos();
        self.0
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the bytes of the connection's latest read arrived: for a call,
    /// no earlier than its own last bytes, since they were read before it.
    pub(crate) fn latest(&self) -> Instant {
        base() + Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// When bytes that the kernel stamped `stamp` arrived, read at `now`.
fn arrival(stamp: Option<SystemTime>, now: Instant) -> Instant {
    let waited = stamp
        .and_then(|stamp| SystemTime::now().duration_since(stamp).ok())
        .filter(|waited| *waited <= MAX_WAIT)
        .unwrap_or_default();
    now.checked_sub(waited).unwrap_or(now)
}

/// An accepted connection whose reads record when their bytes arrived.
#[derive(Debug)]
pub(crate) struct Stamped {
    stream: TcpStream,
    arrivals: Arrivals,
    /// Room for one read's control message (its timestamp).
    #[cfg(target_os = "linux")]
    control: Vec<u8>,
}

impl Stamped {
    /// Wraps `stream`, asking the kernel to stamp what it receives; without
    /// stamps (refused, or not Linux) a read dates its bytes by itself.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self::recording(stream, Arrivals::new(Instant::now()))
    }

    /// As [`Stamped::new`], recording into `arrivals`: a client that
    /// reconnects keeps one cell for all its connections.
    pub(crate) fn recording(stream: TcpStream, arrivals: Arrivals) -> Self {
        #[cfg(target_os = "linux")]
        if let Err(e) = nix::sys::socket::setsockopt(
            &stream,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        ) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                log::warn!(
                    "sockets give no receive times ({e}): a request's time unread in its \
                     socket is not counted against its deadline"
                );
            });
        }
        Self {
            stream,
            arrivals,
            #[cfg(target_os = "linux")]
            control: nix::cmsg_space!(nix::sys::time::TimeSpec),
        }
    }
}

/// One `recvmsg` into `buf`: the bytes read and the kernel's stamp of the
/// last of them.
#[cfg(target_os = "linux")]
fn receive(
    stream: &TcpStream,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;

    let mut iov = [io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let stamp = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let since_epoch = Duration::new(
                    u64::try_from(ts.tv_sec()).ok()?,
                    u32::try_from(ts.tv_nsec()).ok()?,
                );
                SystemTime::UNIX_EPOCH.checked_add(since_epoch)
            }
            _ => None,
        })
    });
    Ok((message.bytes, stamp))
}

impl AsyncRead for Stamped {
    #[cfg(target_os = "linux")]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = this.stream.try_io(tokio::io::Interest::READABLE, || {
                receive(&this.stream, unfilled, &mut this.control)
            });
            match read {
                Ok((n, stamp)) => {
                    if n > 0 {
                        this.arrivals.record(arrival(stamp, Instant::now()));
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.arrivals.record(Instant::now());
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Stamped {
    type ConnectInfo = Arrivals;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.arrivals.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A connected pair on 127.0.0.1: the client's end, and the server's
    /// end wrapped.
    async fn pair() -> (TcpStream, Stamped) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Stamped::new(server))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bytes_left_unread_are_dated_when_they_arrived_not_when_read() {
        block_on(async {
            let (mut client, mut server) = pair().await;
            let info = server.connect_info();
            let mut buf = [0u8; 64];
            // The kernel turns receive stamps on a moment after the first
            // socket asks for them (a deferred switch), so the first reads
            // of a fresh process may come without one: try a few times.
            let mut dated = Vec::new();
            for _ in 0..50 {
                client.write_all(b"request").await.unwrap();
                let sent = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let n = server.read(&mut buf).await.unwrap();
                let read = Instant::now();
                assert_eq!(&buf[..n], b"request");
                let arrived = info.latest();
                dated.push(read - arrived);
                if read - arrived >= Duration::from_millis(18) {
                    assert!(
                        arrived <= sent + Duration::from_millis(2),
                        "dated after it was sent"
                    );
                    return;
                }
            }
            panic!("never dated by its arrival after a 20 ms wait: {dated:?} before the reads");
        });
    }

    #[test]
    fn each_read_dates_the_connection_by_its_own_bytes() {
        block_on(async {
            let (mut client, mut server) = pair().await;
            let info = server.connect_info();
            let mut buf = [0u8; 64];
            client.write_all(b"first").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 5);
            let first = info.latest();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before_second = Instant::now();
            client.write_all(b"second").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 6);
            assert_eq!(&buf[..6], b"second");
            let second = info.latest();
            assert!(
                second >= before_second,
                "the second read kept the first's time"
            );
            assert!(second - first >= Duration::from_millis(15));
        });
    }

    #[test]
    fn writes_and_the_end_of_the_stream_pass_through() {
        block_on(async {
            let (mut client, mut server) = pair().await;
            server.write_all(b"answer").await.unwrap();
            server.flush().await.unwrap();
            let mut buf = [0u8; 6];
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"answer");
            drop(client);
            let mut rest = Vec::new();
            assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        });
    }

    #[test]
    fn a_stamp_out_of_reach_is_a_clock_step_and_the_read_stands() {
        let now = Instant::now() + Duration::from_secs(3600);
        let future = SystemTime::now() + Duration::from_secs(10);
        let long_ago = SystemTime::now() - 2 * MAX_WAIT;
        assert_eq!(arrival(Some(future), now), now);
        assert_eq!(arrival(Some(long_ago), now), now);
        assert_eq!(arrival(None, now), now);
        let waited = arrival(Some(SystemTime::now() - Duration::from_secs(1)), now);
        let gap = now - waited;
        assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100));
    }
}
