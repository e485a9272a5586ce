use super::*;

fn sample() -> SealedSecret {
    SealedSecret {
        pcrs: "0-7".parse().unwrap(),
        public: vec![0, 3, 1, 2, 3],
        private: vec![0, 2, 9, 9],
    }
}

#[test]
fn round_trips() {
    let bytes = sample().to_bytes();
    assert!(bytes.starts_with(b"VGSEAL\x01\x00\x0b\x08\x00\x01"));
    assert_eq!(SealedSecret::from_bytes(&bytes).unwrap(), sample());
}

#[test]
fn every_truncation_and_change_is_an_error_never_a_panic() {
    let bytes = sample().to_bytes();
    for n in 0..bytes.len() {
        assert!(SealedSecret::from_bytes(&bytes[..n]).is_err(), "cut at {n}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let e = SealedSecret::from_bytes(&longer).unwrap_err().to_string();
    assert!(e.contains("1 bytes after its TPM2B_PRIVATE"), "{e}");
    for i in 0..bytes.len() {
        for v in [0u8, 0x18, 0xff] {
            let mut changed = bytes.clone();
            changed[i] = v;
            let _ = SealedSecret::from_bytes(&changed);
        }
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let bytes = sample().to_bytes();
    for (change, says) in [
        ((0, b'X'), "no VGSEAL header"),
        ((6, 2), "version 2"),
        ((8, 0x04), "PCR bank 0x0004"),
        ((9, 0), "no PCR selected"),
        ((10, 30), "PCR 30 is out of range"),
        ((11, 0), "not ascending or repeated"),
    ] {
        let mut changed = bytes.clone();
        changed[change.0] = change.1;
        let e = SealedSecret::from_bytes(&changed).unwrap_err().to_string();
        assert!(e.starts_with("sealed secret: "), "{e}");
        assert!(e.contains(says), "{change:?}: {e}");
    }
}
