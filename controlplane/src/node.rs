//! One control-plane node: raft over the sled stores, and the write path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::network::GrpcNetwork;
use crate::raft_types::{Command, CommandResult, NodeId, Raft};
use crate::store::durability_check::{write_applied_floor, write_cluster_id};
use crate::store::{open_checked, StateReader};

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader (leader: {leader})")]
    NotLeader { leader: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("forwarding the write to the leader at {leader}: {why}")]
    Forward { leader: String, why: String },
    #[error("the write was not committed within {0:?}: this node cannot reach a majority of the cluster")]
    NotCommitted(std::time::Duration),
    #[error("the write is {size} bytes encoded, more than the {limit} one raft entry takes")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Storage(crate::storage_guard::StorageProblem),
}

/// Why a read that must be current could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FreshReadError {
    #[error("no leader is known, so this node cannot tell whether its state is current")]
    NoLeader,
    #[error("the leader did not confirm within {0:?} that it still leads a majority: a read that must be current is refused")]
    NotConfirmed(std::time::Duration),
    #[error("asking the leader at {leader} how far to catch up before reading: {why}")]
    Forward { leader: String, why: String },
    #[error("raft: {0}")]
    Raft(String),
}

impl From<FreshReadError> for tonic::Status {
    fn from(e: FreshReadError) -> Self {
        tonic::Status::unavailable(e.to_string())
    }
}

/// Why the leader did not answer a read index.
#[derive(Debug, Clone)]
pub enum ReadIndexRefused {
    /// This node does not lead (the leader's address, if known).
    NotLeader {
        leader: Option<String>,
    },
    Other(FreshReadError),
}

/// A command's size as the log stores it (JSON).
fn encoded_size(cmd: &Command) -> usize {
    serde_json::to_vec(cmd).map_or(usize::MAX, |v| v.len())
}

/// How long a write may wait to be committed.
const COMMIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl From<WriteError> for tonic::Status {
    fn from(e: WriteError) -> Self {
        tonic::Status::unavailable(e.to_string())
    }
}

pub struct ControlPlaneNode {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: StateReader,
    /// How this node reaches the others (forwarded writes, transfers).
    network: GrpcNetwork,
    config: Arc<Config>,
    /// Elections held until this instant (a leadership transfer).
    elections_held_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// For a node waiting to join: the voters of the cluster it was told to
    /// join (`ClusterInfo` from its `--join` peer), the only nodes it takes
    /// raft traffic from until it is a member.
    pub joining_voters: std::sync::Mutex<Option<std::collections::BTreeSet<NodeId>>>,
    /// Writes waiting to share a raft entry (`write_coalesced`); None:
    /// each write an entry of its own (`--no-write-coalescing`).
    coalesce: Option<tokio::sync::mpsc::Sender<Coalesced>>,
    /// Reads that must be current, waiting for a shared confirmation.
    fresh_reads: tokio::sync::mpsc::Sender<FreshRead>,
    /// The data directory's free space and the stores' writes in flight.
    pub storage: crate::storage_guard::StorageGuard,
    /// The model files this node holds, by digest (beside raft).
    pub models: crate::model_blobs::ModelBlobs,
}

/// How a node runs, beside where it lives.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Wait to be added by a cluster's leader instead of initialising one.
    pub joining: bool,
    /// Let writes that arrive together share a raft entry.
    pub coalesce_writes: bool,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// Bytes kept free on the data directory's file system: below them new
    /// writes are refused (0: none kept).
    pub min_free_disk: u64,
    /// The largest model file the node's model store takes.
    pub max_model_bytes: u64,
}

/// A read waiting to be confirmed current, and where the answer goes.
type FreshRead = tokio::sync::oneshot::Sender<Result<(), FreshReadError>>;

