//! The gRPC server: `inference.GRPCInferenceService` over the core,
//! `grpc.health.v1` and server reflection, on a tokio runtime.
//!
//! # Shutdown
//! [`RunningServer::shutdown`] stops accepting connections and lets calls in
//! flight finish; the models' queues are drained by their own shutdown.

mod arrival;
mod coalesce;
mod codec;
mod describe;
mod http2;
pub mod proto;
pub mod runtime;
mod service;
pub mod status;
pub mod trace_log;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::TryStreamExt;
use parking_lot::RwLock;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::registry::{Registry, RepositoryHooks};
use crate::served::ServedModel;

pub(crate) use arrival::{Arrivals, Stamped};
pub use service::STREAM_ERROR_CODE;

/// Settings of the gRPC server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Largest message received or sent.
    pub max_message_bytes: usize,
    /// Reported by ServerMetadata.
    pub name: String,
    pub version: String,
}

/// Everything the services share.
pub struct ServerState {
    pub registry: Registry,
    pub options: ServerOptions,
    ready: AtomicBool,
    repository: RwLock<Option<Arc<dyn RepositoryHooks>>>,
    health: HealthReporter,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("models", &self.registry.names())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

/// Health service name of the whole server and of the inference service.
const SERVICE_NAMES: [&str; 2] = ["", "inference.GRPCInferenceService"];

impl ServerState {
    /// Whether the server takes inference calls.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Sets readiness, reflected in ServerReady and the health service.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICE_NAMES {
            self.set_health(name, status);
        }
    }

    /// The health reporter's lock is runtime-agnostic, so it is updated in
    /// place: callers may be plain threads or blocking tasks of the runtime,
    /// where entering the runtime again is not allowed.
    fn set_health(&self, name: &str, status: ServingStatus) {
        futures::executor::block_on(self.health.set_service_status(name, status));
    }

    /// Installs the handler of the repository calls.
    pub fn set_repository(&self, hooks: Arc<dyn RepositoryHooks>) {
        *self.repository.write() = Some(hooks);
    }

    fn repository(&self) -> Option<Arc<dyn RepositoryHooks>> {
        self.repository.read().clone()
    }

    /// Serves `model`, announcing it to the health service; returns the
    /// model it replaced, for the caller to shut down.
    pub fn add_model(&self, model: ServedModel) -> Option<Arc<ServedModel>> {
        let name = model.spec.name.clone();
        let replaced = self.registry.insert(model);
        self.set_health(&name, ServingStatus::Serving);
        replaced
    }

    /// Stops routing to `name`; returns it for the caller to shut down.
    pub fn remove_model(&self, name: &str) -> Option<Arc<ServedModel>> {
        let removed = self.registry.remove(name);
        if removed.is_some() {
            self.set_health(name, ServingStatus::NotServing);
        }
        removed
    }
}

/// A server accepting calls on `port`.
#[derive(Debug)]
pub struct RunningServer {
    pub port: u16,
    pub state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Stops accepting calls and waits for those in flight to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Ok(Err(e)) = self.task.await {
            log::warn!("gRPC server ended with an error: {e}");
        }
    }

    /// Whether the serving task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Binds `options.host:options.port` and serves in a task of the current runtime.
pub async fn start(options: ServerOptions) -> std::io::Result<RunningServer> {
    let addr: SocketAddr = format!("{}:{}", options.host, options.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(options.host.as_str(), options.port))?
                .next()
                .ok_or_else(|| {
                    std::io::Error::other(format!("`{}` does not resolve", options.host))
                })
        })?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port();
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    // Both reflection versions: grpcurl speaks v1, many clients still v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let limit = options.max_message_bytes;
    let state = Arc::new(ServerState {
        registry: Registry::default(),
        options,
        ready: AtomicBool::new(false),
        repository: RwLock::new(None),
        health,
    });
    let inference = proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        service::InferenceService::new(Arc::clone(&state)),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .initial_connection_window_size(http2::CONNECTION_WINDOW)
        .max_concurrent_streams(http2::MAX_STREAMS)
        .layer(tower::util::MapResponseLayer::new(
            status::remap_message_size::<tonic::body::Body>,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference);
    // Small answers must not wait for Nagle's algorithm and the peer's
    // delayed ACK; they wait instead for the others the connection has ready.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map_ok(|stream| coalesce::Coalesced::new(arrival::Stamped::new(stream)));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        port,
        state,
        stop: Some(stop),
        task,
    })
}
