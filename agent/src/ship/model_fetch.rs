//! Fetches an approved model's file from the control plane by digest
//! (`AgentService.FetchModel`), for whoever serves models on this host.
//!
//! The bytes go to a temporary file beside the destination while they are
//! hashed; a cut transfer resumes from the bytes already there (at the
//! next endpoint, after a short pause), the size the control plane
//! reports must be the record's, and only a file of exactly that size
//! hashing to the approved digest is synced and renamed to the
//! destination (then the directory synced). Anything else removes the
//! temporary file and says why; the destination is never a partial or
//! wrong file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::ship::control_plane_tls::AgentTls;

/// Transfers tried (across the endpoints, each resuming the last) before
/// giving up.
const ATTEMPTS: usize = 6;

/// How long the control plane may take to send the next chunk.
const CHUNK_WITHIN: Duration = Duration::from_secs(30);

/// The pause before the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum ModelFetchError {
    #[error("{0:?} is not a model digest (64 lowercase hex characters)")]
    BadDigest(String),
    #[error("the control plane refused model {sha256}: {code:?}: {message}")]
    Refused {
        sha256: String,
        code: tonic::Code,
        message: String,
    },
    #[error(
        "the control plane says model {sha256} is {said} bytes; its approved record says {want}"
    )]
    SizeMismatch {
        sha256: String,
        said: u64,
        want: u64,
    },
    #[error("the control plane sent more than the {want} bytes of model {sha256}")]
    Overrun { sha256: String, want: u64 },
    #[error("the bytes fetched hash to {actual}, not to the approved {want}: nothing was kept")]
    DigestMismatch { want: String, actual: String },
    #[error("model {sha256}: {attempts} transfers failed, the last: {last}")]
    GaveUp {
        sha256: String,
        attempts: usize,
        last: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelFetchError + '_ {
    move |source| ModelFetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A model file in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedModel {
    pub path: PathBuf,
    pub size: u64,
    /// Bytes a previous transfer had left that this one kept.
    pub resumed_from: u64,
}

/// Fetches model files from the control plane the agent ships to.
#[derive(Debug, Clone)]
pub struct ModelFetcher {
    endpoints: Vec<String>,
    tls: Option<AgentTls>,
    agent_id: String,
}

/// Why one transfer stopped.
enum Attempt {
    /// Worth another try, from the bytes kept.
    Retry(String),
    Fatal(ModelFetchError),
}

impl ModelFetcher {
    /// Fetches from `endpoints` in turn, over mutual TLS when `tls` is
    /// given (the certificate then names the agent); without it the
    /// request names `agent_id`.
    pub fn new(endpoints: Vec<String>, tls: Option<AgentTls>, agent_id: String) -> Self {
        Self {
            endpoints,
            tls,
            agent_id,
        }
    }

    /// The fetcher for this agent's configuration (its control planes,
    /// TLS files and agent id).
    pub fn from_config(config: &crate::config::AgentConfig) -> anyhow::Result<Self> {
        Ok(Self::new(
            config.control_planes(),
            AgentTls::from_config(config)?,
            config.resolved_agent_id(),
        ))
    }

    /// Fetches the approved model file `sha256` of `size` bytes to `dest`
    /// (its directory must exist; one fetch per destination at a time),
    /// resuming what an earlier fetch to the same destination left.
    pub async fn fetch(
        &self,
        sha256: &str,
        size: u64,
        dest: &Path,
    ) -> Result<FetchedModel, ModelFetchError> {
        if !vigil_domain::is_model_digest(sha256) {
            return Err(ModelFetchError::BadDigest(vigil_domain::cut_text(
                sha256, 80,
            )));
        }
        let partial = partial_path(dest);
        let (mut file, mut hasher, kept) = resume(&partial, size).await?;
        let mut have = kept;
        let mut last = String::from("no control plane endpoint is configured");
        let endpoints = self.endpoints.len().max(1);
        for attempt in 0..ATTEMPTS {
            if have == size {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            let Some(endpoint) = self.endpoints.get(attempt % endpoints) else {
                break;
            };
            match self
                .transfer(
                    endpoint,
                    sha256,
                    size,
                    &mut have,
                    &mut file,
                    &mut hasher,
                    &partial,
                )
                .await
            {
                Ok(()) => break,
                Err(Attempt::Retry(why)) => {
                    tracing::warn!(%endpoint, %sha256, have, size, %why, "model transfer cut off; resuming");
                    last = format!("{endpoint}: {why}");
                }
                Err(Attempt::Fatal(e)) => {
                    drop(file);
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(e);
                }
            }
        }
        if have != size {
            // The bytes so far stay for the next fetch to resume.
            return Err(ModelFetchError::GaveUp {
                sha256: sha256.to_string(),
                attempts: ATTEMPTS,
                last,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ModelFetchError::DigestMismatch {
                want: sha256.to_string(),
                actual,
            });
        }
        file.flush().await.map_err(io(&partial))?;
        file.sync_all().await.map_err(io(&partial))?;
        drop(file);
        tokio::fs::rename(&partial, dest).await.map_err(io(dest))?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::File::open(dir)
            .await
            .map_err(io(dir))?
            .sync_all()
            .await
            .map_err(io(dir))?;
        tracing::info!(%sha256, size, resumed_from = kept, dest = %dest.display(), "model file fetched and verified");
        Ok(FetchedModel {
            path: dest.to_path_buf(),
            size,
            resumed_from: kept,
        })
    }

    async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        let mut ep = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.client_config(endpoint)?)?;
        }
        Ok(ep.connect().await?)
    }

    /// One transfer from `*have` on: the chunks written and hashed as they
    /// come.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(
        &self,
        endpoint: &str,
        sha256: &str,
        size: u64,
        have: &mut u64,
        file: &mut tokio::fs::File,
        hasher: &mut Sha256,
        partial: &Path,
    ) -> Result<(), Attempt> {
        let channel = self
            .connect(endpoint)
            .await
            .map_err(|e| Attempt::Retry(format!("connecting: {e:#}")))?;
        let mut client = AgentServiceClient::new(channel);
        let refused = |s: tonic::Status| match s.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::Unauthenticated
            | tonic::Code::OutOfRange => Attempt::Fatal(ModelFetchError::Refused {
                sha256: sha256.to_string(),
                code: s.code(),
                message: s.message().to_string(),
            }),
            _ => Attempt::Retry(format!("{:?}: {}", s.code(), s.message())),
        };
        let mut chunks = client
            .fetch_model(pb::FetchModelRequest {
                sha256: sha256.to_string(),
                offset: *have,
                agent_id: if self.tls.is_some() {
                    String::new()
                } else {
                    self.agent_id.clone()
                },
            })
            .await
            .map_err(refused)?
            .into_inner();
        loop {
            let next = tokio::time::timeout(CHUNK_WITHIN, chunks.message())
                .await
                .map_err(|_| Attempt::Retry(format!("no chunk within {CHUNK_WITHIN:?}")))?
                .map_err(refused)?;
            let Some(chunk) = next else {
                return if *have == size {
                    Ok(())
                } else {
                    Err(Attempt::Retry(format!(
                        "the stream ended after {have} of {size} bytes"
                    )))
                };
            };
            if chunk.total_size != size {
                return Err(Attempt::Fatal(ModelFetchError::SizeMismatch {
                    sha256: sha256.to_string(),
                    said: chunk.total_size,
                    want: size,
                }));
            }
            if have.saturating_add(chunk.data.len() as u64) > size {
                return Err(Attempt::Fatal(ModelFetchError::Overrun {
                    sha256: sha256.to_string(),
                    want: size,
                }));
            }
            file.write_all(&chunk.data)
                .await
                .map_err(|e| Attempt::Fatal(io(partial)(e)))?;
            hasher.update(&chunk.data);
            *have += chunk.data.len() as u64;
        }
    }
}

