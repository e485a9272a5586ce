//! The raft network: openraft's RPCs to the other nodes over
//! `vigil.raft.v1.RaftService` (gRPC, mutual TLS when the node serves
//! with it).
//!
//! Each peer gets one lazily connected channel that reconnects by itself;
//! every RPC runs under openraft's deadline for it (`RPCOption::hard_ttl`),
//! and a peer that cannot be reached is reported as unreachable, so
//! openraft backs off (100 ms doubling to 2 s) instead of retrying at once.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use vigil_proto::raft::v1 as pb;
use vigil_proto::raft::v1::raft_service_client::RaftServiceClient;

use crate::raft_types::{NodeId, TypeConfig};

/// The largest raft message a node takes (`server.rs` sets the same on the
/// service); an append past it is split (`PayloadTooLarge`) rather than
/// sent again and again.
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;

/// About how many bytes (encoded) one append carries.
const APPEND_BUDGET: usize = 2 << 20;

/// Counts what a value's encoding would take, without keeping it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// When `entries` encode to more than `budget` bytes: how many of them
/// (one at least) fit; None when all do.
fn entries_within(entries: &[openraft::Entry<TypeConfig>], budget: usize) -> Option<u64> {
    let mut count = ByteCount(0);
    for (i, entry) in entries.iter().enumerate() {
        if serde_json::to_writer(&mut count, entry).is_err() {
            return None; // the call itself reports it
        }
        if count.0 > budget {
            return Some((i as u64).max(1));
        }
    }
    None
}

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes a client per peer; `tls` is this node's own identity and the
/// fleet CA (None: plaintext, a lab).
#[derive(Clone, Default)]
pub struct GrpcNetwork {
    tls: Option<ClientTlsConfig>,
    /// Channels for forwarded writes, by address (kept, so a write does
    /// not pay a handshake).
    forwarding: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl GrpcNetwork {
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            tls,
            forwarding: Default::default(),
        }
    }

    /// A channel to `addr` (host:port), connected on first use.
    pub fn channel(tls: Option<&ClientTlsConfig>, addr: &str) -> Result<Channel, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("node address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            let host = addr
                .rsplit_once(':')
                .map_or(addr, |(host, _)| host)
                .trim_matches(['[', ']']);
            endpoint = endpoint
                .tls_config(tls.clone().domain_name(host))
                .map_err(|e| format!("TLS to {addr}: {e}"))?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// How long a forwarded write may take (commit included).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

impl GrpcNetwork {
    /// Has the leader at `addr` propose `cmd`: its result, or why the
    /// write did not get there (Err) or failed there (Ok(Err)).
    pub async fn forward_write(
        &self,
        addr: &str,
        cmd: &crate::raft_types::Command,
    ) -> Result<Result<crate::raft_types::CommandResult, String>, String> {
        let json = serde_json::to_vec(cmd).map_err(|e| format!("encoding: {e}"))?;
        let mut client = self.peer_client(addr)?.max_encoding_message_size(64 << 20);
        let call = client.client_write(pb::RaftPayload { json });
        let reply = tokio::time::timeout(FORWARD_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {FORWARD_TIMEOUT:?}"))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        serde_json::from_slice(&reply.json).map_err(|e| format!("decoding the reply: {e}"))
    }
}

impl GrpcNetwork {
    /// A client of the node at `addr`, over a kept channel (no handshake
    /// per call).
    fn peer_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, String> {
        let cached = self
            .forwarding
            .lock()
            .ok()
            .and_then(|c| c.get(addr).cloned());
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = GrpcNetwork::channel(self.tls.as_ref(), addr)?;
                if let Ok(mut cache) = self.forwarding.lock() {
                    // A handful of nodes: no eviction needed beyond a cap.
                    if cache.len() > 16 {
                        cache.clear();
                    }
                    cache.insert(addr.to_string(), c.clone());
                }
                c
            }
        };
        Ok(RaftServiceClient::new(channel))
    }

    /// Asks the node at `addr` not to start elections for `hold`.
    pub async fn hold_elections(&self, addr: &str, hold: Duration) -> Result<(), String> {
        let mut client = self.peer_client(addr)?;
        let call = client.hold_elections(pb::HoldElectionsRequest {
            millis: hold.as_millis() as u64,
        });
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "no answer within 2 s".to_string())?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(())
    }

    /// Asks the leader at `addr` for its read index (`ReadIndex`).
    pub async fn read_index(&self, addr: &str) -> Result<Option<u64>, String> {
        let mut client = self.peer_client(addr)?;
        let call = client.read_index(pb::ReadIndexRequest {});
        let reply = tokio::time::timeout(FORWARD_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {FORWARD_TIMEOUT:?}"))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner().index)
    }

    /// Asks the node at `addr` to pass an unfreeze order to `agent_id` if
    /// the agent's stream is open there: whether it was.
    pub async fn deliver_unfreeze(
        &self,
        addr: &str,
        agent_id: &str,
        order: vigil_proto::agent::v1::Unfreeze,
    ) -> Result<bool, String> {
        let mut client = self.peer_client(addr)?;
        let call = client.deliver_unfreeze(pb::DeliverUnfreezeRequest {
            agent_id: agent_id.to_string(),
            order: Some(order),
        });
        let reply = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "no answer within 2 s".to_string())?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner().delivered)
    }

    /// Asks the node at `addr` to quote `agent_id` now if the agent's
    /// session is there: whether it was.
    pub async fn request_attestation(&self, addr: &str, agent_id: &str) -> Result<bool, String> {
        let mut client = self.peer_client(addr)?;
        let call = client.request_attestation(pb::RequestAttestationRequest {
            agent_id: agent_id.to_string(),
        });
        let reply = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "no answer within 2 s".to_string())?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner().requested)
    }

    /// Asks the node at `addr` for the model file `sha256` from `offset`:
    /// its chunks as they come (`FetchModelBlob`).
    pub async fn fetch_model_blob(
        &self,
        addr: &str,
        sha256: &str,
        offset: u64,
    ) -> Result<tonic::Streaming<vigil_proto::agent::v1::ModelChunk>, String> {
        let mut client = self.peer_client(addr)?;
        let call = client.fetch_model_blob(pb::FetchModelBlobRequest {
            sha256: sha256.to_string(),
            offset,
        });
        let reply = tokio::time::timeout(FORWARD_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {FORWARD_TIMEOUT:?}"))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner())
    }

    /// Asks the node at `addr` to stand for election now.
    pub async fn elect(&self, addr: &str) -> Result<(), String> {
        let mut client = self.peer_client(addr)?;
        let call = client.elect(pb::ElectRequest {});
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "no answer within 2 s".to_string())?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(())
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            client: GrpcNetwork::channel(self.tls.as_ref(), &node.addr).map(RaftServiceClient::new),
        }
    }
}

