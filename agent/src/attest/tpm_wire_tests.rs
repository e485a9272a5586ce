use super::*;

#[test]
fn tpm2b_round_trips_and_checks_its_size() {
    let framed = tpm2b("x", b"abc").unwrap();
    assert_eq!(framed, [0, 3, b'a', b'b', b'c']);
    assert_eq!(tpm2b_body("x", &framed).unwrap(), b"abc");
    assert_eq!(tpm2b("x", &[]).unwrap(), [0, 0]);
    assert!(tpm2b("x", &vec![0; 70_000]).is_err());

    let (first, rest) = split_tpm2b("x", &[0, 1, 9, 0, 0]).unwrap();
    assert_eq!((first, rest), (&[9u8][..], &[0u8, 0][..]));

    for (bytes, says) in [
        (&[][..], "0 bytes, too short for a TPM2B size"),
        (&[0][..], "1 bytes, too short"),
        (&[0, 4, 1, 2][..], "TPM2B size 4 but 2 bytes follow"),
        (&[0, 1, 1, 2][..], "TPM2B size 1 but 2 bytes follow"),
    ] {
        let e = tpm2b_body("id_object", bytes).unwrap_err().to_string();
        assert!(e.starts_with("id_object: "), "{e}");
        assert!(e.contains(says), "{bytes:?}: {e}");
    }
}

#[test]
fn der_is_cut_to_its_length() {
    // A short-form SEQUENCE, then NV padding.
    assert_eq!(
        der_prefix("cert", &[0x30, 2, 5, 0, 0xff, 0xff]).unwrap(),
        [0x30, 2, 5, 0]
    );
    // Long form, two length bytes (a certificate of 0x0123 bytes).
    let mut cert = vec![0x30, 0x82, 0x01, 0x23];
    cert.extend(vec![7; 0x123]);
    let mut padded = cert.clone();
    padded.extend([0xff; 40]);
    assert_eq!(der_prefix("cert", &padded).unwrap(), cert);

    for (bytes, says) in [
        (&[][..], "too short for DER"),
        (&[0x31, 0][..], "not a DER SEQUENCE"),
        (&[0x30, 0x80][..], "not a definite length"),
        (&[0x30, 0x85, 1, 1, 1, 1, 1][..], "not a definite length"),
        (&[0x30, 0x82, 0x01][..], "cut short"),
        (
            &[0x30, 0x82, 0x01, 0x00, 1][..],
            "DER says 260 bytes but only 5",
        ),
    ] {
        let e = der_prefix("EK certificate", bytes).unwrap_err().to_string();
        assert!(e.contains(says), "{bytes:?}: {e}");
    }
}
