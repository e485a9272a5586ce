//! `inference.GRPCInferenceService` (KServe v2, as Triton serves it):
//! ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
//! ModelInfer. Every other RPC of the protocol answers `UNIMPLEMENTED`
//! naming what is served.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::kserve::grpc_inference_service_server::GrpcInferenceService;
use vigil_proto::kserve::*;

use crate::infer_error::InferError;
use crate::served_models::ServedModels;

/// `name` in server metadata.
pub const SERVER_NAME: &str = "vigil-sidecar";

fn not_served(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served by vigil-sidecar; it serves ServerLive, ServerReady, ModelReady, \
         ServerMetadata, ModelMetadata and ModelInfer"
    ))
}

/// The service over the served models.
#[derive(Debug, Clone)]
pub struct InferenceService {
    models: Arc<ServedModels>,
    ready: Arc<AtomicBool>,
}

impl InferenceService {
    /// `ready` is what ServerReady answers (false once shutting down).
    pub fn new(models: Arc<ServedModels>, ready: Arc<AtomicBool>) -> InferenceService {
        InferenceService { models, ready }
    }
}

type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

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
            ready: self.ready.load(Ordering::Acquire),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        // Ready only for the version served (or none named).
        let ready = self.models.resolve(&request.name, &request.version).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.models.resolve(&request.name, &request.version)?;
        Ok(Response::new(model.metadata()))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let model = self
            .models
            .resolve(&request.model_name, &request.model_version)?;
        // Decoding, the run and encoding are CPU work. With the session
        // idle they run here, on the worker that decoded the request: no
        // hop to another thread and back, whose two wake-ups cost this VM
        // tens of microseconds a request (the runtime's other workers go
        // on serving meanwhile). A request that would wait for another
        // to finish waits on a blocking thread instead, never holding a
        // worker. The model's Arc keeps this version alive to the end,
        // whatever is loaded meanwhile.
        let response = if model.is_busy() {
            tokio::task::spawn_blocking(move || model.infer(&request))
                .await
                .map_err(|e| {
                    InferError::RuntimeFailed(format!("the inference task ended: {e}"))
                })??
        } else {
            model.infer(&request)?
        };
        Ok(Response::new(response))
    }

    type ModelStreamInferStream = ModelStream;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<ModelStream>, Status> {
        Err(not_served("ModelStreamInfer"))
    }

    async fn model_config(
        &self,
        _: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        Err(not_served("ModelConfig"))
    }

    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Err(not_served("ModelStatistics"))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Err(not_served("RepositoryIndex"))
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        // Models come only from the agent, approved and verified.
        Err(not_served("RepositoryModelLoad"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(not_served("RepositoryModelUnload"))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        Err(not_served("SystemSharedMemoryStatus"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        Err(not_served("SystemSharedMemoryRegister"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        Err(not_served("SystemSharedMemoryUnregister"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(not_served("CudaSharedMemoryStatus"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(not_served("CudaSharedMemoryRegister"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(not_served("CudaSharedMemoryUnregister"))
    }

    async fn trace_setting(
        &self,
        _: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        Err(not_served("TraceSetting"))
    }

    async fn log_settings(
        &self,
        _: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        Err(not_served("LogSettings"))
    }
}
