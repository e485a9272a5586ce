//! The shipper's half of attestation against a fake control plane (a
//! tonic server in the test) and a software TPM: enrollment after Hello,
//! a credential challenge, a quote, the same AK after a reconnect; and,
//! without a TPM, failures that say so.

use std::time::Duration;

use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa};
use vigil_proto::agent::v1::agent_service_server::{AgentService, AgentServiceServer};

use super::*;
use crate::attest::{AttestationKey, EventLogPaths, Tpm, TpmSelection};
use crate::ship::tpm_worker::NO_TPM;

/// One session as the fake control plane sees it.
struct Session {
    from_agent: mpsc::Receiver<pb::AgentMessage>,
    to_agent: mpsc::Sender<Result<pb::ControlMessage, tonic::Status>>,
    heartbeats: usize,
}

impl Session {
    /// The next message other than a heartbeat.
    async fn next(&mut self) -> pb::agent_message::Body {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.from_agent.recv())
                .await
                .expect("a message from the agent within 20 s")
                .expect("the session is open");
            match message.body.expect("a message with a body") {
                pb::agent_message::Body::Heartbeat(_) => self.heartbeats += 1,
                body => return body,
            }
        }
    }

    async fn send(&self, body: pb::control_message::Body) {
        self.to_agent
            .send(Ok(pb::ControlMessage { body: Some(body) }))
            .await
            .unwrap();
    }
}

struct FakeControlPlane {
    sessions: mpsc::Sender<Session>,
}