/// Where the bytes of `dest` wait until they are verified: a hidden file
/// beside it.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    dest.with_file_name(format!(".{name}.partial"))
}

/// The temporary file, opened to append, with the hash of what it already
/// holds (a file longer than the model starts again).
async fn resume(
    partial: &Path,
    size: u64,
) -> Result<(tokio::fs::File, Sha256, u64), ModelFetchError> {
    let mut hasher = Sha256::new();
    let mut kept = 0u64;
    if let Ok(mut existing) = tokio::fs::File::open(partial).await {
        let len = existing.metadata().await.map_err(io(partial))?.len();
        if len <= size {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = existing.read(&mut buf).await.map_err(io(partial))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                kept += n as u64;
            }
        }
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .mode(0o600)
        .open(partial)
        .await
        .map_err(io(partial))?;
    if kept == 0 {
        file.set_len(0).await.map_err(io(partial))?;
    }
    Ok((file, hasher, kept))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use vigil_proto::agent::v1::agent_service_server::{AgentService, AgentServiceServer};

    use super::*;

    /// How the fake control plane misbehaves.
    #[derive(Clone, Copy)]
    enum Serve {
        /// The file as it is.
        Honestly,
        /// The first request's stream ends with an error after this many
        /// bytes (a cut connection); the others are honest.
        CutFirstAfter(usize),
        /// Other bytes of the same length.
        Forged,
        /// A total size other than the file's.
        WrongSize,
        /// PERMISSION_DENIED.
        Deny,
    }

    struct FakeControlPlane {
        file: Arc<Vec<u8>>,
        serve: Serve,
        calls: Arc<AtomicUsize>,
        offsets: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    #[tonic::async_trait]
    impl AgentService for FakeControlPlane {
        type StreamStream = ReceiverStream<Result<pb::ControlMessage, tonic::Status>>;
        type FetchModelStream = ReceiverStream<Result<pb::ModelChunk, tonic::Status>>;

        async fn stream(
            &self,
            _: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
        ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn enroll(
            &self,
            _: tonic::Request<pb::EnrollRequest>,
        ) -> Result<tonic::Response<pb::EnrollResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn renew(
            &self,
            _: tonic::Request<pb::RenewRequest>,
        ) -> Result<tonic::Response<pb::RenewResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn fetch_model(
            &self,
            req: tonic::Request<pb::FetchModelRequest>,
        ) -> Result<tonic::Response<Self::FetchModelStream>, tonic::Status> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let req = req.into_inner();
            assert_eq!(req.agent_id, "a1");
            self.offsets.lock().unwrap().push(req.offset);
            let mut data = self.file[req.offset as usize..].to_vec();
            let mut total_size = self.file.len() as u64;
            let mut cut = None;
            match self.serve {
                Serve::Honestly => {}
                Serve::CutFirstAfter(n) if call == 0 => cut = Some(n),
                Serve::CutFirstAfter(_) => {}
                Serve::Forged => data.iter_mut().for_each(|b| *b ^= 0xff),
                Serve::WrongSize => total_size += 1,
                Serve::Deny => {
                    return Err(tonic::Status::permission_denied(
                        "agent a1: not among the models this host serves",
                    ))
                }
            }
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                let end = cut.unwrap_or(data.len()).min(data.len());
                for piece in data[..end].chunks(1000) {
                    let chunk = pb::ModelChunk {
                        data: piece.to_vec(),
                        total_size,
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                if cut.is_some() {
                    let _ = tx.send(Err(tonic::Status::unavailable("cut"))).await;
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    struct Fixture {
        fetcher: ModelFetcher,
        file: Arc<Vec<u8>>,
        sha256: String,
        dir: tempfile::TempDir,
        calls: Arc<AtomicUsize>,
        offsets: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    async fn fixture(serve: Serve) -> Fixture {
        let file: Arc<Vec<u8>> = Arc::new((0..25_000u32).map(|i| (i % 253) as u8).collect());
        let sha256 = hex::encode(Sha256::digest(file.as_slice()));
        let calls = Arc::new(AtomicUsize::new(0));
        let offsets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(FakeControlPlane {
                    file: file.clone(),
                    serve,
                    calls: calls.clone(),
                    offsets: offsets.clone(),
                }))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Fixture {
            fetcher: ModelFetcher::new(vec![endpoint], None, "a1".into()),
            file,
            sha256,
            dir: tempfile::tempdir().unwrap(),
            calls,
            offsets,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn a_model_is_fetched_verified_and_put_in_place() {
        let f = fixture(Serve::Honestly).await;
        let dest = f.dir.path().join("m-1.onnx");
        let got = f
            .fetcher
            .fetch(&f.sha256, f.file.len() as u64, &dest)
            .await
            .unwrap();
        assert_eq!(got.size, f.file.len() as u64);
        assert_eq!(got.resumed_from, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), *f.file);
        assert_eq!(names(f.dir.path()), vec!["m-1.onnx"]);
    }

    #[tokio::test]
    async fn a_cut_transfer_resumes_from_the_bytes_it_has() {
        let f = fixture(Serve::CutFirstAfter(10_500)).await;
        let dest = f.dir.path().join("m.onnx");
        let got = f
            .fetcher
            .fetch(&f.sha256, f.file.len() as u64, &dest)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), *f.file);
        assert_eq!(*f.offsets.lock().unwrap(), vec![0, 10_500]);
        assert_eq!(got.resumed_from, 0);
        // What an earlier fetch (an agent restart) left is resumed too.
        let again = fixture(Serve::Honestly).await;
        let dest = again.dir.path().join("m.onnx");
        std::fs::write(partial_path(&dest), &again.file[..7_777]).unwrap();
        let got = again
            .fetcher
            .fetch(&again.sha256, again.file.len() as u64, &dest)
            .await
            .unwrap();
        assert_eq!(got.resumed_from, 7_777);
        assert_eq!(*again.offsets.lock().unwrap(), vec![7_777]);
        assert_eq!(std::fs::read(&dest).unwrap(), *again.file);
    }

    #[tokio::test]
    async fn wrong_bytes_sizes_and_refusals_leave_nothing_in_place() {
        let f = fixture(Serve::Forged).await;
        let dest = f.dir.path().join("m.onnx");
        let e = f
            .fetcher
            .fetch(&f.sha256, f.file.len() as u64, &dest)
            .await
            .unwrap_err();
        assert!(matches!(e, ModelFetchError::DigestMismatch { .. }), "{e}");
        assert!(names(f.dir.path()).is_empty());

        let f = fixture(Serve::WrongSize).await;
        let e = f
            .fetcher
            .fetch(&f.sha256, f.file.len() as u64, &dest)
            .await
            .unwrap_err();
        assert!(matches!(e, ModelFetchError::SizeMismatch { .. }), "{e}");
        assert!(names(f.dir.path()).is_empty());

        // The record says fewer bytes than come.
        let f = fixture(Serve::Honestly).await;
        let e = f.fetcher.fetch(&f.sha256, 100, &dest).await.unwrap_err();
        assert!(
            matches!(e, ModelFetchError::SizeMismatch { said: 25_000, .. }),
            "{e}"
        );

        let f = fixture(Serve::Deny).await;
        let e = f
            .fetcher
            .fetch(&f.sha256, f.file.len() as u64, &dest)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ModelFetchError::Refused {
                    code: tonic::Code::PermissionDenied,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            1,
            "a refusal is not retried"
        );
        assert!(names(f.dir.path()).is_empty());

        let e = f.fetcher.fetch("../x", 1, &dest).await.unwrap_err();
        assert!(matches!(e, ModelFetchError::BadDigest(_)), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_gives_up_and_keeps_nothing_in_place() {
        let fetcher = ModelFetcher::new(vec!["http://127.0.0.1:1".into()], None, "a1".into());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.onnx");
        let e = fetcher
            .fetch(&"ab".repeat(32), 10, &dest)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ModelFetchError::GaveUp {
                    attempts: ATTEMPTS,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!dest.exists());
    }
}
