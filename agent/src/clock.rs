//! Kernel boot-time timestamps to wall-clock time.

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Wall-clock ns since the Unix epoch of a `bpf_ktime_get_boot_ns()` stamp.
pub fn boot_ns_to_unix_nanos(boot_ns: u64) -> i64 {
    let real = now(libc::CLOCK_REALTIME);
    let boot = now(libc::CLOCK_BOOTTIME);
    (real - (boot - boot_ns as i128)) as i64
}

/// Current boot-time ns, the clock the sensors stamp events with.
pub fn boot_now_ns() -> u64 {
    now(libc::CLOCK_BOOTTIME) as u64
}

/// Current wall-clock ns since the Unix epoch.
pub fn unix_now_nanos() -> i64 {
    now(libc::CLOCK_REALTIME) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_stamp_of_now_is_now_on_the_wall_clock() {
        let wall = boot_ns_to_unix_nanos(boot_now_ns());
        assert!((wall - unix_now_nanos()).abs() < 50_000_000);
    }
}