/// Gathers the reads waiting for confirmation and confirms them with one
/// round (leader check, or read index from the leader): every read in a
/// round asked before the round began, so the state it reads is at least
/// as new as any write committed before it asked.
async fn run_fresh_reads(
    node: std::sync::Weak<ControlPlaneNode>,
    mut waiting: tokio::sync::mpsc::Receiver<FreshRead>,
) {
    while let Some(first) = waiting.recv().await {
        let mut group = vec![first];
        while let Ok(next) = waiting.try_recv() {
            group.push(next);
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let result = node.confirm_fresh().await;
        for tx in group {
            let _ = tx.send(result.clone());
        }
    }
}

/// A write waiting for its turn in a shared entry, and where its result goes.
type Coalesced = (
    Command,
    tokio::sync::oneshot::Sender<Result<CommandResult, WriteError>>,
);

/// Shared entries one node has in flight at once.
const COALESCE_IN_FLIGHT: usize = 4;
/// The most commands one shared entry carries.
const COALESCE_AT_MOST: usize = 256;
/// The most bytes (encoded) one shared entry carries; a command this large
/// or larger goes alone. Far below a raft message's limit, so one agent's
/// oversized findings cannot make an entry no node can take.
const COALESCE_BYTES: usize = 4 << 20;
/// The largest command a node proposes at all (encoded): an entry must fit
/// one raft message (`network::MAX_RAFT_MESSAGE`) with room to spare.
const LARGEST_COMMAND: usize = crate::network::MAX_RAFT_MESSAGE / 2;

impl ControlPlaneNode {
    /// Opens the stores in `data_dir`, starts raft and, on first start,
    /// initialises a cluster of this one node advertised at `address`
    /// (unless `joining`: then it waits to be added by a cluster's leader).
    pub async fn start(
        node_id: NodeId,
        address: String,
        data_dir: &Path,
        network: GrpcNetwork,
        options: NodeOptions,
    ) -> anyhow::Result<Arc<Self>> {
        let NodeOptions {
            joining,
            coalesce_writes,
            snapshot_every,
            min_free_disk,
            max_model_bytes,
        } = options;
        {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)?;
            // The directory itself (a symlink to it is followed: a link's
            // own mode says nothing).
            let meta = std::fs::metadata(data_dir)?;
            if meta.mode() & 0o022 != 0 {
                anyhow::bail!(
                    "{}: mode {:o} lets others write to the data directory (they could make this node refuse to start, or lose its state); make it 0700 (chmod go-w)",
                    data_dir.display(),
                    meta.mode() & 0o7777
                );
            }
        }
        let (log, sm, state) = open_checked(data_dir)?;
        let models = crate::model_blobs::ModelBlobs::open(data_dir, max_model_bytes)?;
        let writes = crate::store::WriteWatch::default();
        let (log, sm) = (
            log.watched_by(writes.clone()),
            sm.watched_by(writes.clone()),
        );
        let config = Config {
            cluster_name: "vigil".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            // A snapshot every `snapshot_every` entries; the log is purged
            // behind it but for the last 1,000 (or fewer), so a follower a
            // little behind catches up from the log and one far behind
            // gets the snapshot.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: 1_000.min(snapshot_every),
            purge_batch_size: 256,
            // Snapshot chunks small enough to cross well within their
            // deadline on a loaded host (each is JSON on the wire).
            snapshot_max_chunk_size: 512 << 10,
            install_snapshot_timeout: 2_000,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()?;
        let config = Arc::new(config);
        let raft = Raft::new(node_id, config.clone(), network.clone(), log, sm).await?;
        if !joining && !raft.is_initialized().await? {
            let members = BTreeMap::from([(node_id, BasicNode { addr: address })]);
            raft.initialize(members).await?;
            tracing::info!(node_id, "initialised a new single-node cluster");
        }
        let (coalesce, waiting) = tokio::sync::mpsc::channel(4 * COALESCE_AT_MOST);
        let (fresh_reads, reads_waiting) = tokio::sync::mpsc::channel(1024);
        let node = Arc::new(Self {
            node_id,
            raft,
            state,
            network,
            config,
            elections_held_until: std::sync::Mutex::new(None),
            joining_voters: std::sync::Mutex::new(None),
            coalesce: coalesce_writes.then_some(coalesce),
            fresh_reads,
            storage: crate::storage_guard::StorageGuard::new(
                data_dir.to_path_buf(),
                min_free_disk,
                writes,
            ),
            models,
        });
        tokio::spawn(run_fresh_reads(Arc::downgrade(&node), reads_waiting));
        if coalesce_writes {
            tokio::spawn(run_coalescer(Arc::downgrade(&node), waiting));
        }
        tokio::spawn(keep_durability_marks(node.clone(), data_dir.to_path_buf()));
        Ok(node)
    }

    /// As [`ControlPlaneNode::write`], for the writes every agent makes
    /// all the time (heartbeats, finding batches): those that arrive while
    /// one entry is being committed share the next (`batch.v1`), so many
    /// agents cost one raft round and one fsync, not one each.
    pub async fn write_coalesced(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let Some(coalesce) = &self.coalesce else {
            return self.write(cmd).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        coalesce
            .send((cmd, tx))
            .await
            .map_err(|_| WriteError::Raft("the node is stopping".into()))?;
        rx.await
            .map_err(|_| WriteError::Raft("the node is stopping".into()))?
    }

    /// The cluster's id, once set.
    pub fn cluster_id(&self) -> Option<String> {
        self.state.cluster_id().ok().flatten()
    }

    /// Proposes `cmd` and waits until it is committed and applied; on a
    /// node that is not the leader, the leader proposes it
    /// (`RaftService.ClientWrite`), so any node takes any write.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let size = encoded_size(&cmd);
        if size > LARGEST_COMMAND {
            return Err(WriteError::TooLarge {
                size,
                limit: LARGEST_COMMAND,
            });
        }
        // Held until the write has finished: its bytes count against the
        // disk reserve meanwhile.
        let _admitted = self
            .storage
            .admit(size as u64)
            .map_err(WriteError::Storage)?;
        // A leader cut off from its majority keeps taking entries it can
        // never commit: the caller gets an error, not a wait without end
        // (an agent resends; a seq already committed is skipped).
        let proposed = tokio::time::timeout(COMMIT_WITHIN, self.raft.client_write(cmd.clone()))
            .await
            .map_err(|_| WriteError::NotCommitted(COMMIT_WITHIN))?;
        let forwarded = match proposed {
            Ok(resp) => return Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
            Err(e) => return Err(WriteError::Raft(e.to_string())),
        };
        let Some(leader) = forwarded.leader_node else {
            return Err(WriteError::NotLeader {
                leader: "unknown".into(),
            });
        };
        self.network
            .forward_write(&leader.addr, &cmd)
            .await
            .map_err(|why| WriteError::Forward {
                leader: leader.addr.clone(),
                why,
            })?
            .map_err(WriteError::Raft)
    }

    /// Waits until a read of this node's state is linearizable: on the
    /// leader, a majority confirms it still leads and the state has applied
    /// everything committed before the call (`ensure_linearizable`); on a
    /// follower, the leader does that and answers its read index, and this
    /// node waits to have applied that far (`RaftService.ReadIndex`). A
    /// node that cannot reach a leader with a majority refuses rather than
    /// answer from a state that may be stale.
    /// Reads waiting at once share one confirmation (a round that starts
    /// after each of them asked, so each still reads a current state).
    pub async fn ensure_fresh(&self) -> Result<(), FreshReadError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.fresh_reads
            .send(tx)
            .await
            .map_err(|_| FreshReadError::Raft("the node is stopping".into()))?;
        rx.await
            .map_err(|_| FreshReadError::Raft("the node is stopping".into()))?
    }

    /// One confirmation for [`ControlPlaneNode::ensure_fresh`].
    async fn confirm_fresh(&self) -> Result<(), FreshReadError> {
        let checked = tokio::time::timeout(COMMIT_WITHIN, self.raft.ensure_linearizable())
            .await
            .map_err(|_| FreshReadError::NotConfirmed(COMMIT_WITHIN))?;
        let forwarded = match checked {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => f,
            Err(e) => return Err(FreshReadError::Raft(e.to_string())),
        };
        let leader = forwarded.leader_node.ok_or(FreshReadError::NoLeader)?;
        let index =
            self.network
                .read_index(&leader.addr)
                .await
                .map_err(|why| FreshReadError::Forward {
                    leader: leader.addr.clone(),
                    why,
                })?;
        self.raft
            .wait(Some(COMMIT_WITHIN))
            .applied_index_at_least(index, "a read that must be current")
            .await
            .map_err(|_| FreshReadError::NotConfirmed(COMMIT_WITHIN))?;
        Ok(())
    }

    /// On the leader: confirms with a majority that it still leads and
    /// answers the index a follower must have applied before a read
    /// (`RaftService.ReadIndex`).
    pub async fn read_index(&self) -> Result<Option<u64>, ReadIndexRefused> {
        let checked = tokio::time::timeout(COMMIT_WITHIN, self.raft.get_read_log_id())
            .await
            .map_err(|_| ReadIndexRefused::Other(FreshReadError::NotConfirmed(COMMIT_WITHIN)))?;
        match checked {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReadIndexRefused::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(ReadIndexRefused::Other(FreshReadError::Raft(e.to_string()))),
        }
    }

    pub fn network(&self) -> &GrpcNetwork {
        &self.network
    }

    pub fn raft_config(&self) -> &Config {
        &self.config
    }

    /// Starts no election for `hold` (at most 10 s), then resumes by
    /// itself: part of a leadership transfer to another node.
    pub fn hold_elections(self: &Arc<Self>, hold: std::time::Duration) {
        let hold = hold.min(std::time::Duration::from_secs(10));
        let until = tokio::time::Instant::now() + hold;
        if let Ok(mut held) = self.elections_held_until.lock() {
            *held = Some(held.map_or(until, |h| h.max(until)));
        }
        self.raft.runtime_config().elect(false);
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            let resume = node
                .elections_held_until
                .lock()
                .map(|held| held.is_none_or(|h| h <= tokio::time::Instant::now()))
                .unwrap_or(true);
            if resume {
                node.raft.runtime_config().elect(true);
            }
        });
    }

    /// The cluster's other members, (id, address).
    pub fn other_members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// The leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

