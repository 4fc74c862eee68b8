//! A KServe v2 server that answers at once: every ModelInfer gets its first
//! input back as the output `y`, without queueing or computing anything.
//!
//! It measures the load generator, not a server: against it, what limits the
//! rate is the generator (and the gRPC stack both share). It serves one model,
//! described by ModelMetadata and ModelConfig so `tidal bench` can build
//! requests for it like for any other, and counts calls for ModelStatistics.
//!
//! # Shutdown
//! [`EchoServer::stop`] ends the server's runtime; calls in flight are dropped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::server::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::server::proto::model_infer_response::InferOutputTensor;
use crate::server::proto::model_metadata_response::TensorMetadata;
use crate::server::proto::{
    DataType as ConfigDataType, ModelConfig, ModelConfigRequest, ModelConfigResponse,
    ModelInferRequest, ModelInferResponse, ModelInput, ModelMetadataRequest, ModelMetadataResponse,
    ModelOutput, ModelReadyRequest, ModelReadyResponse, ModelStatistics, ModelStatisticsRequest,
    ModelStatisticsResponse, ModelStreamInferResponse, RepositoryIndexRequest,
    RepositoryIndexResponse, RepositoryModelLoadRequest, RepositoryModelLoadResponse,
    RepositoryModelUnloadRequest, RepositoryModelUnloadResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use crate::tensor::DataType;

/// What the echo server serves.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Worker threads of the server's runtime.
    pub threads: usize,
    /// Name of the one model.
    pub model: String,
    /// Its input `x` and output `y`: datatype and shape (without the batch
    /// dimension when `max_batch_size > 0`).
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub max_batch_size: u32,
    /// Every n-th call fails with UNAVAILABLE (0: none), to check how
    /// failures are counted.
    pub fail_every: u64,
}

impl Default for EchoOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            threads: 1,
            model: "echo".into(),
            datatype: DataType::Fp32,
            shape: vec![16],
            max_batch_size: 0,
            fail_every: 0,
        }
    }
}

/// A running echo server.
#[derive(Debug)]
pub struct EchoServer {
    pub port: u16,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Every ModelInfer call and stream request.
    calls: AtomicU64,
    /// Those answered with an echo, and the rows they carried.
    executions: AtomicU64,
    samples: AtomicU64,
}

impl EchoServer {
    /// Binds and serves on a runtime of its own.
    pub fn start(options: EchoOptions) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("tidal-echo")
            .enable_all()
            .build()?;
        let addr: SocketAddr = format!("{}:{}", options.host, options.port)
            .parse()
            .map_err(|e| std::io::Error::other(format!("`{}`: {e}", options.host)))?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let service = Echo {
            options: Arc::new(options),
            counters: Arc::clone(&counters),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(
                    GrpcInferenceServiceServer::new(service)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX),
                )
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(Self {
            port,
            counters,
            stop: Some(stop),
            runtime: Some(runtime),
        })
    }

    /// ModelInfer calls and stream requests answered so far.
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Stops serving; calls in flight are dropped.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
struct Echo {
    options: Arc<EchoOptions>,
    counters: Arc<Counters>,
}

impl Echo {
    fn answer(&self, request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let n = self.counters.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.options.fail_every > 0 && n % self.options.fail_every == 0 {
            return Err(Status::unavailable(format!("call {n} refused on purpose")));
        }
        if request.model_name != self.options.model {
            return Err(Status::not_found(format!(
                "model `{}` is not served; this echo server serves `{}`",
                request.model_name, self.options.model
            )));
        }
        let Some(input) = request.inputs.into_iter().next() else {
            return Err(Status::invalid_argument("the request has no input"));
        };
        let rows = if self.options.max_batch_size > 0 {
            input.shape.first().copied().unwrap_or(1).max(0) as u64
        } else {
            1
        };
        self.counters.executions.fetch_add(1, Ordering::Relaxed);
        self.counters.samples.fetch_add(rows, Ordering::Relaxed);
        // Raw contents are `Bytes`: the echo is a reference count, not a copy.
        let raw = request.raw_input_contents.into_iter().next();
        Ok(ModelInferResponse {
            model_name: request.model_name,
            model_version: "1".into(),
            id: request.id,
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                datatype: input.datatype,
                shape: input.shape,
                contents: input.contents,
                ..Default::default()
            }],
            raw_output_contents: raw.into_iter().collect(),
            ..Default::default()
        })
    }

    fn tensor(&self, name: &str) -> TensorMetadata {
        let mut shape = self.options.shape.clone();
        if self.options.max_batch_size > 0 {
            shape.insert(0, -1);
        }
        TensorMetadata {
            name: name.into(),
            datatype: self.options.datatype.as_str().into(),
            shape,
        }
    }

    fn check_model(&self, name: &str) -> Result<(), Status> {
        if name == self.options.model {
            Ok(())
        } else {
            Err(Status::not_found(format!("model `{name}` is not served")))
        }
    }
}

