//! The wiring: control socket, ONNX Runtime, the `--model`s, the listener,
//! the gRPC server and the control thread, started in that order; stopped
//! by SIGTERM/SIGINT or by the agent closing the control socket.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tower::util::MapResponseLayer;
use vigil_proto::kserve::grpc_inference_service_server::GrpcInferenceServiceServer;

use crate::config::SidecarConfig;
use crate::control_session::serve_control;
use crate::control_socket::{ControlSocket, ControlSocketError};
use crate::inference_service::InferenceService;
use crate::input_budget::{InputBudget, INPUT_BUDGET_WAIT};
use crate::listen_address::ListenAddress;
use crate::model_bytes::{read_model_file, ReadError};
use crate::model_loader::{LoadRefusal, ModelLoader};
use crate::ort_runtime::{load_runtime, RuntimeLoadError};
use crate::oversize_request::rewrite_oversize;
use crate::served_models::ServedModels;
use crate::shared_memory::{Limits, SharedMemory, SHM_DIR};
use crate::unix_socket_path::{bind_unix_socket, SocketPathError, UnixSocketFile};

/// How long in-flight requests get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Why the sidecar did not start or stopped with an error; each has its
/// exit status.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    ControlFd(ControlSocketError),
    #[error("PR_SET_PDEATHSIG: {0}")]
    DeathSignal(nix::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeLoadError),
    #[error("--model names {0:?} twice; one version of a model is served")]
    ModelTwice(String),
    #[error("--model {model}: {source}")]
    ModelRead { model: String, source: ReadError },
    #[error("--model {model}: refused: {source}")]
    ModelRefused { model: String, source: LoadRefusal },
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        address: ListenAddress,
        reason: String,
    },
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the control socket failed: {0}")]
    ControlFailed(ControlSocketError),
    #[error("starting the control thread: {0}")]
    Thread(std::io::Error),
    #[error("the gRPC server task ended: {0}")]
    ServerTask(String),
    #[error("{0}")]
    Arguments(String),
}