/// Gives the cluster an id (the leader proposes one when the replicated
/// state has none: a new cluster, or one from before ids) and writes it
/// beside the store once the state has it, so the start-up check can tell
/// this directory's cluster from another's, and an emptied store from a
/// new one.
/// Then, every few seconds, records the last applied index beside the
/// store, so a store that comes back without it is known to have lost
/// writes.
async fn keep_durability_marks(node: Arc<ControlPlaneNode>, data_dir: std::path::PathBuf) {
    keep_cluster_id(&node, &data_dir).await;
    let mut recorded = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let Some(applied) = node.raft.metrics().borrow().last_applied.map(|l| l.index) else {
            continue;
        };
        if applied > recorded {
            match write_applied_floor(&data_dir, applied) {
                Ok(()) => recorded = applied,
                Err(e) => tracing::warn!(error = %e, "recording the applied index"),
            }
        }
        if node.raft.metrics().has_changed().is_err() {
            return;
        }
    }
}

async fn keep_cluster_id(node: &Arc<ControlPlaneNode>, data_dir: &std::path::Path) {
    let mut metrics = node.raft.metrics();
    let file = data_dir.join(crate::store::durability_check::CLUSTER_ID_FILE);
    loop {
        if let Some(id) = node.cluster_id() {
            if !file.exists() {
                // The state's id on disk first: a stop right after the file
                // was written found a state without it (sled had not yet
                // flushed the apply), and the next start refused the
                // store as lost.
                if let Err(e) = node.state.flush().await {
                    tracing::error!(error = %e, "flushing the state before recording the cluster id");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                match write_cluster_id(data_dir, &id) {
                    Ok(()) => tracing::info!(cluster_id = %id, "cluster id recorded"),
                    Err(e) => tracing::error!(error = %e, "writing the cluster id file"),
                }
            }
            return;
        }
        let leads = metrics.borrow_and_update().current_leader == Some(node.node_id);
        if leads {
            let id = hex::encode(rand::random::<[u8; 16]>());
            if let Err(e) = node
                .write(Command::SetClusterId {
                    cluster_id: id.clone(),
                })
                .await
            {
                tracing::warn!(error = %e, "setting the cluster id; will retry");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            continue;
        }
        if tokio::time::timeout(std::time::Duration::from_secs(1), metrics.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return;
        }
    }
}

/// Proposes waiting writes: one alone as itself, several as one batch
/// entry, one entry at a time (while it commits, the next gather).
async fn run_coalescer(
    node: std::sync::Weak<ControlPlaneNode>,
    mut waiting: tokio::sync::mpsc::Receiver<Coalesced>,
) {
    let mut held: Option<(Coalesced, usize)> = None;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(COALESCE_IN_FLIGHT));
    loop {
        let (first, first_size) = match held.take() {
            Some(h) => h,
            None => match waiting.recv().await {
                Some(first) => {
                    let size = encoded_size(&first.0);
                    (first, size)
                }
                None => return,
            },
        };
        let mut group = vec![first];
        let mut bytes = first_size;
        while group.len() < COALESCE_AT_MOST && bytes < COALESCE_BYTES {
            match waiting.try_recv() {
                Ok(next) => {
                    let size = encoded_size(&next.0);
                    if bytes + size > COALESCE_BYTES {
                        // It starts the next entry.
                        held = Some((next, size));
                        break;
                    }
                    bytes += size;
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        // Up to COALESCE_IN_FLIGHT entries in flight: raft pipelines their
        // appends, and what arrives meanwhile gathers into the next. (Each
        // agent waits for one write before its next, so no agent's writes
        // can be reordered by this.)
        let Ok(turn) = in_flight.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _turn = turn;
            write_group(&node, group).await;
        });
    }
}

/// Writes a coalesced group (one command alone, else a `batch.v1`) and
/// hands each waiting writer its result.
async fn write_group(node: &ControlPlaneNode, mut group: Vec<Coalesced>) {
    if group.len() == 1 {
        let (cmd, tx) = group.pop().expect("one");
        let _ = tx.send(node.write(cmd).await);
        return;
    }
    let (commands, senders): (Vec<Command>, Vec<_>) = group.into_iter().unzip();
    let n = commands.len();
    match node.write(Command::Batch { commands }).await {
        Ok(CommandResult::Batch(results)) if results.len() == n => {
            for (tx, r) in senders.into_iter().zip(results) {
                let _ = tx.send(Ok(r));
            }
        }
        Ok(other) => {
            let e = WriteError::Raft(format!("a batch of {n} got {other:?}"));
            for tx in senders {
                let _ = tx.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for tx in senders {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}
