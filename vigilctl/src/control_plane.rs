//! The connection to the control plane's AdminService, and what its
//! refusals mean as exit codes.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

use crate::exit_code::ExitCode;

pub type AdminClient = AdminServiceClient<Channel>;

/// Connects now, so an unreachable control plane is one clear error.
pub async fn connect(endpoint: &str) -> anyhow::Result<AdminClient> {
    let channel = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| ExitCode::Usage.error(format!("bad endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| {
            ExitCode::Unreachable
                .error(format!("cannot reach the control plane at {endpoint}: {e}"))
        })?;
    Ok(AdminServiceClient::new(channel))
}

/// A refused request as an error with its exit code; the message is the
/// control plane's own ("no agent with id or hostname \"x\"").
pub fn refused(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::NotFound => ExitCode::NotFound,
        tonic::Code::PermissionDenied => ExitCode::VerificationFailed,
        _ => ExitCode::Failure,
    };
    code.error(status.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_exit_codes_and_keep_the_message() {
        let e = refused(tonic::Status::not_found(
            "no agent with id or hostname \"x\"",
        ));
        assert_eq!(ExitCode::of(&e), ExitCode::NotFound);
        assert_eq!(e.to_string(), "no agent with id or hostname \"x\"");
        let e = refused(tonic::Status::permission_denied(
            "bundle refused: bad signature",
        ));
        assert_eq!(ExitCode::of(&e), ExitCode::VerificationFailed);
        assert_eq!(
            ExitCode::of(&refused(tonic::Status::internal("sled"))),
            ExitCode::Failure
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_bad_url_is_usage() {
        let e = connect("http://127.0.0.1:1").await.unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Unreachable);
        let e = connect("not a url").await.unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Usage);
    }
}
