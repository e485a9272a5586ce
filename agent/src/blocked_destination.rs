//! The key of the enforcement program's `BLOCKED_DESTINATIONS` map
//! (`ebpf/vigil_event.h`): written by the enforcer, and checked against the
//! C header with the sensors' records.

/// `struct vigil_blocked_destination`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedDestination {
    pub cgroup_id: u64,
    pub addr: [u8; 16],
}

// SAFETY: plain old data (u64 then 16 bytes: no padding), as the kernel map's key.
unsafe impl aya::Pod for BlockedDestination {}
