//! A mutation fuzzer per parser, as modelinspect's (`modelinspect/src/
//! fuzz_tests.rs`): valid seeds (the swtpm fixtures, built logs) mutated
//! (bit flips, boundary values, huge lengths, cuts, repeats, splices) by a
//! seeded generator and fed to each parser and to the checks behind it.
//! Any panic fails with the input that reproduces it. `VIGIL_FUZZ_ITERS`
//! (default 20,000) inputs per parser. The mutations aim at the u16/u32
//! sizes and counts every TPM structure and log has, in both byte orders.

use std::panic::AssertUnwindSafe;

use crate::fixtures_tests::{fixture, sha256_0_7};
use crate::tpm2_tools_files::parse_pcrs_file;
use crate::*;

/// xorshift64*: the same inputs for the same seed, on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 9] = [
    0,
    1,
    0x7f,
    0x80,
    0xffff,
    0xffff_ffff,
    1 << 60,
    u64::MAX,
    u64::MAX / 2,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0, 0xff, 0x7f, 0x80, 0x01, 0x30, 0x82][rng.below(7)];
            }
            2 if len >= 2 => {
                // A u16 size or algorithm id, big-endian (TPM wire) or
                // little-endian (logs, tpm2-tools files).
                let i = rng.below(len - 1);
                let x = INTERESTING[rng.below(INTERESTING.len())] as u16;
                let b = if rng.below(2) == 0 {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                };
                v[i..i + 2].copy_from_slice(&b);
            }
            3 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING[rng.below(INTERESTING.len())] as u32;
                let b = if rng.below(2) == 0 {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                };
                v[i..i + 4].copy_from_slice(&b);
            }
            4 if len >= 8 => {
                let i = rng.below(len - 7);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            5 => v.truncate(rng.below(len + 1)),
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                for _ in 0..1 + rng.below(50) {
                    v.splice(a..a, chunk.iter().copied());
                }
            }
            7 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            _ if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + rng.below(256)).min(other.len());
                let at = rng.below(len + 1);
                v.splice(at..at, other[a..b].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn iterations() -> u64 {
    std::env::var("VIGIL_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Feeds mutations of `seeds` to `check`, which returns whether the input
/// was accepted (a refusal must come as an error, never a panic).
fn fuzz(format: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8]) -> bool) {
    let (mut ok, mut refused) = (0u64, 0u64);
    for i in 0..iterations() {
        let seed = 0xa77e_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ format.len() as u64;
        let mut rng = Rng(seed | 1);
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        match std::panic::catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(true) => ok += 1,
            Ok(false) => refused += 1,
            Err(_) => {
                let path = std::env::temp_dir().join(format!("vigil-fuzz-{format}-{i}.bin"));
                let _ = std::fs::write(&path, &input);
                panic!(
                    "{format}: panicked on input {i} (seed {seed:#x}), saved to {}",
                    path.display()
                );
            }
        }
    }
    eprintln!("fuzz {format}: {ok} accepted, {refused} refused, no panic");
}

