//! The model RPCs of `vigil.admin.v1.AdminService`: upload a model file
//! (stored by digest beside raft on this node), register its signed
//! record, approve, revoke, roll back, list.

use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};
use vigil_domain::{ModelRecord, ModelState};
use vigil_proto::admin::v1 as pb;

use super::admin_service::{now_unix_nanos, AdminServiceImpl};
use super::model_transfer::blob_status;
use super::Caller;
use crate::model_blobs::Stored;
use crate::raft_types::{Command, CommandResult};

/// How long an upload may wait for its next chunk before it is cut off
/// (and its temporary file removed).
const UPLOAD_CHUNK_WITHIN: Duration = Duration::from_secs(60);

/// The longest reason kept with a state change.
const MAX_REASON: usize = 1024;

/// The upload's next chunk; cut off when it does not come in time.
async fn next_chunk(
    chunks: &mut Streaming<pb::UploadModelChunk>,
) -> Result<Option<pb::UploadModelChunk>, Status> {
    tokio::time::timeout(UPLOAD_CHUNK_WITHIN, chunks.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no upload chunk within {UPLOAD_CHUNK_WITHIN:?}: nothing was stored"
            ))
        })?
}

/// A model command's result as the caller's answer.
fn model_result(result: CommandResult) -> Result<ModelRecord, Status> {
    match result {
        CommandResult::Model(record) => Ok(*record),
        CommandResult::NotFound { reason } => Err(Status::not_found(reason)),
        CommandResult::Refused { reason } => Err(Status::failed_precondition(reason)),
        other => Err(Status::internal(format!("unexpected result {other:?}"))),
    }
}

/// The name and version a request names, checked.
fn version_request(req: &pb::ModelVersionRequest) -> Result<(), Status> {
    vigil_domain::check_model_name(&req.name)
        .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
    if req.version == 0 {
        return Err(Status::invalid_argument("version: must be 1 or more"));
    }
    Ok(())
}

