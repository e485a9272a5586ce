use super::*;

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn a_digest_is_64_hex_digits_in_either_case_and_prints_lowercase() {
    let d = Sha256Digest::parse_hex(DIGEST).unwrap();
    assert_eq!(d.to_hex(), DIGEST);
    assert_eq!(Sha256Digest::parse_hex(&DIGEST.to_uppercase()).unwrap(), d);
    assert_eq!(Sha256Digest::of(b"test"), d);
    for bad in [
        "",
        "abc",
        &DIGEST[1..],
        &format!("{DIGEST}0"),
        &DIGEST.replace('9', "g"),
    ] {
        assert_eq!(
            Sha256Digest::parse_hex(bad),
            Err(IdentityError::BadDigest(bad.to_string())),
            "{bad}"
        );
    }
}

#[test]
fn names_are_bounded_and_plain() {
    for good in ["m", "resnet-50", "my_model.v2", &"a".repeat(128)] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "é", "a\0b", &"a".repeat(129)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_model_argument_is_name_version_digest_path_and_the_path_may_hold_colons() {
    let src: ModelSource = format!("m:3:{DIGEST}:/models/a:b.onnx").parse().unwrap();
    assert_eq!(src.identity.name, "m");
    assert_eq!(src.identity.version, 3);
    assert_eq!(src.identity.sha256.to_hex(), DIGEST);
    assert_eq!(src.path, PathBuf::from("/models/a:b.onnx"));
}

#[test]
fn bad_model_arguments_say_what_is_wrong() {
    let cases = [
        ("m:1:abc".to_string(), "is not NAME:VERSION:SHA256:PATH"),
        (format!("m:1:{DIGEST}:"), "is not NAME:VERSION:SHA256:PATH"),
        (
            format!("m:-1:{DIGEST}:/p"),
            "version \"-1\" is not a whole number",
        ),
        (format!("m:x:{DIGEST}:/p"), "version \"x\""),
        (
            "m:1:nothex:/p".to_string(),
            "sha256 \"nothex\" is not 64 hex digits",
        ),
        (format!("a/b:1:{DIGEST}:/p"), "model name \"a/b\""),
    ];
    for (arg, expected) in cases {
        let err = arg.parse::<ModelSource>().unwrap_err().to_string();
        assert!(err.contains(expected), "{arg}: {err}");
    }
}
