use super::*;

#[test]
fn the_three_requests_parse() {
    assert_eq!(
        parse_request(br#"{"op":"load","name":"m","version":2,"sha256":"ab","size":1234}"#),
        Ok(ControlRequest::Load {
            name: "m".into(),
            version: 2,
            sha256: "ab".into(),
            size: 1234
        })
    );
    assert_eq!(
        parse_request(br#"{"op":"unload","name":"m"}"#),
        Ok(ControlRequest::Unload { name: "m".into() })
    );
    assert_eq!(
        parse_request(br#"{"op":"status"}"#),
        Ok(ControlRequest::Status {})
    );
}

#[test]
fn bad_json_unknown_ops_and_unknown_fields_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 8] = [
        (b"{", "EOF while parsing"),
        (b"not json", "expected"),
        (br#"{"op":"reboot"}"#, "unknown variant `reboot`"),
        (br#"{"name":"m"}"#, "missing field `op`"),
        (
            br#"{"op":"unload","name":"m","force":true}"#,
            "unknown field `force`",
        ),
        (br#"{"op":"status","verbose":1}"#, "unknown field `verbose`"),
        (
            br#"{"op":"load","name":"m","version":-1,"sha256":"a","size":1}"#,
            "invalid value",
        ),
        (
            br#"{"op":"load","name":"m","sha256":"a","size":1}"#,
            "missing field `version`",
        ),
    ];
    for (message, expected) in cases {
        let reason = parse_request(message).unwrap_err();
        assert!(reason.starts_with("not a control request: "), "{reason}");
        assert!(
            reason.contains(expected),
            "{}: {reason}",
            String::from_utf8_lossy(message)
        );
    }
}

#[test]
fn an_oversize_message_is_refused_unparsed() {
    let big = vec![b' '; MAX_CONTROL_MESSAGE + 1];
    let reason = parse_request(&big).unwrap_err();
    assert_eq!(
        reason,
        format!(
            "a control message is at most 65536 bytes; this one is {}",
            MAX_CONTROL_MESSAGE + 1
        )
    );
}

#[test]
fn replies_are_the_documented_json() {
    let cases = [
        (
            ControlReply::Loaded {
                name: "m".into(),
                version: 2,
                load_ms: 12,
            },
            r#"{"op":"loaded","name":"m","version":2,"load_ms":12}"#,
        ),
        (
            ControlReply::refused("m", 2, "hash mismatch"),
            r#"{"op":"refused","name":"m","version":2,"reason":"hash mismatch"}"#,
        ),
        (
            ControlReply::Unloaded { name: "m".into() },
            r#"{"op":"unloaded","name":"m"}"#,
        ),
        (
            ControlReply::Status {
                models: vec![ModelStatus {
                    name: "m".into(),
                    version: 2,
                    sha256: "ab".into(),
                }],
            },
            r#"{"op":"status","models":[{"name":"m","version":2,"sha256":"ab"}]}"#,
        ),
        (
            ControlReply::error("bad"),
            r#"{"op":"error","reason":"bad"}"#,
        ),
    ];
    for (reply, json) in cases {
        assert_eq!(String::from_utf8(reply.to_message()).unwrap(), json);
    }
}

#[test]
fn reasons_are_bounded() {
    let reply = ControlReply::error("x".repeat(1 << 20));
    assert!(reply.to_message().len() < 5000);
}
