//! Host names of a `block_egress` rule's list, resolved to addresses off
//! the respond loop: a slow or silent resolver delays that one action's
//! name-based addresses, never another finding's verdict.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A resolution under way.
pub type Resolution = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves a host name to its addresses: the system's resolver in the
/// agent, another one in tests.
pub trait HostResolver: Send + Sync {
    fn resolve(&self, host: String) -> Resolution;
}

/// The system's resolver (getaddrinfo, on tokio's blocking pool). The
/// enforcer bounds each resolution with a timeout; a getaddrinfo call that
/// outlives it keeps its blocking thread until the resolver's own timeouts
/// (resolv.conf) end it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn resolve(&self, host: String) -> Resolution {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|sa| sa.ip())
                .collect())
        })
    }
}
