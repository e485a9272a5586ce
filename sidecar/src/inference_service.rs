//! `inference.GRPCInferenceService` (KServe v2, as Triton serves it):
//! ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
//! ModelInfer and the system shared-memory extension (Status, Register,
//! Unregister; see `shared_memory.rs` for who may register what). Every
//! other RPC of the protocol answers `UNIMPLEMENTED` naming what is
//! served.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::kserve::grpc_inference_service_server::GrpcInferenceService;
use vigil_proto::kserve::*;

use crate::inference_request::input_bytes;
use crate::input_budget::{InputBudget, INPUT_BUDGET_WAIT};
use crate::served_models::ServedModels;
use crate::shared_memory::{Caller, Limits, SharedMemory, ShmScope, SHM_DIR};

/// `name` in server metadata.
pub const SERVER_NAME: &str = "vigil-sidecar";

/// `extensions` in server metadata.
pub const EXTENSIONS: [&str; 1] = ["system_shared_memory"];

fn not_served(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served by vigil-sidecar; it serves ServerLive, ServerReady, ModelReady, \
         ServerMetadata, ModelMetadata, ModelInfer and SystemSharedMemory Status, Register and \
         Unregister"
    ))
}

fn no_cuda_shm(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: CUDA shared memory is not served by vigil-sidecar; use system shared memory \
         (SystemSharedMemoryRegister) or send tensors in the request"
    ))
}

/// The service over the served models.
#[derive(Debug, Clone)]
pub struct InferenceService {
    models: Arc<ServedModels>,
    ready: Arc<AtomicBool>,
    shared_memory: Arc<SharedMemory>,
    /// The uid TCP clients act as for shared memory; None: refused.
    tcp_shm_uid: Option<u32>,
    /// The input bytes all requests may hold at once.
    input_budget: Arc<InputBudget>,
    /// The most output bytes one response carries.
    max_response_bytes: u64,
}

