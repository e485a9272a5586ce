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

/// The path of the file an alert is about ("" when it is about none).
pub fn file_path_of(alert: &Alert) -> String {
    alert
        .finding
        .as_ref()
        .and_then(|f| f.file.as_ref())
        .map(|f| f.path.clone())
        .unwrap_or_default()
}

/// The summaries of the alerts about files under `dir`: what benign
/// look-alikes kept there must not have raised.
pub fn summaries_under(alerts: &[Alert], dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    alerts
        .iter()
        .filter(|a| file_path_of(a).starts_with(dir.as_ref()))
        .filter_map(|a| a.finding.as_ref().map(|f| f.summary.clone()))
        .collect()
}
