use super::*;

fn response_with(status: Status) -> http::Response<Body> {
    status.into_http()
}

#[test]
fn tonics_over_limit_answer_becomes_resource_exhausted_naming_both_sizes() {
    let tonic_says = Status::out_of_range(
        "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
    );
    let rewritten = rewrite_oversize(response_with(tonic_says));
    let status = Status::from_header_map(rewritten.headers()).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "request of 70000000 bytes is over the limit of 67108864 bytes (--max-request-bytes)"
    );
}

#[test]
fn other_answers_are_left_alone() {
    for status in [
        Status::out_of_range("something else"),
        Status::invalid_argument("input \"x\": bad"),
        Status::ok(""),
    ] {
        let code = status.code();
        let message = status.message().to_string();
        let kept =
            Status::from_header_map(rewrite_oversize(response_with(status)).headers()).unwrap();
        assert_eq!((kept.code(), kept.message()), (code, message.as_str()));
    }
}