impl InferenceService {
    /// `ready` is what ServerReady answers (false once shutting down).
    /// Shared memory: files in `/dev/shm`, default limits, refused on TCP;
    /// the default budget of input bytes in flight.
    pub fn new(models: Arc<ServedModels>, ready: Arc<AtomicBool>) -> InferenceService {
        InferenceService {
            models,
            ready,
            shared_memory: Arc::new(SharedMemory::new(SHM_DIR, Limits::default())),
            tcp_shm_uid: None,
            input_budget: Arc::new(InputBudget::new(
                crate::config::DEFAULT_INPUT_BUDGET_FACTOR
                    * crate::config::DEFAULT_MAX_REQUEST_BYTES,
                INPUT_BUDGET_WAIT,
            )),
            max_response_bytes: crate::config::DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// Responses carry at most this many output bytes.
    pub fn with_max_response_bytes(mut self, max_response_bytes: u64) -> InferenceService {
        self.max_response_bytes = max_response_bytes;
        self
    }

    /// With this budget of input bytes in flight, shared by all requests.
    pub fn with_input_budget(mut self, input_budget: Arc<InputBudget>) -> InferenceService {
        self.input_budget = input_budget;
        self
    }

    /// The budget of input bytes in flight.
    pub fn input_budget(&self) -> &Arc<InputBudget> {
        &self.input_budget
    }

    /// With these shared-memory regions, and TCP clients acting as
    /// `tcp_shm_uid` for them (None: shared memory refused on TCP).
    pub fn with_shared_memory(
        mut self,
        shared_memory: Arc<SharedMemory>,
        tcp_shm_uid: Option<u32>,
    ) -> InferenceService {
        self.shared_memory = shared_memory;
        self.tcp_shm_uid = tcp_shm_uid;
        self
    }

    /// The regions registered through this service.
    pub fn shared_memory(&self) -> &Arc<SharedMemory> {
        &self.shared_memory
    }

    /// Who sent `request`, as far as shared memory goes: the peer's uid
    /// on a unix socket (SO_PEERCRED, taken when it connected); on TCP,
    /// the uid the operator named, or no one.
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>() {
            return match info.peer_cred {
                Some(cred) => Caller::Uid(cred.uid()),
                None => Caller::Unidentified(
                    "the unix socket gave no peer credentials (SO_PEERCRED)".into(),
                ),
            };
        }
        match self.tcp_shm_uid {
            Some(uid) => Caller::Uid(uid),
            None => Caller::Unidentified(
                "TCP carries no peer credentials to bind a region's file to its owner; use the \
                 sidecar's unix socket, or start it with --tcp-shared-memory-uid UID"
                    .into(),
            ),
        }
    }

    /// SystemSharedMemoryStatus for `caller`.
    pub fn shm_status(
        &self,
        caller: &Caller,
        request: &SystemSharedMemoryStatusRequest,
    ) -> Result<SystemSharedMemoryStatusResponse, Status> {
        let regions = self.shared_memory.status(caller, &request.name)?;
        Ok(SystemSharedMemoryStatusResponse {
            regions: regions
                .into_iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        system_shared_memory_status_response::RegionStatus {
                            name: r.name,
                            key: r.key,
                            offset: r.offset,
                            byte_size: r.byte_size,
                        },
                    )
                })
                .collect(),
        })
    }

    /// SystemSharedMemoryRegister for `caller`.
    pub fn shm_register(
        &self,
        caller: &Caller,
        request: &SystemSharedMemoryRegisterRequest,
    ) -> Result<SystemSharedMemoryRegisterResponse, Status> {
        self.shared_memory.register(
            caller,
            &request.name,
            &request.key,
            request.offset,
            request.byte_size,
        )?;
        tracing::debug!(?caller, name = %crate::bounded_text::cut(&request.name, 256), "shared memory region registered");
        Ok(SystemSharedMemoryRegisterResponse {})
    }

    /// SystemSharedMemoryUnregister for `caller`.
    pub fn shm_unregister(
        &self,
        caller: &Caller,
        request: &SystemSharedMemoryUnregisterRequest,
    ) -> Result<SystemSharedMemoryUnregisterResponse, Status> {
        self.shared_memory.unregister(caller, &request.name)?;
        Ok(SystemSharedMemoryUnregisterResponse {})
    }

    /// ModelInfer for `caller`.
    pub async fn infer(
        &self,
        caller: Caller,
        request: ModelInferRequest,
    ) -> Result<ModelInferResponse, Status> {
        let model = self
            .models
            .resolve(&request.model_name, &request.model_version)?;
        // Before any input is copied or read from shared memory: the
        // bytes they will take, out of the budget all requests share
        // (waiting here holds no thread). Given back when the request
        // ends, its inputs gone with it.
        let permit = self.input_budget.reserve(input_bytes(&request)).await?;
        // Decoding, the run and encoding are CPU work, done on this
        // worker; the run itself waits its turn without holding a thread
        // (see SessionRunner). The model's Arc keeps this version alive to
        // the end, whatever is loaded meanwhile; the regions' Arcs keep
        // their files open to the end, whatever is unregistered meanwhile.
        let scope = ShmScope {
            memory: &self.shared_memory,
            caller: &caller,
        };
        let response = model
            .infer_async(&request, Some(scope), permit, self.max_response_bytes)
            .await?;
        Ok(response)
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
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
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
        let caller = self.caller(&request);
        let response = self.infer(caller, request.into_inner()).await?;
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
        request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        let caller = self.caller(&request);
        self.shm_status(&caller, request.get_ref())
            .map(Response::new)
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let caller = self.caller(&request);
        self.shm_register(&caller, request.get_ref())
            .map(Response::new)
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        let caller = self.caller(&request);
        self.shm_unregister(&caller, request.get_ref())
            .map(Response::new)
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(no_cuda_shm("CudaSharedMemoryStatus"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(no_cuda_shm("CudaSharedMemoryRegister"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(no_cuda_shm("CudaSharedMemoryUnregister"))
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

#[cfg(test)]
#[path = "inference_service_tests.rs"]
mod tests;
