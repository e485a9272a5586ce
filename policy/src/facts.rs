//! A finding as the CEL variables a rule condition sees. Every variable
//! and field is always present (empty when the finding has no such
//! object), so a condition never fails on a missing key.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map, Value};
use vigil_domain::{Finding, ProcessInfo};

/// What the agent knows of its host, for `host.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub agent_id: String,
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

fn map(entries: Vec<(&'static str, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
        .collect();
    Value::Map(Map { map: Arc::new(m) })
}

pub fn process_value(p: &ProcessInfo) -> Value {
    map(vec![
        ("pid", Value::Int(p.pid.into())),
        ("ppid", Value::Int(p.ppid.into())),
        ("uid", Value::Int(p.uid.into())),
        ("exe", s(&p.exe)),
        ("name", s(p.name())),
        ("comm", s(&p.comm)),
        (
            "argv",
            Value::List(Arc::new(p.argv.iter().map(|a| s(a)).collect())),
        ),
        ("cmdline", s(&p.cmdline())),
        ("exe_sha256", s(&p.exe_sha256)),
        ("cgroup", s(&p.cgroup_path)),
        ("ns_pid", Value::Int(p.ns_pid.into())),
        ("in_container", Value::Bool(p.ns_pid != 0)),
    ])
}

/// The variables of one finding, in evaluation order of the schema.
pub fn finding_values(
    f: &Finding,
    parent: Option<&ProcessInfo>,
    host: &HostFacts,
) -> [(&'static str, Value); 7] {
    let (path, name, dir) = match &f.file {
        Some(file) => {
            let (dir, name) = file.path.rsplit_once('/').unwrap_or(("", &file.path));
            (file.path.as_str(), name, dir)
        }
        None => ("", "", ""),
    };
    let net = match &f.net {
        Some(n) => map(vec![
            ("direction", s(n.direction.as_str())),
            ("address", s(&n.address)),
            ("port", Value::Int(n.port.into())),
            ("host", s(&n.host)),
        ]),
        None => map(vec![
            ("direction", s("")),
            ("address", s("")),
            ("port", Value::Int(0)),
            ("host", s("")),
        ]),
    };
    let gpu = match &f.gpu {
        Some(g) => map(vec![
            ("uuid", s(&g.uuid)),
            ("name", s(&g.name)),
            ("index", Value::Int(g.index.into())),
            (
                "memory_bytes",
                Value::Int(g.used_memory_bytes.unwrap_or(0) as i64),
            ),
            ("sm_util", Value::Int(g.sm_util_percent.unwrap_or(0).into())),
        ]),
        None => map(vec![
            ("uuid", s("")),
            ("name", s("")),
            ("index", Value::Int(0)),
            ("memory_bytes", Value::Int(0)),
            ("sm_util", Value::Int(0)),
        ]),
    };
    let parent = parent.cloned().unwrap_or(ProcessInfo {
        pid: f.process.ppid,
        ..Default::default()
    });
    [
        ("signal", s(f.signal.as_str())),
        ("process", process_value(&f.process)),
        ("parent", process_value(&parent)),
        (
            "file",
            map(vec![("path", s(path)), ("name", s(name)), ("dir", s(dir))]),
        ),
        ("net", net),
        ("gpu", gpu),
        (
            "host",
            map(vec![
                ("hostname", s(&host.hostname)),
                ("agent_id", s(&host.agent_id)),
            ]),
        ),
    ]
}
