//! Whether a TPM's clock, as successive quotes report it, moves the way a
//! real TPM's does: a replayed or rolled-back quote shows a clock or
//! counter that went backwards.

/// The clock part of a quote's TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockState {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// How the clock moved since the previous quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockChange {
    /// No previous quote to compare with.
    First,
    /// Nothing moved (two quotes within the same millisecond, or a replay
    /// of the same quote that its nonce check refuses).
    Same,
    /// Same boot: the clock (or restartCount, after a suspend) advanced.
    Advanced,
    /// resetCount went up: the TPM was reset, the host rebooted. The clock
    /// may be lower than before (a disorderly shutdown loses the clock's
    /// last minutes), restartCount starts again.
    Rebooted,
}

/// The clock moved in a way a TPM's does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("resetCount went backwards: {previous} before, {now} now")]
    ResetCountBackwards { previous: u32, now: u32 },
    #[error(
        "restartCount went backwards within reset {reset_count}: {previous} before, {now} now"
    )]
    RestartCountBackwards {
        reset_count: u32,
        previous: u32,
        now: u32,
    },
    #[error("clock went backwards within reset {reset_count}: {previous} ms before, {now} ms now")]
    ClockBackwards {
        reset_count: u32,
        previous: u64,
        now: u64,
    },
}

/// Compares a quote's clock with the last accepted one.
pub fn compare(previous: Option<ClockState>, now: ClockState) -> Result<ClockChange, ClockError> {
    let Some(prev) = previous else {
        return Ok(ClockChange::First);
    };
    if now.reset_count < prev.reset_count {
        return Err(ClockError::ResetCountBackwards {
            previous: prev.reset_count,
            now: now.reset_count,
        });
    }
    if now.reset_count > prev.reset_count {
        return Ok(ClockChange::Rebooted);
    }
    if now.restart_count < prev.restart_count {
        return Err(ClockError::RestartCountBackwards {
            reset_count: now.reset_count,
            previous: prev.restart_count,
            now: now.restart_count,
        });
    }
    if now.clock < prev.clock {
        return Err(ClockError::ClockBackwards {
            reset_count: now.reset_count,
            previous: prev.clock,
            now: now.clock,
        });
    }
    if now == prev {
        Ok(ClockChange::Same)
    } else {
        Ok(ClockChange::Advanced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(clock: u64, reset_count: u32, restart_count: u32) -> ClockState {
        ClockState {
            clock,
            reset_count,
            restart_count,
        }
    }

    #[test]
    fn moves_a_tpm_makes() {
        assert_eq!(compare(None, st(5, 1, 0)), Ok(ClockChange::First));
        assert_eq!(
            compare(Some(st(5, 1, 0)), st(5, 1, 0)),
            Ok(ClockChange::Same)
        );
        assert_eq!(
            compare(Some(st(5, 1, 0)), st(9, 1, 0)),
            Ok(ClockChange::Advanced)
        );
        assert_eq!(
            compare(Some(st(5, 1, 0)), st(9, 1, 1)),
            Ok(ClockChange::Advanced),
            "resume"
        );
        assert_eq!(
            compare(Some(st(500, 1, 3)), st(400, 2, 0)),
            Ok(ClockChange::Rebooted)
        );
    }

    #[test]
    fn moves_a_tpm_does_not_make() {
        let e = compare(Some(st(5, 2, 0)), st(9, 1, 0)).unwrap_err();
        assert!(
            e.to_string().starts_with("resetCount went backwards"),
            "{e}"
        );
        let e = compare(Some(st(5, 1, 2)), st(9, 1, 1)).unwrap_err();
        assert!(
            e.to_string().starts_with("restartCount went backwards"),
            "{e}"
        );
        let e = compare(Some(st(5, 1, 0)), st(4, 1, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "clock went backwards within reset 1: 5 ms before, 4 ms now"
        );
    }
}
