//! A connection's small writes gathered into one system call.
//!
//! h2 copies a frame into its write buffer only while the frame's payload is
//! small: up to 256 bytes on a socket that takes vectored writes, up to
//! 1 KiB on one that does not. A larger payload is held apart and the buffer
//! is written out before the next frame is taken, so every response of a few
//! hundred bytes cost a write of its own (and, on loopback, the peer's
//! receive path too, on the server's core), however many responses the
//! connection had ready. Presented as a plain writer, a connection has h2
//! gather every frame up to 1 KiB, so the responses a connection has ready
//! leave together; and what h2 then writes in two pieces (its buffer, then a
//! larger payload) leaves here in one vectored write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes held back for the next write: h2's own buffer (16 KiB) fits.
const GATHER_BYTES: usize = 16 * 1024;

/// `inner` with small writes held back until a flush or a larger write.
#[derive(Debug)]
pub(super) struct Coalesced<S> {
    inner: S,
    pending: BytesMut,
}

impl<S> Coalesced<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything held back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() + buf.len() <= GATHER_BYTES {
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Too much to hold: what is held back leaves with `buf`, in order.
        while !this.pending.is_empty() {
            let pieces = [IoSlice::new(&this.pending), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &pieces))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > this.pending.len() {
                let taken = n - this.pending.len();
                this.pending.clear();
                return Poll::Ready(Ok(taken));
            }
            this.pending.advance(n);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    /// False, so that h2 copies frames up to 1 KiB into its buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<S: Connected> Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records every write it is given; takes at most `limit` bytes a call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: Option<usize>,
    }

    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.limit.map_or(buf.len(), |l| l.min(buf.len()));
            self.get_mut().writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = self.limit.map_or(all.len(), |l| l.min(all.len()));
            self.get_mut().writes.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn small_writes_leave_together_at_the_flush() {
        let mut io = Coalesced::new(Recorder::default());
        block_on(async {
            for frame in [&b"headers"[..], b"data", b"trailers"] {
                io.write_all(frame).await.unwrap();
            }
            assert!(
                io.inner.writes.is_empty(),
                "nothing leaves before the flush"
            );
            io.flush().await.unwrap();
        });
        assert_eq!(io.inner.writes, [b"headersdatatrailers".to_vec()]);
    }

    #[test]
    fn a_large_write_takes_what_is_held_back_with_it_in_order() {
        let large = vec![7u8; GATHER_BYTES + 1];
        let mut io = Coalesced::new(Recorder::default());
        block_on(async {
            io.write_all(b"head").await.unwrap();
            io.write_all(&large).await.unwrap();
            io.flush().await.unwrap();
        });
        assert_eq!(io.inner.writes.len(), 1, "one vectored write");
        assert_eq!(io.inner.bytes(), [&b"head"[..], &large].concat());
    }

    #[test]
    fn every_byte_arrives_in_order_through_short_writes() {
        let large: Vec<u8> = (0..GATHER_BYTES + 100).map(|i| i as u8).collect();
        let mut io = Coalesced::new(Recorder {
            limit: Some(3),
            ..Recorder::default()
        });
        block_on(async {
            io.write_all(b"ab").await.unwrap();
            io.write_all(&large).await.unwrap();
            io.write_all(b"tail").await.unwrap();
            io.shutdown().await.unwrap();
        });
        assert_eq!(io.inner.bytes(), [&b"ab"[..], &large, b"tail"].concat());
    }

    #[test]
    fn it_asks_h2_for_plain_writes() {
        assert!(!Coalesced::new(Recorder::default()).is_write_vectored());
    }
}
