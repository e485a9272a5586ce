//! The worker against a software TPM: enrollment, quotes with their
//! logs, failures that carry the request's nonce, and a full queue.

use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa};

use super::*;
use crate::attest::{EventLogPaths, Tpm, TpmSelection};

fn attestor(swtpm: &Swtpm, logs: EventLogPaths) -> Attestor {
    let selection: TpmSelection = swtpm.tcti().parse().unwrap();
    Attestor::new(Tpm::new(selection.resolve().unwrap()), logs)
}

/// Queues `job`, which must not be refused.
fn queue(worker: &TpmWorker, job: TpmJob) {
    assert!(worker.submit(job).is_none(), "refused");
}

fn body(message: pb::AgentMessage) -> pb::agent_message::Body {
    message.body.expect("a message with a body")
}

fn quote_request(nonce: &[u8], hash_alg: u32) -> pb::AttestRequest {
    pb::AttestRequest {
        nonce: nonce.to_vec(),
        hash_alg,
        pcrs: (0..8).collect(),
        want_event_logs: true,
    }
}

#[tokio::test]
async fn the_worker_enrolls_quotes_and_fails_with_the_nonce() {
    require_swtpm("the_worker_enrolls_quotes_and_fails_with_the_nonce");
    let ca = SwtpmCa::new();
    let swtpm = Swtpm::manufacture(&ca);
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(logs.path().join("boot"), b"boot events").unwrap();
    let attestor = attestor(
        &swtpm,
        EventLogPaths {
            boot: logs.path().join("boot"),
            ima: logs.path().join("no-ima"),
        },
    );
    let (tx, mut answers) = mpsc::channel(8);
    let worker = TpmWorker::start(attestor.clone(), tx);
    queue(&worker, TpmJob::Enroll);
    queue(&worker, TpmJob::Quote(quote_request(b"nonce-1", 0x000b)));
    queue(&worker, TpmJob::Quote(quote_request(b"nonce-2", 0x0012)));
    queue(
        &worker,
        TpmJob::Activate(pb::CredentialChallenge {
            id_object: vec![0, 1],
            encrypted_secret: vec![],
        }),
    );

    // In the order asked.
    let pb::agent_message::Body::TpmEnrollment(enrollment) = body(answers.recv().await.unwrap())
    else {
        panic!("not an enrollment");
    };
    assert_eq!(enrollment.ek_certificate.first(), Some(&0x30));
    assert!(!enrollment.ek_public.is_empty() && !enrollment.ak_public.is_empty());
    let pb::agent_message::Body::Quote(quote) = body(answers.recv().await.unwrap()) else {
        panic!("not a quote");
    };
    assert_eq!(quote.nonce, b"nonce-1");
    assert_eq!(quote.pcrs.len(), 1);
    assert_eq!(quote.pcrs[0].hash_alg, 0x000b);
    let indices: Vec<u32> = quote.pcrs[0].values.iter().map(|v| v.index).collect();
    assert_eq!(indices, (0..8).collect::<Vec<_>>());
    assert_eq!(quote.boot_event_log, b"boot events");
    assert!(quote.ima_log.is_empty(), "no IMA log to read");
    assert!(!quote.attest.is_empty() && !quote.signature.is_empty());
    let pb::agent_message::Body::AttestationFailure(failure) = body(answers.recv().await.unwrap())
    else {
        panic!("not a failure");
    };
    assert_eq!(failure.nonce, b"nonce-2");
    assert!(
        failure
            .reason
            .starts_with("TPM quote: PCR bank TPM_ALG_ID 0x0012"),
        "{}",
        failure.reason
    );
    let pb::agent_message::Body::AttestationFailure(failure) = body(answers.recv().await.unwrap())
    else {
        panic!("not a failure");
    };
    assert!(failure.nonce.is_empty());
    assert!(
        failure.reason.starts_with("TPM credential activation: "),
        "{}",
        failure.reason
    );

    // A new session (a reconnect) enrolls the same AK.
    drop(worker);
    let (tx, mut answers) = mpsc::channel(8);
    let worker = TpmWorker::start(attestor, tx);
    queue(&worker, TpmJob::Enroll);
    let pb::agent_message::Body::TpmEnrollment(again) = body(answers.recv().await.unwrap()) else {
        panic!("not an enrollment");
    };
    assert_eq!(again, enrollment);
}

#[tokio::test]
async fn a_full_queue_answers_busy_at_once() {
    require_swtpm("a_full_queue_answers_busy_at_once");
    let ca = SwtpmCa::new();
    let swtpm = Swtpm::manufacture(&ca);
    let (tx, mut answers) = mpsc::channel(8);
    let worker = TpmWorker::start(attestor(&swtpm, EventLogPaths::default()), tx);
    // On this single-threaded runtime the worker takes nothing before the
    // test yields: the queue holds QUEUED_JOBS, the next is refused.
    for i in 0..QUEUED_JOBS {
        queue(&worker, TpmJob::Quote(quote_request(&[i as u8], 0x000b)));
    }
    let refused = worker
        .submit(TpmJob::Quote(quote_request(b"late", 0x000b)))
        .expect("a job past the queue's room is refused");
    let pb::agent_message::Body::AttestationFailure(failure) = body(refused) else {
        panic!("not a failure");
    };
    assert_eq!(failure.nonce, b"late");
    assert!(
        failure.reason.contains("the TPM is busy"),
        "{}",
        failure.reason
    );
    for i in 0..QUEUED_JOBS {
        let pb::agent_message::Body::Quote(quote) = body(answers.recv().await.unwrap()) else {
            panic!("not a quote");
        };
        assert_eq!(quote.nonce, [i as u8]);
    }
}