fn refused<T, E: std::fmt::Display>(r: Result<T, E>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn fuzz_attest_and_quote_checks() {
    let seeds: Vec<Vec<u8>> = ["quote.msg", "quote-ecc.msg", "quote-rsapss.msg"]
        .map(fixture)
        .to_vec();
    let q = crate::fixtures_tests::quote("");
    fuzz("attest", &seeds, |input| {
        let parsed = Attest::parse(input).is_ok();
        let _ = Attest::parse_any(input).map(|a| a.to_bytes());
        let checked = verify_quote(&q.ak, input, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7());
        if let Err(e) = &checked {
            assert!(!e.reason_code().is_empty() && !e.to_string().is_empty());
        }
        parsed
    });
}

#[test]
fn fuzz_signature_and_verification() {
    let seeds: Vec<Vec<u8>> = ["quote.sig", "quote-ecc.sig", "quote-rsapss.sig"]
        .map(fixture)
        .to_vec();
    let aks: Vec<TpmPublic> = ["ak.pub", "ak-ecc.pub", "ak-rsapss.pub"]
        .map(|f| TpmPublic::parse(&fixture(f)).unwrap())
        .to_vec();
    let msg = fixture("quote.msg");
    fuzz("signature", &seeds, |input| {
        match TpmtSignature::parse(input) {
            Ok(sig) => {
                for ak in &aks {
                    let _ = verify(ak, &msg, &sig).map_err(|e| e.to_string());
                }
                true
            }
            Err(e) => refused::<(), _>(Err(e)),
        }
    });
}

#[test]
fn fuzz_tpm_public_and_key_checks() {
    let seeds: Vec<Vec<u8>> = ["ak.pub", "ak-ecc.pub", "ak-rsapss.pub", "ek.pub"]
        .map(fixture)
        .to_vec();
    let q = crate::fixtures_tests::quote("");
    let qe = crate::fixtures_tests::quote("-ecc");
    fuzz("tpm_public", &seeds, |input| {
        let _ = input.get(2..).map(TpmPublic::parse_tpmt);
        match TpmPublic::parse(input) {
            Ok(key) => {
                let _ = key.name();
                let _ = key.public_key();
                let _ = key.check_attestation_key().map_err(|e| e.to_string());
                let _ = key.check_endorsement_key().map_err(|e| e.to_string());
                let _ = TpmPublic::parse(&key.to_tpm2b()).unwrap();
                for q in [&q, &qe] {
                    let _ = verify_quote(&key, &q.msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7());
                }
                let _ = make_credential(
                    &key,
                    &key.name(),
                    &[1; 16],
                    &ring::rand::SystemRandom::new(),
                )
                .map_err(|e| e.to_string());
                true
            }
            Err(e) => refused::<(), _>(Err(e)),
        }
    });
}

#[test]
fn fuzz_event_log() {
    let mut b = EventLogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384]);
    b.startup_locality(3)
        .event(0, event_type::EV_S_CRTM_VERSION, &[0, 0]);
    for pcr in 0..8 {
        b.event(pcr, event_type::EV_SEPARATOR, &[0; 4]);
    }
    let mut small = EventLogBuilder::new(&[HashAlg::Sha256]);
    small.event(
        4,
        event_type::EV_EFI_ACTION,
        b"Calling EFI Application from Boot Option",
    );
    let seeds = vec![b.build(), small.build()];
    let limits = LogLimits {
        max_bytes: 1 << 20,
        max_events: 1000,
        max_event_data: 1 << 16,
    };
    fuzz("event_log", &seeds, |input| {
        match EventLog::parse(input, limits) {
            Ok(log) => {
                for alg in HashAlg::ALL {
                    let _ = log.replay(alg).map_err(|e| e.to_string());
                }
                true
            }
            Err(e) => refused::<(), _>(Err(e)),
        }
    });
}

#[test]
fn fuzz_ima_log() {
    let mut b = ImaLogBuilder::new();
    b.ima_ng(10, "sha256", &[1; 32], "boot_aggregate")
        .ima_ng(10, "sha256", &[2; 32], "/usr/bin/python3")
        .violation(10, "/tmp/x");
    let seeds = vec![b.build()];
    let limits = LogLimits {
        max_bytes: 1 << 20,
        max_events: 1000,
        max_event_data: 1 << 16,
    };
    fuzz("ima_log", &seeds, |input| {
        match ImaLog::parse(input, limits) {
            Ok(log) => {
                let _ = log.replay_sha256();
                let _ = log.replay(HashAlg::Sha1);
                true
            }
            Err(e) => refused::<(), _>(Err(e)),
        }
    });
}

#[test]
fn fuzz_certificate() {
    let inter = pem_certificates(&fixture("ca-intermediate.pem")).unwrap();
    let root = pem_certificates(&fixture("ca-root.pem")).unwrap();
    let seeds = vec![
        fixture("ek.crt"),
        inter[0].clone(),
        fixture("rsa1024-ek.crt"),
    ];
    let now = 4_000_000_000;
    fuzz("certificate", &seeds, |input| {
        let _ = der_prefix(input);
        let _ = pem_certificates(input).map_err(|e| e.to_string());
        // As the leaf, and as the intermediate of the real leaf.
        let leaf = EkCertificate::verify(input, &inter, &root, now);
        if let Err(e) = &leaf {
            assert!(!e.reason_code().is_empty());
        }
        let _ = EkCertificate::verify(&seeds[0], &[input.to_vec()], &root, now);
        leaf.is_ok()
    });
}

#[test]
fn fuzz_tpm2_tools_files_and_selections() {
    let seeds = vec![
        fixture("quote.pcrs"),
        sha256_0_7().to_bytes(),
        Credential::from_tpm2_tools_file(
            &make_credential(
                &TpmPublic::parse(&fixture("ek.pub")).unwrap(),
                &TpmPublic::parse(&fixture("ak.pub")).unwrap().name(),
                &[1; 32],
                &ring::rand::SystemRandom::new(),
            )
            .unwrap()
            .to_tpm2_tools_file(),
        )
        .unwrap()
        .to_tpm2_tools_file(),
    ];
    fuzz("tpm2_tools_files", &seeds, |input| {
        let pcrs = parse_pcrs_file(input).is_ok();
        let sel = PcrSelection::parse(input).is_ok();
        let cred = Credential::from_tpm2_tools_file(input).is_ok();
        pcrs || sel || cred
    });
}