impl AdminServiceImpl {
    /// A record's signature against the trusted keys (there must be some:
    /// a model record is never taken unsigned).
    fn verify_model_signature(&self, record: &ModelRecord, what: &str) -> Result<(), Status> {
        if self.trusted.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{what} refused: this control plane trusts no admin key (--trusted-policy-key), so model records cannot be verified; configure one and sign with `vigilctl model register --key`"
            )));
        }
        self.trusted
            .verify_model(record)
            .map_err(|e| Status::permission_denied(format!("{what} refused: {e}")))
    }

    pub(super) async fn upload_model_rpc(
        &self,
        req: Request<Streaming<pb::UploadModelChunk>>,
    ) -> Result<Response<pb::UploadModelResponse>, Status> {
        let caller = Caller::of(&req);
        let mut chunks = req.into_inner();
        let first = next_chunk(&mut chunks)
            .await?
            .ok_or_else(|| Status::invalid_argument("the upload sent no chunk"))?;
        if first.sha256.is_empty() {
            return Err(Status::invalid_argument(
                "sha256: the first chunk must declare the file's digest and size",
            ));
        }
        let (sha256, size) = (first.sha256.clone(), first.size);
        let node = &self.node;
        let mut writer = node
            .models
            .begin(&sha256, size, &node.storage)
            .map_err(blob_status)?;
        writer
            .write(&first.data, &node.storage)
            .await
            .map_err(blob_status)?;
        while let Some(chunk) = next_chunk(&mut chunks).await? {
            if !chunk.sha256.is_empty() && chunk.sha256 != sha256 {
                return Err(Status::invalid_argument(format!(
                    "sha256: a later chunk declares {:?}, the first {sha256}: nothing was stored",
                    vigil_domain::cut_text(&chunk.sha256, 80)
                )));
            }
            writer
                .write(&chunk.data, &node.storage)
                .await
                .map_err(blob_status)?;
        }
        let stored = writer.finish().await.map_err(|e| {
            tracing::warn!(caller = %caller.actor(), %sha256, error = %e, "model upload refused");
            blob_status(e)
        })?;
        let already_stored = stored == Stored::Already;
        tracing::info!(%sha256, size, already_stored, "model file uploaded");
        self.audit(
            caller.actor(),
            "model.upload",
            format!("model file {sha256}"),
            format!(
                "{size} bytes on node {}{}",
                node.node_id,
                if already_stored {
                    " (stored already)"
                } else {
                    ""
                }
            ),
        )
        .await;
        Ok(Response::new(pb::UploadModelResponse {
            sha256,
            size,
            already_stored,
        }))
    }

    pub(super) async fn register_model_rpc(
        &self,
        req: Request<pb::RegisterModelRequest>,
    ) -> Result<Response<pb::RegisterModelResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let note = vigil_domain::cut_text(&req.note, MAX_REASON);
        let wire = req
            .record
            .ok_or_else(|| Status::invalid_argument("record: must be set"))?;
        let record = ModelRecord::try_from(wire)
            .map_err(|e| Status::invalid_argument(e.within("record").to_string()))?;
        self.verify_model_signature(&record, "model registration")?;
        match self
            .node
            .models
            .stored_size(&record.sha256)
            .map_err(blob_status)?
        {
            None => {
                return Err(Status::failed_precondition(format!(
                    "model file {} is not stored on node {}: upload it to this node first (`vigilctl model register` does both)",
                    record.sha256, self.node.node_id
                )))
            }
            Some(stored) if stored != record.size => {
                return Err(Status::invalid_argument(format!(
                    "record.size: {} bytes, but the stored file {} has {stored}",
                    record.size, record.sha256
                )))
            }
            Some(_) => {}
        }
        let (name, version) = (record.name.clone(), record.version);
        let result = self
            .node
            .write(Command::RegisterModel {
                record,
                actor: caller.actor(),
                at_unix_nanos: now_unix_nanos(),
                note,
            })
            .await?;
        let record = match result {
            CommandResult::Refused { reason } => return Err(Status::already_exists(reason)),
            other => model_result(other)?,
        };
        tracing::info!(%name, version, sha256 = %record.sha256, "model registered");
        Ok(Response::new(pb::RegisterModelResponse {
            record: Some(record.into()),
        }))
    }

    /// Approve or revoke.
    pub(super) async fn set_model_state_rpc(
        &self,
        req: Request<pb::ModelVersionRequest>,
        state: ModelState,
    ) -> Result<Response<pb::ModelVersionResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        version_request(&req)?;
        if state == ModelState::Approved {
            // An approval is only worth what agents will accept: the
            // record must still verify against the keys trusted now.
            self.node.ensure_fresh().await?;
            let record = self
                .node
                .state
                .model_record(&req.name, req.version)
                .map_err(|e| Status::internal(e.to_string()))?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no model {} version {} is registered",
                        req.name, req.version
                    ))
                })?;
            self.verify_model_signature(&record, "model approval")?;
        }
        let result = self
            .node
            .write(Command::SetModelState {
                name: req.name.clone(),
                version: req.version,
                state,
                actor: caller.actor(),
                reason: vigil_domain::cut_text(&req.reason, MAX_REASON),
                at_unix_nanos: now_unix_nanos(),
            })
            .await?;
        let record = model_result(result)?;
        tracing::info!(name = %req.name, version = req.version, %state, "model state changed");
        Ok(Response::new(pb::ModelVersionResponse {
            record: Some(record.into()),
        }))
    }

    pub(super) async fn rollback_model_rpc(
        &self,
        req: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ModelVersionResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        version_request(&req)?;
        let result = self
            .node
            .write(Command::RollbackModel {
                name: req.name.clone(),
                version: req.version,
                actor: caller.actor(),
                reason: vigil_domain::cut_text(&req.reason, MAX_REASON),
                at_unix_nanos: now_unix_nanos(),
            })
            .await?;
        let record = model_result(result)?;
        tracing::warn!(name = %req.name, version = req.version, "model rolled back");
        Ok(Response::new(pb::ModelVersionResponse {
            record: Some(record.into()),
        }))
    }

    pub(super) async fn list_models_rpc(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let name = req.into_inner().name;
        let catalog = self
            .node
            .state
            .model_catalog()
            .map_err(|e| Status::internal(e.to_string()))?;
        let wanted = |n: &str| name.is_empty() || n == name;
        Ok(Response::new(pb::ListModelsResponse {
            models: catalog
                .records()
                .filter(|r| wanted(&r.name))
                .cloned()
                .map(Into::into)
                .collect(),
            active: catalog
                .actives()
                .into_iter()
                .filter(|a| wanted(&a.name))
                .map(Into::into)
                .collect(),
        }))
    }
}
