//! Model files on the wire: a stored file streamed out in chunks (to an
//! agent, or to another member), a member's missing file pulled from the
//! others, and what the store's refusals mean as gRPC statuses.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vigil_proto::agent::v1::ModelChunk;

use crate::model_blobs::{BlobError, BlobReader, Stored};
use crate::node::ControlPlaneNode;

/// How long a peer may take to send the next chunk of a pull.
const CHUNK_WITHIN: Duration = Duration::from_secs(30);

/// The stream of chunks `FetchModel` and `FetchModelBlob` answer.
pub type ChunkStream = ReceiverStream<Result<ModelChunk, Status>>;

/// What a store refusal means to a caller.
pub fn blob_status(e: BlobError) -> Status {
    match e {
        BlobError::BadDigest(_)
        | BlobError::Empty
        | BlobError::Overrun { .. }
        | BlobError::Short { .. }
        | BlobError::Mismatch { .. } => Status::invalid_argument(e.to_string()),
        BlobError::TooLarge { .. } | BlobError::Storage(_) => {
            Status::resource_exhausted(e.to_string())
        }
        BlobError::BadOffset { .. } => Status::out_of_range(e.to_string()),
        BlobError::NotFound(_) => Status::not_found(e.to_string()),
        BlobError::Io { .. } => {
            tracing::error!(error = %e, "model store");
            Status::internal(e.to_string())
        }
    }
}

/// Streams what `reader` holds, a chunk of at most 1 MiB at a time, each
/// saying the whole file's size; a read error ends the stream with it.
pub fn chunk_stream(mut reader: BlobReader) -> ChunkStream {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let total_size = reader.size();
        loop {
            let next = match reader.next_chunk().await {
                Ok(Some(data)) => Ok(ModelChunk { data, total_size }),
                Ok(None) => return,
                Err(e) => Err(blob_status(e)),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Makes sure this node holds the model file `sha256` of `size` bytes: a
/// file it lacks is pulled from the other members in turn, its size and
/// digest checked before it is kept (one pull per digest at a time; the
/// others wait for it). UNAVAILABLE, with what each member answered, when
/// none has it.
pub async fn ensure_stored(node: &ControlPlaneNode, sha256: &str, size: u64) -> Result<(), Status> {
    let models = &node.models;
    if let Some(stored) = models.stored_size(sha256).map_err(blob_status)? {
        return same_size(sha256, stored, size);
    }
    let lock = models.pull_lock(sha256);
    let _pulling = lock.lock().await;
    if let Some(stored) = models.stored_size(sha256).map_err(blob_status)? {
        return same_size(sha256, stored, size);
    }
    let mut answers = Vec::new();
    for (id, addr) in node.other_members() {
        match pull_from(node, &addr, sha256, size).await {
            Ok(()) => {
                tracing::info!(%sha256, size, from = id, "model file pulled from another member");
                return Ok(());
            }
            Err(why) => {
                tracing::warn!(%sha256, from = id, %why, "pulling a model file");
                answers.push(format!("node {id}: {why}"));
            }
        }
    }
    Err(Status::unavailable(format!(
        "model file {sha256} is not stored on node {} and no other member gave it ({})",
        node.node_id,
        if answers.is_empty() {
            "there is no other member".to_string()
        } else {
            answers.join("; ")
        }
    )))
}

fn same_size(sha256: &str, stored: u64, size: u64) -> Result<(), Status> {
    if stored == size {
        return Ok(());
    }
    Err(Status::internal(format!(
        "model file {sha256} is stored with {stored} bytes, but its record says {size}"
    )))
}

/// One pull of the whole file from the member at `addr`.
async fn pull_from(
    node: &ControlPlaneNode,
    addr: &str,
    sha256: &str,
    size: u64,
) -> Result<(), String> {
    let mut writer = node
        .models
        .begin(sha256, size, &node.storage)
        .map_err(|e| e.to_string())?;
    let mut chunks = node.network().fetch_model_blob(addr, sha256, 0).await?;
    loop {
        let next = tokio::time::timeout(CHUNK_WITHIN, chunks.message())
            .await
            .map_err(|_| format!("no chunk within {CHUNK_WITHIN:?}"))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        let Some(chunk) = next else { break };
        if chunk.total_size != size {
            return Err(format!(
                "it holds {} bytes under that digest, the record says {size}",
                chunk.total_size
            ));
        }
        writer
            .write(&chunk.data, &node.storage)
            .await
            .map_err(|e| e.to_string())?;
    }
    match writer.finish().await.map_err(|e| e.to_string())? {
        Stored::New | Stored::Already => Ok(()),
    }
}