/// The client of one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// Err: the address cannot make a channel (said on every RPC).
    client: Result<RaftServiceClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("raft {what} to node {target} at {addr}: {why}")]
struct PeerError {
    what: &'static str,
    target: NodeId,
    addr: String,
    why: String,
}

impl PeerClient {
    /// Sends `req` as `what` and decodes the peer's `Result`.
    /// `entries`: how many log entries an append carries (0 otherwise).
    async fn call<Req, Resp, E>(
        &mut self,
        what: &'static str,
        req: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let err = |why: String| PeerError {
            what,
            target: self.target,
            addr: self.addr.clone(),
            why,
        };
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(why) => return Err(RPCError::Unreachable(Unreachable::new(&err(why.clone())))),
        };
        let json = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&err(format!("encoding: {e}")))))?;
        let too_large =
            || RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1)));
        if entries > 1 && json.len() > MAX_RAFT_MESSAGE * 3 / 4 {
            return Err(too_large());
        }
        let payload = pb::RaftPayload { json };
        let sent = async {
            match what {
                "append entries" => client.append_entries(payload).await,
                "vote" => client.vote(payload).await,
                _ => client.install_snapshot(payload).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), sent).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&err(format!(
                    "no reply within {:?}",
                    option.hard_ttl()
                )))))
            }
            Ok(Err(status)) => {
                let e = err(format!("{}: {}", status.code(), status.message()));
                let size = matches!(
                    status.code(),
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                );
                if size && entries > 1 {
                    return Err(too_large());
                }
                return Err(match status.code() {
                    // Not reachable, or reachable but refusing us (TLS,
                    // authorization): back off either way.
                    tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.json)
            .map_err(|e| {
                RPCError::Network(NetworkError::new(&err(format!("decoding the reply: {e}"))))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        // openraft gives an append one heartbeat interval (100 ms): more
        // entries than go across in that time would fail and be sent
        // again without end (a node far behind, large finding batches), so
        // an append carries about APPEND_BUDGET bytes, and one entry at
        // least.
        if entries > 1 {
            if let Some(fit) = entries_within(&rpc.entries, APPEND_BUDGET) {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fit),
                ));
            }
        }
        self.call("append entries", &rpc, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("install snapshot", &rpc, 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, 0, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0..).map(|n: u32| {
                Duration::from_millis(100u64 << n.min(5)).min(Duration::from_secs(2))
            }),
        )
    }
}
