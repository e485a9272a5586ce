//! Model governance (issue #24) against a real control plane over mutual
//! TLS, driven by vigilctl and raw agent sessions: versions uploaded,
//! signed, registered, approved; an agent's session is sent its approved
//! models (the active version and the fallbacks) and fetches the exact
//! bytes by digest, from an offset too; a rollback pins an older version
//! until a newer one is approved; a revocation withdraws one. Then the
//! attacks of a network peer, a low-role operator and a rogue agent, each
//! refused with a clear error and nothing stored; and a three-node
//! cluster where a node that never saw the upload pulls the file from a
//! peer for its agent. Unprivileged: processes and loopback only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;
use vigil_integration::raw_agent::{hello, RawAgentStream};
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{
    binary, free_port, try_connect, try_wait_for, wait_leader_of, ControlPlane,
};
use vigil_pki::{Identity, IssuedCertificate, OperatorRole};
use vigil_policy::SigningKey;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;
use vigil_proto::agent::v1 as agent_pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::types::v1 as types_pb;

/// The largest model the control planes here take (--max-model-mib).
const MAX_MODEL_MIB: u64 = 4;

/// A model file of `len` bytes, different for each `seed`.
fn model_bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest([seed]).to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn write_model(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Runs vigilctl with `flags` (endpoint and TLS files) and `args`.
fn vigilctl(flags: &[String], args: &[&str]) -> Output {
    Command::new(binary("vigilctl"))
        .args(flags)
        .args(args)
        .output()
        .expect("running vigilctl")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn succeeds(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (name, active version, fallback versions) of each deployment.
fn summary(m: &agent_pb::ApprovedModels) -> Vec<(String, u64, Vec<u64>)> {
    m.models
        .iter()
        .map(|d| {
            let active = d.active.as_ref().expect("an active record");
            (
                active.name.clone(),
                active.version,
                d.fallbacks.iter().map(|f| f.version).collect(),
            )
        })
        .collect()
}

/// Waits for an approved-models message whose summary is `want`.
async fn models_become(stream: &mut RawAgentStream, want: Vec<(&str, u64, Vec<u64>)>) {
    let want: Vec<(String, u64, Vec<u64>)> = want
        .into_iter()
        .map(|(n, a, f)| (n.to_string(), a, f))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no models message {want:?}; saw {seen:?}");
        let m = stream.next_models(left).await;
        let got = summary(&m);
        if got == want {
            return;
        }
        seen.push(got);
    }
}

/// The whole model file `sha256` from `offset`, as the control plane
/// streams it to `agent_id`, or the refusal.
async fn fetch(
    channel: Channel,
    agent_id: &str,
    sha256: &str,
    offset: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut client = AgentServiceClient::new(channel);
    let mut chunks = client
        .fetch_model(agent_pb::FetchModelRequest {
            sha256: sha256.to_string(),
            offset,
            agent_id: agent_id.to_string(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = chunks.message().await? {
        assert!(chunk.data.len() <= 1 << 20, "a chunk over 1 MiB");
        out.extend(chunk.data);
    }
    Ok(out)
}

/// An upload of `data` declaring `sha256` and `size` (raw, for attacks).
async fn upload_raw(
    admin: &mut AdminServiceClient<Channel>,
    sha256: &str,
    size: u64,
    data: &[u8],
) -> Result<admin_pb::UploadModelResponse, tonic::Status> {
    let mut chunks: Vec<admin_pb::UploadModelChunk> = data
        .chunks(1 << 20)
        .map(|c| admin_pb::UploadModelChunk {
            data: c.to_vec(),
            sha256: String::new(),
            size: 0,
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(admin_pb::UploadModelChunk::default());
    }
    chunks[0].sha256 = sha256.to_string();
    chunks[0].size = size;
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.len());
    for c in chunks {
        tx.send(c).await.unwrap();
    }
    drop(tx);
    admin
        .upload_model(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner())
}

/// A signed record for `data` as model `name` version `version`.
fn signed_record(key: &SigningKey, name: &str, version: u64, data: &[u8]) -> types_pb::ModelRecord {
    let mut r = vigil_domain::ModelRecord {
        name: name.into(),
        version,
        sha256: sha(data),
        size: data.len() as u64,
        format: "onnx".into(),
        ..Default::default()
    };
    key.sign_model(&mut r);
    r.into()
}

/// The file names in a node's model store.
fn stored_files(data_dir: &Path) -> Vec<String> {
    let dir = data_dir.join("model-blobs.v1");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

struct Fleet {
    fleet: TlsFleet,
    port: u16,
    cp: ControlPlane,
    admin_key: PathBuf,
    key: SigningKey,
    admin_cert: IssuedCertificate,
}

impl Fleet {
    fn ctl(&self, name: &str, who: &IssuedCertificate) -> Vec<String> {
        self.fleet.vigilctl_flags(self.port, name, who)
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(
            self.fleet
                .channel(self.port, &self.admin_cert)
                .await
                .unwrap(),
        )
    }

    async fn agent_channel(&self, agent: &IssuedCertificate) -> Channel {
        self.fleet.channel(self.port, agent).await.unwrap()
    }

    /// A session of `agent_id` on `hostname`, over TLS with its certificate.
    async fn session(
        &self,
        cert: &IssuedCertificate,
        agent_id: &str,
        hostname: &str,
    ) -> RawAgentStream {
        RawAgentStream::open_on(
            self.agent_channel(cert).await,
            16,
            vec![hello(agent_id, hostname)],
        )
        .await
    }
}

async fn start_fleet(tmp: &Path) -> Fleet {
    let fleet = TlsFleet::new(tmp, "fleet");
    let key = SigningKey::generate();
    let admin_key = tmp.join("admin.key");
    std::fs::write(&admin_key, key.secret_hex()).unwrap();
    let port = free_port();
    let mut flags = fleet.node_flags("1");
    let ca = fleet.ca_file.display().to_string();
    flags.extend(
        [
            "--trusted-policy-key",
            &key.public_hex(),
            "--max-model-mib",
            &MAX_MODEL_MIB.to_string(),
            // Attestation on (any self-signed root will do: the raw agents
            // here have no TPM), so that a host can be made untrusted.
            "--tpm-ca",
            &ca,
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_with(&tmp.join("cp"), port, &flags);
    let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let admin = AdminServiceClient::new(fleet.channel(port, &admin_cert).await.unwrap());
    wait_leader_of(&admin).await;
    Fleet {
        fleet,
        port,
        cp,
        admin_key,
        key,
        admin_cert,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_versions_reach_the_agent_and_roll_back_and_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let f = start_fleet(tmp.path()).await;
    let alice = f.ctl("alice", &f.admin_cert);
    let key = f.admin_key.display().to_string();
    let (v1, v2, v3) = (
        model_bytes(1, 1_500_000),
        model_bytes(2, 2_300_000),
        model_bytes(3, 700_000),
    );
    let files: Vec<String> = [("v1.onnx", &v1), ("v2.onnx", &v2), ("v3.onnx", &v3)]
        .iter()
        .map(|(n, d)| write_model(tmp.path(), n, d).display().to_string())
        .collect();

    let agent_cert = f.fleet.issue(Identity::agent("a1").unwrap());
    let mut session = f.session(&agent_cert, "a1", "h1").await;
    models_become(&mut session, vec![]).await;

    let out = succeeds(vigilctl(
        &alice,
        &[
            "model",
            "register",
            "resnet",
            "1",
            &files[0],
            "--key",
            &key,
            "--memory-max",
            "512MiB",
            "--cpu-millicores",
            "1500",
            "--listen",
            "unix:/run/vigil/resnet.sock",
            "--note",
            "first cut",
        ],
    ));
    assert!(out.contains("registered model resnet version 1"), "{out}");
    assert!(out.contains(&sha(&v1)), "{out}");
    succeeds(vigilctl(
        &alice,
        &["model", "register", "resnet", "2", &files[1], "--key", &key],
    ));
    // Registered is not approved: nothing to serve yet.
    let listed = succeeds(vigilctl(&alice, &["model", "list"]));
    assert!(listed.contains("resnet  1  registered  -"), "{listed}");
    succeeds(vigilctl(
        &alice,
        &["model", "approve", "resnet", "1", "--reason", "evaluated"],
    ));
    succeeds(vigilctl(&alice, &["model", "approve", "resnet", "2"]));
    models_become(&mut session, vec![("resnet", 2, vec![1])]).await;

    // The exact bytes, whole and from an offset (a resumed transfer).
    let channel = f.agent_channel(&agent_cert).await;
    assert_eq!(fetch(channel.clone(), "", &sha(&v2), 0).await.unwrap(), v2);
    assert_eq!(
        fetch(channel.clone(), "", &sha(&v2), 1_234_567)
            .await
            .unwrap(),
        v2[1_234_567..]
    );
    assert_eq!(fetch(channel.clone(), "", &sha(&v1), 0).await.unwrap(), v1);
    let past = fetch(channel.clone(), "", &sha(&v1), v1.len() as u64 + 1)
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");

    // A rollback on purpose: version 1 pinned, 2 no longer served.
    let out = succeeds(vigilctl(
        &alice,
        &[
            "model",
            "rollback",
            "resnet",
            "1",
            "--reason",
            "v2 misclassifies",
        ],
    ));
    assert!(out.contains("serves version 1"), "{out}");
    models_become(&mut session, vec![("resnet", 1, vec![])]).await;
    let above_pin = fetch(channel.clone(), "", &sha(&v2), 0).await.unwrap_err();
    assert_eq!(above_pin.code(), Code::PermissionDenied, "{above_pin:?}");
    let listed = succeeds(vigilctl(&alice, &["model", "list"]));
    assert!(
        listed.contains("resnet  1  approved  active (pinned)"),
        "{listed}"
    );

    // A newer version approved ends the rollback.
    succeeds(vigilctl(
        &alice,
        &["model", "register", "resnet", "3", &files[2], "--key", &key],
    ));
    succeeds(vigilctl(&alice, &["model", "approve", "resnet", "3"]));
    models_become(&mut session, vec![("resnet", 3, vec![2, 1])]).await;

    // Revoked: never served again, nor approved again.
    succeeds(vigilctl(
        &alice,
        &["model", "revoke", "resnet", "3", "--reason", "leaks data"],
    ));
    models_become(&mut session, vec![("resnet", 2, vec![1])]).await;
    let again = vigilctl(&alice, &["model", "approve", "resnet", "3"]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("never approved again"),
        "{}",
        text(&again)
    );
    let revoked = fetch(channel.clone(), "", &sha(&v3), 0).await.unwrap_err();
    assert_eq!(revoked.code(), Code::PermissionDenied, "{revoked:?}");

    // The list, as JSON: states, the active version, who and why.
    let json = succeeds(vigilctl(&alice, &["model", "list", "--json"]));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let row = |v: u64| {
        listed
            .iter()
            .find(|r| r["version"] == v)
            .unwrap_or_else(|| panic!("version {v} in {json}"))
    };
    assert_eq!(row(1)["state"], "approved");
    assert_eq!(row(1)["reason"], "evaluated");
    assert_eq!(row(1)["memory_max_bytes"], 512u64 << 20);
    assert_eq!(row(1)["listen"], "unix:/run/vigil/resnet.sock");
    assert_eq!(row(2)["active"], true);
    assert_eq!(row(2)["pinned"], false);
    assert_eq!(row(3)["state"], "revoked");
    assert_eq!(row(3)["reason"], "leaks data");
    assert!(
        row(1)["registered_by"].as_str().unwrap().contains("alice"),
        "{json}"
    );

    // Every change is in the audit chain, with who and why.
    let entries = f
        .admin()
        .await
        .list_audit(admin_pb::ListAuditRequest {
            after_index: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let model_entries: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.action.starts_with("model."))
        .map(|e| (e.action.clone(), e.subject.clone()))
        .collect();
    for (action, subject) in [
        ("model.upload", format!("model file {}", sha(&v1))),
        ("model.register", "model resnet version 1".to_string()),
        ("model.approve", "model resnet version 2".to_string()),
        ("model.rollback", "model resnet version 1".to_string()),
        ("model.revoke", "model resnet version 3".to_string()),
    ] {
        assert!(
            model_entries.contains(&(action.to_string(), subject.clone())),
            "{action} {subject} not in {model_entries:?}"
        );
    }
    let rollback = entries
        .iter()
        .find(|e| e.action == "model.rollback")
        .unwrap();
    assert!(rollback.actor.contains("alice"), "{rollback:?}");
    assert!(rollback.detail.contains("v2 misclassifies"), "{rollback:?}");
    let verify = f
        .admin()
        .await
        .verify_audit(admin_pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verify.error, "", "the audit chain verifies");

    // A session opened now starts with the same set.
    let mut later = f.session(&agent_cert, "a1", "h1").await;
    models_become(&mut later, vec![("resnet", 2, vec![1])]).await;
    drop(f.cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_low_roles_and_rogue_agents_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let f = start_fleet(tmp.path()).await;
    let alice = f.ctl("alice", &f.admin_cert);
    let key = f.admin_key.display().to_string();
    let good = model_bytes(10, 1_100_000);
    let good_file = write_model(tmp.path(), "good.onnx", &good)
        .display()
        .to_string();
    succeeds(vigilctl(
        &alice,
        &["model", "register", "m", "1", &good_file, "--key", &key],
    ));
    succeeds(vigilctl(&alice, &["model", "approve", "m", "1"]));
    let mut admin = f.admin().await;
    let data_dir = f.cp.data_dir.clone();
    let baseline = stored_files(&data_dir);
    assert_eq!(baseline, vec![sha(&good)]);

    // A record signed by a key the control plane does not trust.
    let rogue_key = tmp.path().join("rogue.key");
    std::fs::write(&rogue_key, SigningKey::generate().secret_hex()).unwrap();
    let forged = vigilctl(
        &alice,
        &[
            "model",
            "register",
            "m",
            "2",
            &good_file,
            "--key",
            &rogue_key.display().to_string(),
        ],
    );
    assert_eq!(forged.status.code(), Some(5), "{}", text(&forged));
    assert!(
        text(&forged).contains("not a trusted policy key"),
        "{}",
        text(&forged)
    );
    // A trusted signature over a widened record (hosts added after signing).
    let mut widened = signed_record(&f.key, "m", 2, &good);
    widened.hosts.push("everywhere".into());
    let refused = admin
        .register_model(admin_pb::RegisterModelRequest {
            record: Some(widened),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A signed record of a file never uploaded.
    let never = model_bytes(11, 1000);
    let refused = admin
        .register_model(admin_pb::RegisterModelRequest {
            record: Some(signed_record(&f.key, "m", 2, &never)),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("is not stored on node"),
        "{refused:?}"
    );
    // The same version again with another file.
    let other = model_bytes(12, 2000);
    upload_raw(&mut admin, &sha(&other), other.len() as u64, &other)
        .await
        .unwrap();
    let refused = admin
        .register_model(admin_pb::RegisterModelRequest {
            record: Some(signed_record(&f.key, "m", 1, &other)),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    // Bad names and versions, by field.
    let mut bad_name = signed_record(&f.key, "m", 3, &other);
    bad_name.name = "../../etc".into();
    let refused = admin
        .register_model(admin_pb::RegisterModelRequest {
            record: Some(bad_name),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("record.name:"), "{refused:?}");
    let mut stored = baseline.clone();
    stored.push(sha(&other));
    stored.sort();

    // Uploads whose bytes are not what they declare: nothing stored, no
    // temporary file left.
    let fake = model_bytes(13, 1_500_000);
    let refused = upload_raw(&mut admin, &sha(&good[..1000]), fake.len() as u64, &fake)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("nothing was stored"),
        "{refused:?}"
    );
    let refused = upload_raw(&mut admin, &sha(&fake), 1000, &fake)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("run past"), "{refused:?}");
    let refused = upload_raw(&mut admin, &sha(&fake), fake.len() as u64 + 5, &fake)
        .await
        .unwrap_err();
    assert!(refused.message().contains("ended after"), "{refused:?}");
    // Over the size limit: refused before a byte is written.
    let huge = (MAX_MODEL_MIB << 20) + 1;
    let refused = upload_raw(&mut admin, &sha(b"x"), huge, b"x")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("--max-model-mib"), "{refused:?}");
    // Digests that are not exactly 64 lowercase hex characters.
    for bad in [
        "../../../../etc/passwd".to_string(),
        format!("../{}", &sha(b"x")[3..]),
        sha(b"x").to_uppercase(),
        sha(b"x")[..40].to_string(),
    ] {
        let refused = upload_raw(&mut admin, &bad, 1, b"x").await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
    }
    assert_eq!(
        stored_files(&data_dir),
        stored,
        "nothing else stored, no temporary file"
    );

    // Operators below admin: refused by role, and audited.
    let viewer = f
        .fleet
        .issue(Identity::operator(OperatorRole::Viewer, "bob").unwrap());
    let analyst = f
        .fleet
        .issue(Identity::operator(OperatorRole::Analyst, "ann").unwrap());
    for (name, who) in [("bob", &viewer), ("ann", &analyst)] {
        let flags = f.ctl(name, who);
        for args in [
            vec!["model", "register", "m", "5", &good_file, "--key", &key],
            vec!["model", "approve", "m", "1"],
            vec!["model", "rollback", "m", "1"],
            vec!["model", "revoke", "m", "1"],
        ] {
            let out = vigilctl(&flags, &args);
            assert_eq!(
                out.status.code(),
                Some(5),
                "{name} {args:?}: {}",
                text(&out)
            );
            assert!(text(&out).contains("admin role"), "{}", text(&out));
        }
        // Reading is for every role.
        let listed = succeeds(vigilctl(&flags, &["model", "list"]));
        assert!(listed.contains("m  1  approved  active"), "{listed}");
    }
    try_wait_for(
        "the denials in the audit log",
        Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move {
                let entries = admin
                    .list_audit(admin_pb::ListAuditRequest {
                        after_index: 0,
                        limit: 1000,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .entries;
                let denied = |who: &str, rpc: &str| {
                    entries.iter().any(|e| {
                        e.action == "request.denied"
                            && e.actor.contains(who)
                            && e.subject.ends_with(rpc)
                    })
                };
                (denied("bob", "/ApproveModel") && denied("ann", "/RollbackModel")).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Rogue agents. One scoped record for another host, one registered
    // but never approved.
    let scoped = model_bytes(14, 3000);
    let scoped_file = write_model(tmp.path(), "scoped.onnx", &scoped)
        .display()
        .to_string();
    succeeds(vigilctl(
        &alice,
        &[
            "model",
            "register",
            "scoped",
            "1",
            &scoped_file,
            "--key",
            &key,
            "--host",
            "a2",
        ],
    ));
    succeeds(vigilctl(&alice, &["model", "approve", "scoped", "1"]));
    let pending = model_bytes(15, 3000);
    let pending_file = write_model(tmp.path(), "pending.onnx", &pending)
        .display()
        .to_string();
    succeeds(vigilctl(
        &alice,
        &[
            "model",
            "register",
            "pending",
            "1",
            &pending_file,
            "--key",
            &key,
        ],
    ));

    let a1 = f.fleet.issue(Identity::agent("a1").unwrap());
    let a2 = f.fleet.issue(Identity::agent("a2").unwrap());
    let mut s1 = f.session(&a1, "a1", "h1").await;
    let mut s2 = f.session(&a2, "a2", "h2").await;
    models_become(&mut s1, vec![("m", 1, vec![])]).await;
    models_become(&mut s2, vec![("m", 1, vec![]), ("scoped", 1, vec![])]).await;
    let c1 = f.agent_channel(&a1).await;
    let c2 = f.agent_channel(&a2).await;
    assert_eq!(
        fetch(c2.clone(), "", &sha(&scoped), 0).await.unwrap(),
        scoped
    );
    let code = |r: Result<Vec<u8>, tonic::Status>| r.unwrap_err().code();
    // Scoped to another host, not approved, unknown.
    assert_eq!(
        code(fetch(c1.clone(), "", &sha(&scoped), 0).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(fetch(c1.clone(), "", &sha(&pending), 0).await),
        Code::PermissionDenied
    );
    // An agent that names itself after the host a record is scoped to
    // gets nothing of it: scopes name agent ids, which certificates prove,
    // never the hostname an agent says of itself.
    let a3 = f.fleet.issue(Identity::agent("a3").unwrap());
    let mut s3 = f.session(&a3, "a3", "a2").await;
    models_become(&mut s3, vec![("m", 1, vec![])]).await;
    let c3 = f.agent_channel(&a3).await;
    assert_eq!(
        code(fetch(c3.clone(), "", &sha(&scoped), 0).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(fetch(c1.clone(), "", &sha(b"never"), 0).await),
        Code::NotFound
    );
    // Malformed digests.
    for bad in [
        "../../etc/shadow".to_string(),
        sha(&good).to_uppercase(),
        sha(&good)[..10].to_string(),
    ] {
        assert_eq!(
            code(fetch(c1.clone(), "", &bad, 0).await),
            Code::InvalidArgument,
            "{bad}"
        );
    }
    // Posing as the other agent.
    let posed = fetch(c1.clone(), "a2", &sha(&scoped), 0).await.unwrap_err();
    assert_eq!(posed.code(), Code::PermissionDenied, "{posed:?}");
    assert!(
        posed.message().contains("certificate is for \"a1\""),
        "{posed:?}"
    );
    // An operator is not an agent.
    let by_admin = fetch(
        f.fleet.channel(f.port, &f.admin_cert).await.unwrap(),
        "a1",
        &sha(&good),
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(by_admin.code(), Code::PermissionDenied, "{by_admin:?}");

    // A host that fails attestation is sent an empty set and fetches
    // nothing.
    let a3 = f.fleet.issue(Identity::agent("a3").unwrap());
    let mut s3 = f.session(&a3, "a3", "h3").await;
    models_become(&mut s3, vec![("m", 1, vec![])]).await;
    let c3 = f.agent_channel(&a3).await;
    assert_eq!(fetch(c3.clone(), "", &sha(&good), 0).await.unwrap(), good);
    s3.send(agent_pb::AgentMessage {
        body: Some(agent_pb::agent_message::Body::TpmEnrollment(
            agent_pb::TpmEnrollment {
                ek_certificate: b"not a certificate".to_vec(),
                ek_public: vec![1, 2, 3],
                ak_public: vec![4, 5, 6],
            },
        )),
    })
    .await;
    models_become(&mut s3, vec![]).await;
    let untrusted = fetch(c3.clone(), "", &sha(&good), 0).await.unwrap_err();
    assert_eq!(untrusted.code(), Code::PermissionDenied, "{untrusted:?}");
    assert!(untrusted.message().contains("untrusted"), "{untrusted:?}");
    // The others are unaffected.
    assert_eq!(fetch(c1.clone(), "", &sha(&good), 0).await.unwrap(), good);
    drop((s1, s2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_saw_the_upload_pulls_the_file_from_a_peer_for_its_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let key_file = tmp.path().join("admin.key");
    std::fs::write(&key_file, key.secret_hex()).unwrap();
    let public = key.public_hex();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let node = |id: u64, join: bool| {
        let mut flags = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--trusted-policy-key".into(),
            public.clone(),
        ];
        if join {
            flags.extend(["--join".to_string(), format!("127.0.0.1:{}", ports[0])]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        ControlPlane::start_with(
            &tmp.path().join(format!("node-{id}")),
            ports[id as usize - 1],
            &flags,
        )
    };
    let one = node(1, false);
    one.wait_leader().await;
    let two = node(2, true);
    let three = node(3, true);
    let mut admin = AdminServiceClient::new(try_connect(&one.endpoint()).await.unwrap());
    for (id, port) in [(2u64, ports[1]), (3, ports[2])] {
        admin
            .add_node(admin_pb::AddNodeRequest {
                node_id: id,
                address: format!("127.0.0.1:{port}"),
            })
            .await
            .unwrap_or_else(|e| panic!("adding node {id}: {e}"));
    }

    // Registered and approved through node 1 alone.
    let data = model_bytes(20, 2_600_000);
    let file = write_model(tmp.path(), "m.onnx", &data)
        .display()
        .to_string();
    let flags = vec!["--endpoint".to_string(), one.endpoint()];
    let k = key_file.display().to_string();
    succeeds(vigilctl(
        &flags,
        &["model", "register", "m", "1", &file, "--key", &k],
    ));
    succeeds(vigilctl(&flags, &["model", "approve", "m", "1"]));
    assert_eq!(stored_files(&one.data_dir), vec![sha(&data)]);
    assert!(stored_files(&three.data_dir).is_empty());

    // An agent of node 3: sent the model once node 3 has applied it, and
    // its fetch makes node 3 pull the file from node 1, checked.
    let mut session =
        RawAgentStream::open_on(three.channel().await, 16, vec![hello("far", "far-host")]).await;
    models_become(&mut session, vec![("m", 1, vec![])]).await;
    let got = fetch(three.channel().await, "far", &sha(&data), 0)
        .await
        .unwrap();
    assert_eq!(got, data);
    assert_eq!(stored_files(&three.data_dir), vec![sha(&data)]);
    let log = std::fs::read_to_string(&three.log).unwrap_or_default();
    assert!(
        log.contains("model file pulled from another member"),
        "{log}"
    );
    // Again, from an offset: now served from node 3's own store.
    let tail = fetch(three.channel().await, "far", &sha(&data), 2_000_000)
        .await
        .unwrap();
    assert_eq!(tail, data[2_000_000..]);
    // Node 2 had no agent asking: it holds nothing.
    assert!(stored_files(&two.data_dir).is_empty());
    // Without TLS the request must name its agent.
    let anonymous = fetch(three.channel().await, "", &sha(&data), 0)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::InvalidArgument, "{anonymous:?}");
}