/// The model configuration's name for `datatype` (`TYPE_FP32`, ...).
fn config_datatype(datatype: DataType) -> ConfigDataType {
    match datatype {
        DataType::Bool => ConfigDataType::TypeBool,
        DataType::Uint8 => ConfigDataType::TypeUint8,
        DataType::Uint16 => ConfigDataType::TypeUint16,
        DataType::Uint32 => ConfigDataType::TypeUint32,
        DataType::Uint64 => ConfigDataType::TypeUint64,
        DataType::Int8 => ConfigDataType::TypeInt8,
        DataType::Int16 => ConfigDataType::TypeInt16,
        DataType::Int32 => ConfigDataType::TypeInt32,
        DataType::Int64 => ConfigDataType::TypeInt64,
        DataType::Fp16 => ConfigDataType::TypeFp16,
        DataType::Fp32 => ConfigDataType::TypeFp32,
        DataType::Fp64 => ConfigDataType::TypeFp64,
        DataType::Bf16 => ConfigDataType::TypeBf16,
        DataType::Bytes => ConfigDataType::TypeString,
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Echo {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let ready = request.into_inner().name == self.options.model;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "tidal-echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_configuration".into(), "statistics".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.check_model(&request.into_inner().name)?;
        Ok(Response::new(ModelMetadataResponse {
            name: self.options.model.clone(),
            versions: vec!["1".into()],
            platform: "echo".into(),
            inputs: vec![self.tensor("x")],
            outputs: vec![self.tensor("y")],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.answer(request.into_inner()).map(Response::new)
    }

    type ModelStreamInferStream = AnswerStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let echo = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(request)) = inbound.next().await {
                let id = request.id.clone();
                let message = match echo.answer(request) {
                    Ok(response) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Err(status) => ModelStreamInferResponse {
                        error_message: status.message().into(),
                        infer_response: Some(ModelInferResponse {
                            id,
                            ..Default::default()
                        }),
                    },
                };
                if tx.send(Ok(message)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        self.check_model(&request.into_inner().name)?;
        let data_type = config_datatype(self.options.datatype) as i32;
        Ok(Response::new(ModelConfigResponse {
            config: Some(ModelConfig {
                name: self.options.model.clone(),
                platform: "echo".into(),
                max_batch_size: i32::try_from(self.options.max_batch_size).unwrap_or(i32::MAX),
                input: vec![ModelInput {
                    name: "x".into(),
                    data_type,
                    dims: self.options.shape.clone(),
                }],
                output: vec![ModelOutput {
                    name: "y".into(),
                    data_type,
                    dims: self.options.shape.clone(),
                }],
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let name = request.into_inner().name;
        if !name.is_empty() {
            self.check_model(&name)?;
        }
        // Every call is its own batch: the mean batch size is the rows per request.
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: vec![ModelStatistics {
                name: self.options.model.clone(),
                version: "1".into(),
                inference_count: self.counters.samples.load(Ordering::Relaxed),
                execution_count: self.counters.executions.load(Ordering::Relaxed),
                ..Default::default()
            }],
        }))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Err(Status::unimplemented("the echo server has no repository"))
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented("the echo server has no repository"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented("the echo server has no repository"))
    }
}