#[tonic::async_trait]
impl AgentService for FakeControlPlane {
    type StreamStream = ReceiverStream<Result<pb::ControlMessage, tonic::Status>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (agent_tx, from_agent) = mpsc::channel(64);
        let (to_agent, control_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if agent_tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let _ = self
            .sessions
            .send(Session {
                from_agent,
                to_agent,
                heartbeats: 0,
            })
            .await;
        Ok(tonic::Response::new(ReceiverStream::new(control_rx)))
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

    type FetchModelStream = ReceiverStream<Result<pb::ModelChunk, tonic::Status>>;

    async fn fetch_model(
        &self,
        _: tonic::Request<pb::FetchModelRequest>,
    ) -> Result<tonic::Response<Self::FetchModelStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

/// The fake control plane's endpoint and its sessions.
async fn fake_control_plane() -> (String, mpsc::Receiver<Session>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (sessions, accepted) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(FakeControlPlane { sessions }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (endpoint, accepted)
}

/// What a shipper under test needs kept open.
struct Kept {
    _spool_dir: tempfile::TempDir,
    _health: watch::Sender<vigil_domain::SensorCounters>,
    _inventory: watch::Sender<Option<vigil_domain::GpuInventory>>,
    _policy_status: watch::Sender<Option<vigil_domain::PolicyStatus>>,
    _requests: mpsc::Receiver<ControlRequest>,
    models: approved_models::ModelDeployments,
}

/// Starts a shipper with `attestor`, heartbeats every 50 ms.
fn start_shipper(
    endpoint: String,
    attestor: Option<Attestor>,
) -> (tokio::task::JoinHandle<()>, Kept) {
    start_shipper_trusting(endpoint, attestor, vigil_policy::TrustedKeys::default())
}

/// As [`start_shipper`], taking model records `trusted_keys` signed.
fn start_shipper_trusting(
    endpoint: String,
    attestor: Option<Attestor>,
    trusted_keys: vigil_policy::TrustedKeys,
) -> (tokio::task::JoinHandle<()>, Kept) {
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(spool_dir.path()).unwrap();
    let (health_tx, health) = watch::channel(vigil_domain::SensorCounters::default());
    let (inventory_tx, inventory) = watch::channel(None);
    let (policy_tx, policy_status) = watch::channel(None);
    let (requests, requests_rx) = mpsc::channel(16);
    let (models_tx, models) = watch::channel(None);
    let cfg = ShipperConfig {
        endpoints: vec![endpoint],
        tls: None,
        hello: vigil_domain::AgentIdentity {
            agent_id: "tpm-agent".into(),
            hostname: "tpm-host".into(),
            ..Default::default()
        },
        heartbeat: Duration::from_millis(50),
        batch_size: 16,
        window: 64,
        max_backoff: Duration::from_millis(500),
        attestor,
        trusted_keys,
    };
    let links = ShipperLinks {
        health,
        inventory,
        policy_status,
        requests,
        models: std::sync::Arc::new(models_tx),
    };
    let task = tokio::spawn(run(spool, cfg, links, SpoolPressure::default()));
    let kept = Kept {
        _spool_dir: spool_dir,
        _health: health_tx,
        _inventory: inventory_tx,
        _policy_status: policy_tx,
        _requests: requests_rx,
        models,
    };
    (task, kept)
}

/// tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn credential(file: &[u8]) -> pb::CredentialChallenge {
    let body = &file[8..];
    let id_len = u16::from_be_bytes([body[0], body[1]]) as usize + 2;
    pb::CredentialChallenge {
        id_object: body[..id_len].to_vec(),
        encrypted_secret: body[id_len..].to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_enrolls_the_tpm_activates_and_quotes() {
    require_swtpm("a_session_enrolls_the_tpm_activates_and_quotes");
    let ca = SwtpmCa::new();
    let swtpm = Swtpm::manufacture(&ca);
    let selection: TpmSelection = swtpm.tcti().parse().unwrap();
    let attestor = Attestor::new(
        Tpm::new(selection.resolve().unwrap()),
        EventLogPaths::default(),
    );
    let (endpoint, mut sessions) = fake_control_plane().await;
    let (shipper, _kept) = start_shipper(endpoint, Some(attestor));

    let mut session = sessions.recv().await.unwrap();
    assert!(matches!(
        session.next().await,
        pb::agent_message::Body::Hello(_)
    ));
    let pb::agent_message::Body::TpmEnrollment(enrollment) = session.next().await else {
        panic!("no TpmEnrollment after Hello");
    };
    assert_eq!(enrollment.ek_certificate.first(), Some(&0x30));

    // MakeCredential to the EK for the AK's name, as the verifier does.
    let ak = AttestationKey {
        public: enrollment.ak_public.clone(),
        private: Vec::new(),
    };
    let dir = swtpm.dir();
    std::fs::write(dir.join("ek.pub"), &enrollment.ek_public).unwrap();
    std::fs::write(dir.join("secret.bin"), b"a secret for this AK").unwrap();
    swtpm.tpm2(
        "tpm2_makecredential",
        &[
            "--tcti",
            "none",
            "-e",
            "ek.pub",
            "-s",
            "secret.bin",
            "-n",
            &hex::encode(ak.name().unwrap()),
            "-o",
            "cred.out",
        ],
    );
    let challenge = credential(&std::fs::read(dir.join("cred.out")).unwrap());
    session
        .send(pb::control_message::Body::CredentialChallenge(challenge))
        .await;
    let pb::agent_message::Body::CredentialActivated(activated) = session.next().await else {
        panic!("no CredentialActivated");
    };
    assert_eq!(activated.secret, b"a secret for this AK");

    session
        .send(pb::control_message::Body::AttestRequest(
            pb::AttestRequest {
                nonce: b"nonce of the verifier".to_vec(),
                hash_alg: 0x000b,
                pcrs: (0..8).collect(),
                want_event_logs: true,
            },
        ))
        .await;
    let pb::agent_message::Body::Quote(quote) = session.next().await else {
        panic!("no Quote");
    };
    assert_eq!(quote.nonce, b"nonce of the verifier");
    assert_eq!(quote.pcrs[0].values.len(), 8);
    assert!(
        session.heartbeats > 0,
        "heartbeats flow beside the TPM's work"
    );

    // The control plane ends the session: the agent reconnects and
    // enrolls the same AK.
    drop(session);
    let mut session = sessions.recv().await.unwrap();
    assert!(matches!(
        session.next().await,
        pb::agent_message::Body::Hello(_)
    ));
    let pb::agent_message::Body::TpmEnrollment(again) = session.next().await else {
        panic!("no TpmEnrollment after the reconnect");
    };
    assert_eq!(again, enrollment);
    shipper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tpm_a_session_enrolls_none_and_says_so() {
    let (endpoint, mut sessions) = fake_control_plane().await;
    let (shipper, _kept) = start_shipper(endpoint, None);
    let mut session = sessions.recv().await.unwrap();
    assert!(matches!(
        session.next().await,
        pb::agent_message::Body::Hello(_)
    ));
    session
        .send(pb::control_message::Body::AttestRequest(
            pb::AttestRequest {
                nonce: b"n".to_vec(),
                hash_alg: 0x000b,
                pcrs: vec![0],
                want_event_logs: false,
            },
        ))
        .await;
    // Nothing but heartbeats before the answer: no TpmEnrollment.
    let pb::agent_message::Body::AttestationFailure(failure) = session.next().await else {
        panic!("not an AttestationFailure");
    };
    assert_eq!(failure.nonce, b"n");
    assert_eq!(failure.reason, NO_TPM);
    shipper.abort();
}

/// Approved models from the control plane reach the agent's watch channel
/// verified: a record signed by an unknown key is dropped, and a later,
/// empty set (the host untrusted) replaces the first.
#[tokio::test]
async fn approved_models_are_verified_and_published_on_the_watch_channel() {
    let key = vigil_policy::SigningKey::generate();
    let trusted = vigil_policy::TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
    let (endpoint, mut sessions) = fake_control_plane().await;
    let (task, mut kept) = start_shipper_trusting(endpoint, None, trusted);
    let mut session = tokio::time::timeout(Duration::from_secs(20), sessions.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        session.next().await,
        pb::agent_message::Body::Hello(_)
    ));
    let record = |version: u64, signer: &vigil_policy::SigningKey| {
        let mut r = vigil_domain::ModelRecord {
            name: "m".into(),
            version,
            sha256: format!("{version:064x}"),
            size: 1,
            format: "onnx".into(),
            state: vigil_domain::ModelState::Approved,
            ..Default::default()
        };
        signer.sign_model(&mut r);
        vigil_proto::types::v1::ModelRecord::from(r)
    };
    let rogue = vigil_policy::SigningKey::generate();
    session
        .send(pb::control_message::Body::Models(pb::ApprovedModels {
            models: vec![pb::ModelDeployment {
                active: Some(record(3, &rogue)),
                fallbacks: vec![record(2, &key), record(1, &key)],
            }],
        }))
        .await;
    tokio::time::timeout(Duration::from_secs(10), kept.models.changed())
        .await
        .unwrap()
        .unwrap();
    let got = kept.models.borrow_and_update().clone().expect("a set");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].active.version, 2);
    assert_eq!(got[0].fallbacks.len(), 1);
    session
        .send(pb::control_message::Body::Models(pb::ApprovedModels {
            models: vec![],
        }))
        .await;
    tokio::time::timeout(Duration::from_secs(10), kept.models.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*kept.models.borrow(), Some(vec![]));
    task.abort();
}
