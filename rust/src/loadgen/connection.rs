//! The generator's connections to the server under test.
//!
//! Each connection reads through the server's stamping reader
//! ([`crate::server::Stamped`]), so that the generator knows when an answer's
//! bytes reached its socket, not only when it got round to them. On one core
//! shared by the sender and every call, a burst of answers waits there while
//! the generator is busy: that wait is the generator's own, on the way back,
//! as the send lag is on the way out, and a latency that includes it says
//! nothing about the server until it is split off.

use std::io;
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::server::{Arrivals, Stamped};

pub(super) type Client = GrpcInferenceServiceClient<Channel>;

/// One HTTP/2 connection: the client that calls over it, and when the bytes
/// of its latest read arrived.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) client: Client,
    arrivals: Arrivals,
}

impl Connection {
    /// Connects to `target` (`host:port`).
    pub(super) async fn open(target: &str) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| format!("invalid target `{target}`: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            // An open loop must never wait for room in the channel's buffer.
            .buffer_size(1 << 16);
        let arrivals = Arrivals::new(Instant::now());
        let cell = arrivals.clone();
        let connector = tower::service_fn(move |uri: Uri| {
            let cell = cell.clone();
            async move {
                let authority = uri.authority().map(|a| a.as_str().to_owned());
                let authority = authority.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("no host in `{uri}`"))
                })?;
                let stream = TcpStream::connect(authority).await?;
                stream.set_nodelay(true)?;
                Ok::<_, io::Error>(TokioIo::new(Stamped::recording(stream, cell)))
            }
        });
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("cannot connect to `{target}`: {e}"))?;
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Self { client, arrivals })
    }

    /// When the bytes of this connection's latest read reached its socket.
    /// Taken as an answer is recorded, it is no earlier than the answer's
    /// own last bytes (they were read before it), so the wait it gives is
    /// never overstated.
    pub(super) fn received(&self) -> Instant {
        self.arrivals.latest()
    }
}
