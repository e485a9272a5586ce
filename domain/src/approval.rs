use std::collections::BTreeSet;

/// The workloads allowed to run AI on a host, identified by the sha256 of
/// their executable. (The full approved-workload record, with model digests
/// and signer, comes from the control plane with the policy bundles.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovedWorkloads {
    exe_sha256: BTreeSet<String>,
}

impl ApprovedWorkloads {
    pub fn new<I, S>(exe_sha256: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            exe_sha256: exe_sha256
                .into_iter()
                .map(|s| s.into().to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exe_sha256.is_empty()
    }

    /// Whether an executable with this digest is approved. An unknown digest
    /// (empty string) is never approved.
    pub fn approves_exe(&self, exe_sha256: &str) -> bool {
        !exe_sha256.is_empty() && self.exe_sha256.contains(&exe_sha256.to_ascii_lowercase())
    }
}
