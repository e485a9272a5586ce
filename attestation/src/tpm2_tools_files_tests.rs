use std::process::Command;

use super::*;
use crate::fixtures_tests::{fixture, sha256_0_7};

#[test]
fn reads_tpm2_quotes_pcr_file() {
    let (selection, banks) = parse_pcrs_file_with_selection(&fixture("quote.pcrs")).unwrap();
    assert_eq!(selection, sha256_0_7());
    assert_eq!(banks.len(), 1);
    assert_eq!(banks[0].hash_alg, HashAlg::Sha256);
    assert_eq!(
        banks[0].values.keys().copied().collect::<Vec<_>>(),
        (0..8).collect::<Vec<u8>>()
    );
    // make-fixtures.sh extends PCR 4 once; the others are as swtpm starts.
    assert_ne!(banks[0].values[&4], vec![0; 32]);
    assert_eq!(banks[0].values[&5], vec![0; 32]);
}

#[test]
fn writes_what_tpm2_quote_writes() {
    let bytes = fixture("quote.pcrs");
    let (selection, banks) = parse_pcrs_file_with_selection(&bytes).unwrap();
    assert_eq!(write_pcrs_file(&banks, &selection).unwrap(), bytes);
}

#[test]
fn many_pcrs_of_two_banks_round_trip() {
    let selection = PcrSelection {
        banks: vec![
            BankSelection::new(HashAlg::Sha256, &(0..24).collect::<Vec<_>>()).unwrap(),
            BankSelection::new(HashAlg::Sha1, &[0, 7, 10]).unwrap(),
        ],
    };
    let mut sha256 = PcrBank::new(HashAlg::Sha256);
    let mut sha1 = PcrBank::new(HashAlg::Sha1);
    for pcr in 0..24u8 {
        sha256.values.insert(pcr, vec![pcr; 32]);
        sha1.values.insert(pcr, vec![pcr; 20]);
    }
    let bytes = write_pcrs_file(&[sha1.clone(), sha256.clone()], &selection).unwrap();
    // 27 values: four lists of eight.
    assert_eq!(bytes.len(), 132 + 4 + 4 * 532);
    let (sel, banks) = parse_pcrs_file_with_selection(&bytes).unwrap();
    assert_eq!(sel, selection);
    assert_eq!(banks[0], sha256);
    assert_eq!(banks[1].values.len(), 3);
    assert_eq!(banks[1].values[&10], vec![10; 20]);
}

#[test]
fn refusals_name_the_field() {
    let mut bytes = fixture("quote.pcrs");
    bytes[132] = 2;
    let e = parse_pcrs_file(&bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tpm2-tools PCR file at byte 132: pcrs.count: 2 digest lists, the selection's 8 PCRs need 1"
    );
    let e = parse_pcrs_file(&fixture("quote.pcrs")[..600]).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

/// `tpm2_checkquote` accepts the fixture quote with the PCR file this
/// crate writes: vigil's quotes can be checked with the reference tools.
#[test]
fn tpm2_checkquote_accepts_the_written_file() {
    if Command::new("tpm2_checkquote").arg("-v").output().is_err() {
        panic!("tpm2_checkquote is not on PATH: run scripts/install-deps.sh (tpm2-tools)");
    }
    let dir = tempfile::tempdir().unwrap();
    let banks = parse_pcrs_file(&fixture("quote.pcrs")).unwrap();
    let written = write_pcrs_file(&banks, &sha256_0_7()).unwrap();
    let mut tampered = banks.clone();
    tampered[0].values.get_mut(&4).unwrap()[0] ^= 1;
    let tampered = write_pcrs_file(&tampered, &sha256_0_7()).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let nonce: String = fixture("nonce.bin")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (name, bytes, accepted) in [
        ("ours.pcrs", written, true),
        ("tampered.pcrs", tampered, false),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new("tpm2_checkquote")
            .arg("-u")
            .arg(fixtures.join("ak.pub"))
            .arg("-m")
            .arg(fixtures.join("quote.msg"))
            .arg("-s")
            .arg(fixtures.join("quote.sig"))
            .arg("-f")
            .arg(&path)
            .args(["-g", "sha256", "-q", &nonce])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            accepted,
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
