//! Picking alerts out of what the control plane holds: by rule, by pid.

use vigil_proto::types::v1::Alert;

/// The pid of the process an alert is about; panics on an alert without
/// one.
pub fn pid_of(alert: &Alert) -> u32 {
    alert
        .finding
        .as_ref()
        .unwrap()
        .process
        .as_ref()
        .unwrap()
        .pid
}

/// Whether `alert` was raised by `rule`.
pub fn is_of_rule(alert: &Alert, rule: &str) -> bool {
    alert.finding.as_ref().is_some_and(|f| f.rule_id == rule)
}

/// Whether `alert` is about the process `pid`.
pub fn is_about_pid(alert: &Alert, pid: u32) -> bool {
    alert
        .finding
        .as_ref()
        .and_then(|f| f.process.as_ref())
        .is_some_and(|p| p.pid == pid)
}

/// The alerts raised by `rule`.
pub fn alerts_of_rule<'a>(alerts: &'a [Alert], rule: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| is_of_rule(a, rule)).collect()
}
