//! `inference.GRPCInferenceService`: each call adapted to the core.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::arrival::Arrivals;
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::{
    infer_parameter::ParameterChoice, repository_index_response::ModelIndex, InferParameter,
    ModelConfigRequest, ModelConfigResponse, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse,
    ModelStatisticsRequest, ModelStatisticsResponse, ModelStreamInferResponse,
    RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse,
    ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use super::status::{is_message_too_large, to_status};
use super::{codec, describe, ServerState};
use crate::error::CoreError;
use crate::registry::RepositoryHooks;
use crate::served::{Answer, ServedModel};
use crate::validate::build_request;

/// Streamed answers waiting to be written, per stream.
const STREAM_BUFFER: usize = 1024;

/// The response parameter that carries a streamed error's gRPC status code
/// (an INT64: 14 for `UNAVAILABLE`, 4 for `DEADLINE_EXCEEDED`, ...).
pub const STREAM_ERROR_CODE: &str = "grpc_status_code";

#[derive(Debug, Clone)]
pub(super) struct InferenceService {
    state: Arc<ServerState>,
}

impl InferenceService {
    pub(super) fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// Decodes, validates and admits one request that arrived at `arrival`.
    fn submit(
        &self,
        request: ModelInferRequest,
        arrival: Instant,
        client_deadline: Option<Instant>,
    ) -> Result<(Arc<ServedModel>, String, Answer), CoreError> {
        let model = self
            .state
            .registry
            .get(&request.model_name, &request.model_version)?;
        let (id, request) = codec::decode_request(request, client_deadline)
            .and_then(|(inputs, options)| {
                let id = options.id.clone();
                let request = build_request(&model.spec, inputs, options, arrival)?;
                Ok((id, request))
            })
            .inspect_err(|_| model.stats.invalid())?;
        let answer = model.submit(request)?;
        Ok((model, id, answer))
    }

    async fn infer(
        &self,
        request: ModelInferRequest,
        arrival: Instant,
        client_deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, CoreError> {
        let (model, id, answer) = self.submit(request, arrival, client_deadline)?;
        finish(&model, id, answer).await
    }

    fn repository(&self) -> Result<Arc<dyn RepositoryHooks>, Status> {
        self.state
            .repository()
            .ok_or_else(|| Status::unimplemented("this server has no model repository"))
    }
}

/// Waits for a request's answer and encodes it.
async fn finish(
    model: &ServedModel,
    id: String,
    answer: Answer,
) -> Result<ModelInferResponse, CoreError> {
    let answer = answer.await.map_err(|_| CoreError::Unavailable {
        model: model.spec.name.clone(),
        reason: "it was unloaded before the request was answered".into(),
    })??;
    Ok(codec::encode_response(&model.spec, id, answer))
}

/// The call's `grpc-timeout`, counted from `start`.
fn client_deadline<T>(request: &Request<T>, start: Instant) -> Option<Instant> {
    let header = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    codec::grpc_timeout(header).map(|timeout| start + timeout)
}

/// The connection's record of when its bytes arrived; none where the call
/// came some other way than an accepted TCP connection.
fn arrivals<T>(request: &Request<T>) -> Option<&Arrivals> {
    request.extensions().get::<Arrivals>()
}

/// When a call's latest message arrived (see `arrival`): the start of its
/// deadline and of its time in the server.
fn arrived(arrivals: Option<&Arrivals>) -> Instant {
    arrivals.map_or_else(Instant::now, Arrivals::latest)
}

/// Runs a blocking repository hook off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| to_status(&e)),
        Err(e) => Err(Status::internal(format!("repository call failed: {e}"))),
    }
}

/// A request's error on a stream. The protocol carries only a message there;
/// the code the same error has on a unary call goes with it as the response
/// parameter [`STREAM_ERROR_CODE`], so that a client can tell a retryable
/// refusal (`UNAVAILABLE`) from its own expired deadline or a bad request.
fn stream_error(id: String, status: &Status) -> ModelStreamInferResponse {
    let code = InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(i64::from(status.code() as i32))),
    };
    ModelStreamInferResponse {
        error_message: status.message().into(),
        infer_response: Some(ModelInferResponse {
            id,
            parameters: [(STREAM_ERROR_CODE.to_owned(), code)].into(),
            ..ModelInferResponse::default()
        }),
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
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
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.state.registry.get(&r.name, &r.version).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let options = &self.state.options;
        Ok(Response::new(ServerMetadataResponse {
            name: options.name.clone(),
            version: options.version.clone(),
            extensions: [
                "model_configuration",
                "model_repository",
                "statistics",
                "schedule_policy",
            ]
            .map(String::from)
            .to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let model = self.state.registry.get(&r.name, &r.version)?;
        Ok(Response::new(describe::metadata(&model.spec)))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let arrival = arrived(arrivals(&request));
        let deadline = client_deadline(&request, arrival);
        let response = self.infer(request.into_inner(), arrival, deadline).await?;
        Ok(Response::new(response))
    }

    type ModelStreamInferStream = AnswerStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        // The call's deadline runs from its start; each message's objective
        // from when that message arrived.
        let arrivals = arrivals(&request).cloned();
        let deadline = client_deadline(&request, arrived(arrivals.as_ref()));
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let request = match message {
                    Ok(request) => request,
                    Err(status) => {
                        let status = if is_message_too_large(&status) {
                            Status::resource_exhausted(status.message().to_string())
                        } else {
                            status
                        };
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let id = request.id.clone();
                match service.submit(request, arrived(arrivals.as_ref()), deadline) {
                    Ok((model, id, answer)) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            // A client gone from the stream drops the wait, and
                            // so cancels the request if it is still queued.
                            tokio::select! {
                                result = finish(&model, id.clone(), answer) => {
                                    let message = match result {
                                        Ok(response) => ModelStreamInferResponse {
                                            error_message: String::new(),
                                            infer_response: Some(response),
                                        },
                                        Err(e) => stream_error(id, &to_status(&e)),
                                    };
                                    let _ = tx.send(Ok(message)).await;
                                }
                                () = tx.closed() => {}
                            }
                        });
                    }
                    Err(e) => {
                        if tx.send(Ok(stream_error(id, &to_status(&e)))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let model = self.state.registry.get(&r.name, &r.version)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(describe::config(&model.spec)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let models = if r.name.is_empty() {
            self.state.registry.all()
        } else {
            vec![self.state.registry.get(&r.name, &r.version)?]
        };
        let model_stats = models
            .iter()
            .map(|m| {
                describe::statistics(&m.spec, &m.stats.snapshot(), m.cost().line(), |priority| {
                    m.admission_reserve(priority)
                })
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let only_ready = request.into_inner().ready;
        let hooks = self.repository()?;
        let entries = blocking(move || hooks.index()).await?;
        let models = entries
            .into_iter()
            .filter(|e| !only_ready || e.state == "READY")
            .map(|e| ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state,
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = request.into_inner().model_name;
        let hooks = self.repository()?;
        blocking(move || hooks.load(&name)).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = request.into_inner().model_name;
        let hooks = self.repository()?;
        blocking(move || hooks.unload(&name)).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}
