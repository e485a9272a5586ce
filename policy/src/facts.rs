//! A finding as the CEL variables a rule condition sees. Every variable
//! and field is always present (empty when the finding has no such
//! object), so a condition never fails on a missing key.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map, Value};
use vigil_domain::{Finding, ProcessInfo};

use crate::cel_schema::Needs;

/// What the agent knows of its host, for `host.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub agent_id: String,
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

/// Field names as CEL map keys, allocated once per thread (a key is an
/// `Arc<String>`; cloning it is a reference count, not a copy).
fn key(name: &'static str) -> Key {
    thread_local! {
        static KEYS: std::cell::RefCell<HashMap<&'static str, Arc<String>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    KEYS.with(|k| {
        Key::String(
            k.borrow_mut()
                .entry(name)
                .or_insert_with(|| Arc::new(name.to_string()))
                .clone(),
        )
    })
}

fn map(entries: Vec<(&'static str, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries.into_iter().map(|(k, v)| (key(k), v)).collect();
    Value::Map(Map { map: Arc::new(m) })
}

/// Whether `needs` asks for `field` of `root`.
fn wants(needs: &Needs, root: &str, field: &str) -> bool {
    needs
        .range((root.to_string(), String::new())..)
        .take_while(|(r, _)| r == root)
        .any(|(_, f)| f == field || f == "*")
}

fn wants_any(needs: &Needs, root: &str) -> bool {
    needs
        .range((root.to_string(), String::new())..)
        .next()
        .is_some_and(|(r, _)| r == root)
}

/// A map of the fields `needs` asks for; each value computed only then.
fn fields(needs: &Needs, root: &str, all: Vec<(&'static str, &dyn Fn() -> Value)>) -> Value {
    map(all
        .into_iter()
        .filter(|(k, _)| wants(needs, root, k))
        .map(|(k, v)| (k, v()))
        .collect())
}

fn process_value(needs: &Needs, root: &str, p: &ProcessInfo) -> Value {
    fields(
        needs,
        root,
        vec![
            ("pid", &|| Value::Int(p.pid.into())),
            ("ppid", &|| Value::Int(p.ppid.into())),
            ("uid", &|| Value::Int(p.uid.into())),
            ("exe", &|| s(&p.exe)),
            ("name", &|| s(p.name())),
            ("comm", &|| s(&p.comm)),
            ("argv", &|| {
                Value::List(Arc::new(p.argv.iter().map(|a| s(a)).collect()))
            }),
            ("cmdline", &|| s(&p.cmdline())),
            ("exe_sha256", &|| s(&p.exe_sha256)),
            ("cgroup", &|| s(&p.cgroup_path)),
            ("ns_pid", &|| Value::Int(p.ns_pid.into())),
            ("in_container", &|| Value::Bool(p.ns_pid != 0)),
        ],
    )
}

/// The variables of one finding that `needs` asks for. Fields of objects
/// the finding does not have are empty values, never missing keys.
pub fn finding_values(
    f: &Finding,
    parent: Option<&ProcessInfo>,
    host: &HostFacts,
    needs: &Needs,
) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if wants_any(needs, "signal") {
        out.push(("signal", s(f.signal.as_str())));
    }
    if wants_any(needs, "process") {
        out.push(("process", process_value(needs, "process", &f.process)));
    }
    if wants_any(needs, "parent") {
        let fallback = ProcessInfo {
            pid: f.process.ppid,
            ..Default::default()
        };
        out.push((
            "parent",
            process_value(needs, "parent", parent.unwrap_or(&fallback)),
        ));
    }
    if wants_any(needs, "file") {
        let path = f.file.as_ref().map(|x| x.path.as_str()).unwrap_or("");
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        out.push((
            "file",
            fields(
                needs,
                "file",
                vec![
                    ("path", &|| s(path)),
                    ("name", &|| s(name)),
                    ("dir", &|| s(dir)),
                ],
            ),
        ));
    }
    if wants_any(needs, "net") {
        let n = f.net.as_ref();
        out.push((
            "net",
            fields(
                needs,
                "net",
                vec![
                    ("direction", &|| {
                        s(n.map(|n| n.direction.as_str()).unwrap_or(""))
                    }),
                    ("address", &|| {
                        s(n.map(|n| n.address.as_str()).unwrap_or(""))
                    }),
                    ("port", &|| {
                        Value::Int(n.map(|n| n.port.into()).unwrap_or(0))
                    }),
                    ("host", &|| s(n.map(|n| n.host.as_str()).unwrap_or(""))),
                ],
            ),
        ));
    }
    if wants_any(needs, "gpu") {
        let g = f.gpu.as_ref();
        out.push((
            "gpu",
            fields(
                needs,
                "gpu",
                vec![
                    ("uuid", &|| s(g.map(|g| g.uuid.as_str()).unwrap_or(""))),
                    ("name", &|| s(g.map(|g| g.name.as_str()).unwrap_or(""))),
                    ("index", &|| {
                        Value::Int(g.map(|g| g.index.into()).unwrap_or(0))
                    }),
                    ("memory_bytes", &|| {
                        Value::Int(g.and_then(|g| g.used_memory_bytes).unwrap_or(0) as i64)
                    }),
                    ("sm_util", &|| {
                        Value::Int(g.and_then(|g| g.sm_util_percent).unwrap_or(0).into())
                    }),
                ],
            ),
        ));
    }
    if wants_any(needs, "host") {
        out.push((
            "host",
            fields(
                needs,
                "host",
                vec![
                    ("hostname", &|| s(&host.hostname)),
                    ("agent_id", &|| s(&host.agent_id)),
                ],
            ),
        ));
    }
    out
}
