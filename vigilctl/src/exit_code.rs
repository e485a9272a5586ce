//! How vigilctl ends: one exit code per kind of failure, so scripts can
//! tell "the control plane is down" from "the policy is wrong".

/// vigilctl's exit codes. Clap itself exits with `Usage` on a bad command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// Anything else that went wrong (I/O, a refused request, a malformed answer).
    Failure = 1,
    /// The command line is wrong (unknown flag or value, flags that conflict).
    Usage = 2,
    /// The control plane could not be reached.
    Unreachable = 3,
    /// The control plane has no such agent, workload or policy version.
    NotFound = 4,
    /// A check failed: `policy check`/`test`/`sign` found problems, a bundle
    /// or approval was refused for its signature or rules, the audit chain is broken.
    VerificationFailed = 5,
}

/// The exit codes as `vigilctl --help` lists them (keep in step with the README).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  usage: the command line is wrong
  3  the control plane could not be reached
  4  not found: no such agent, workload or policy version
  5  verification failed: policy check problems, a refused signature or bundle, a broken audit chain";

impl ExitCode {
    /// The code an error ends vigilctl with: the first [`Coded`] in its
    /// chain decides, else `Failure`.
    pub fn of(error: &anyhow::Error) -> Self {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Coded>())
            .map_or(ExitCode::Failure, |coded| coded.code)
    }

    /// An error that ends vigilctl with this code.
    pub fn error(self, message: impl Into<String>) -> anyhow::Error {
        Coded {
            code: self,
            message: message.into(),
        }
        .into()
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error carrying the exit code it ends vigilctl with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub code: ExitCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_first_coded_cause_decides_the_exit_code() {
        let e = Err::<(), _>(ExitCode::NotFound.error("no agent"))
            .context("agents show")
            .unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::NotFound);
        assert_eq!(format!("{e:#}"), "agents show: no agent");
        assert_eq!(ExitCode::of(&anyhow::anyhow!("io")), ExitCode::Failure);
    }

    #[test]
    fn the_help_lists_every_code() {
        for code in [
            ExitCode::Success,
            ExitCode::Failure,
            ExitCode::Usage,
            ExitCode::Unreachable,
            ExitCode::NotFound,
            ExitCode::VerificationFailed,
        ] {
            let line = format!("\n  {}  ", code as u8);
            assert!(EXIT_CODES_HELP.contains(&line), "{line:?}");
        }
    }
}