impl SidecarError {
    /// The process's exit status for this error (see `--help`).
    pub fn exit_status(&self) -> u8 {
        match self {
            SidecarError::ControlFd(_)
            | SidecarError::ModelTwice(_)
            | SidecarError::Arguments(_) => 2,
            SidecarError::Runtime(_) => 3,
            SidecarError::ModelRead { .. } | SidecarError::ModelRefused { .. } => 4,
            SidecarError::Listen { .. } => 5,
            SidecarError::DeathSignal(_)
            | SidecarError::Serve(_)
            | SidecarError::ControlFailed(_)
            | SidecarError::Thread(_)
            | SidecarError::ServerTask(_) => 1,
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum BoundListener {
    Tcp(tokio::net::TcpListener),
    /// The socket file is removed when this is dropped.
    Unix(tokio::net::UnixListener, UnixSocketFile),
}

/// Binds `address` (see `unix_socket_path.rs` for a unix socket's rules).
pub async fn bind(address: &ListenAddress) -> Result<BoundListener, SidecarError> {
    let failed = |reason: String| SidecarError::Listen {
        address: address.clone(),
        reason,
    };
    match address {
        ListenAddress::Tcp(addr) => tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map(BoundListener::Tcp)
            .map_err(|e| failed(e.to_string())),
        ListenAddress::Unix(path) => {
            let (listener, file) =
                bind_unix_socket(path).map_err(|e: SocketPathError| failed(e.to_string()))?;
            let listener =
                tokio::net::UnixListener::from_std(listener).map_err(|e| failed(e.to_string()))?;
            Ok(BoundListener::Unix(listener, file))
        }
    }
}

/// HTTP/2 flow-control windows: a stream's, and the connection's (several
/// streams at once). Fixed, so a batch's tensor never waits for a window
/// update; hyper's adaptive windows would override them.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The largest HTTP/2 frame a client may send (`SETTINGS_MAX_FRAME_SIZE`;
/// 16 KiB by default): a batch-64 tensor of 128 KiB crosses in one DATA
/// frame instead of eight, fewer frames to parse per request (this and
/// the fixed windows together: +1.5 to 3 % of batch-64 throughput two in
/// flight, side by side on this VM).
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Requests one connection may have in flight (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; hyper's default is 200): each may
/// buffer up to `--max-request-bytes`, and inference takes turns on a
/// model's session anyway.
pub const MAX_CONCURRENT_STREAMS: u32 = 16;

/// Serves `service` on `listener` until `shutdown` completes; requests
/// over `max_request_bytes` are refused before they are buffered.
pub async fn serve_grpc(
    listener: BoundListener,
    service: InferenceService,
    max_request_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(max_request_bytes)
        // Outputs are bounded before they are encoded
        // (`--max-response-bytes`, ServedModel::infer_async).
        .max_encoding_message_size(usize::MAX);
    let rewrite: fn(_) -> _ = rewrite_oversize;
    // HTTP/2's default 64 KiB windows make a client stop half way through
    // a batch's tensor and wait a round trip for a window update; windows
    // that hold a few requests (and grow with the measured bandwidth-delay
    // product) let a batch arrive in one go.
    let router = Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .layer(MapResponseLayer::new(rewrite))
        .add_service(service);
    match listener {
        BoundListener::Tcp(listener) => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        BoundListener::Unix(listener, _file) => {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs the sidecar as `config` says, until it is told to stop.
pub async fn run(config: SidecarConfig) -> Result<(), SidecarError> {
    let budget_bytes = config
        .input_budget_bytes()
        .map_err(SidecarError::Arguments)?;
    let control = match config.control_fd {
        Some(fd) => {
            let socket = ControlSocket::from_inherited(fd).map_err(SidecarError::ControlFd)?;
            // The agent's death ends the sidecar even where the socket's
            // end would stay open (a copy inherited elsewhere).
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(SidecarError::DeathSignal)?;
            Some(socket)
        }
        None => None,
    };

    let runtime = load_runtime(&config.ort_lib)?;
    tracing::info!(library = %runtime.library.display(), build = %runtime.build_info, cuda = runtime.cuda_available, "ONNX Runtime loaded");

    let mut names = std::collections::HashSet::new();
    if let Some(twice) = config
        .models
        .iter()
        .find(|m| !names.insert(m.identity.name.as_str()))
    {
        return Err(SidecarError::ModelTwice(twice.identity.name.clone()));
    }
    let models = Arc::new(ServedModels::new());
    let loader = Arc::new(ModelLoader::new(
        runtime,
        config.session_settings(),
        models.clone(),
    ));
    for source in &config.models {
        let model = format!(
            "{}:{}:{}",
            source.identity.name,
            source.identity.version,
            source.path.display()
        );
        let bytes = read_model_file(&source.path).map_err(|source| SidecarError::ModelRead {
            model: model.clone(),
            source,
        })?;
        loader
            .load(source.identity.clone(), &bytes)
            .map_err(|source| SidecarError::ModelRefused { model, source })?;
    }

    let listener = bind(&config.listen).await?;
    tracing::info!(listen = %config.listen, max_request_bytes = config.max_request_bytes, "serving KServe v2 gRPC");

    let control_ended = match control {
        Some(socket) => {
            let (done, ended) = oneshot::channel();
            let loader = loader.clone();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    let _ = done.send(serve_control(&socket, &loader));
                })
                .map_err(SidecarError::Thread)?;
            Some(ended)
        }
        None => None,
    };
    let agent_gone = async {
        match control_ended {
            Some(ended) => ended.await.unwrap_or(Ok(())),
            // Without a control socket only a signal stops the sidecar.
            None => std::future::pending().await,
        }
    };

    let ready = Arc::new(AtomicBool::new(true));
    let shared_memory = Arc::new(SharedMemory::new(
        SHM_DIR,
        Limits {
            max_input_bytes: config.max_request_bytes,
            ..Limits::default()
        },
    ));
    tracing::info!(
        max_input_bytes_in_flight = budget_bytes,
        "inputs of all requests in flight share this budget"
    );
    let service = InferenceService::new(models, ready.clone())
        .with_shared_memory(shared_memory, config.tcp_shared_memory_uid)
        .with_input_budget(Arc::new(InputBudget::new(budget_bytes, INPUT_BUDGET_WAIT)))
        .with_max_response_bytes(config.max_response_bytes);
    let max_request_bytes = usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX);
    let (stop, stopping) = oneshot::channel::<()>();
    let mut server = tokio::spawn(serve_grpc(listener, service, max_request_bytes, async {
        let _ = stopping.await;
    }));

    let outcome = tokio::select! {
        _ = termination() => Ok(()),
        ended = agent_gone => match ended {
            Ok(()) => {
                tracing::info!("the agent closed the control socket: stopping");
                Ok(())
            }
            Err(e) => Err(SidecarError::ControlFailed(e)),
        },
        served = &mut server => return server_outcome(served),
    };
    ready.store(false, Ordering::Release);
    let _ = stop.send(());
    match tokio::time::timeout(DRAIN, &mut server).await {
        Ok(served) => {
            if let Err(e) = server_outcome(served) {
                tracing::warn!("while stopping: {e}");
            }
        }
        Err(_) => {
            tracing::warn!("requests still running {DRAIN:?} after the stop; stopping anyway");
            server.abort();
            let _ = server.await;
        }
    }
    outcome
}

fn server_outcome(
    joined: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), SidecarError> {
    match joined {
        Ok(result) => result.map_err(SidecarError::from),
        Err(e) => Err(SidecarError::ServerTask(e.to_string())),
    }
}
