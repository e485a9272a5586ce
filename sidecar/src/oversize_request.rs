//! A request over `--max-request-bytes` is `RESOURCE_EXHAUSTED` (gRPC's
//! code for a message too large), naming its size and the limit.
//!
//! tonic reads the 5-byte gRPC message header, compares the length with
//! the service's limit and refuses a longer message before buffering any
//! of it, which is what keeps a large request from costing memory; but it
//! answers `OUT_OF_RANGE`. That answer is a trailers-only response (the
//! status in its headers), which this rewrites. The sidecar itself never
//! answers `OUT_OF_RANGE`.

use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};

/// tonic's message for a request over the limit, up to the numbers.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: ";

/// `response`, with tonic's over-limit `OUT_OF_RANGE` made
/// `RESOURCE_EXHAUSTED`.
pub fn rewrite_oversize(mut response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::OutOfRange {
        return response;
    }
    let Some(numbers) = status.message().strip_prefix(TONIC_TOO_LARGE) else {
        return response;
    };
    let exhausted = Status::resource_exhausted(oversize_message(numbers));
    if exhausted.add_header(response.headers_mut()).is_err() {
        // The message is ASCII; should it not encode, a bare status.
        let _ = Status::resource_exhausted("request over the size limit")
            .add_header(response.headers_mut());
    }
    response
}

/// "request of N bytes is over the limit of M bytes" from tonic's
/// "found N bytes, the limit is: M bytes".
fn oversize_message(numbers: &str) -> String {
    let digits: Vec<&str> = numbers
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    match digits.as_slice() {
        [found, limit] => format!(
            "request of {found} bytes is over the limit of {limit} bytes (--max-request-bytes)"
        ),
        _ => format!("request over the size limit (--max-request-bytes): {numbers}"),
    }
}

#[cfg(test)]
#[path = "oversize_request_tests.rs"]
mod tests;
