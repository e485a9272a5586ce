//! A finding as the CEL variables a rule condition sees. Every variable
//! and field is always present (empty when the finding has no such
//! object), so a condition never fails on a missing key.

use std::collections::HashMap;

use cel::common::types::{CelBool, CelInt, CelList, CelMap, CelMapKey, CelString};
use cel::common::value::Val;
use vigil_domain::{Finding, ModelIdentity, ProcessInfo};

use crate::cel_schema::Needs;

/// What the agent knows of its host, for `host.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub agent_id: String,
}

/// A CEL value that may borrow from the finding it describes: strings are
/// not copied per evaluation, only the maps holding them are built.
pub type FactValue<'v> = Box<dyn Val + 'v>;

fn s<'v>(v: &'v str) -> FactValue<'v> {
    Box::new(CelString::from(v))
}

fn int<'v>(v: i64) -> FactValue<'v> {
    Box::new(CelInt::from(v))
}

fn map<'v>(entries: Vec<(&'static str, FactValue<'v>)>) -> FactValue<'v> {
    let m: HashMap<CelMapKey<'v>, FactValue<'v>> = entries
        .into_iter()
        .map(|(k, v)| (CelMapKey::from(k), v))
        .collect();
    Box::new(CelMap::from(m))
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

type Field<'a, 'v> = (&'static str, &'a dyn Fn() -> FactValue<'v>);

/// A map of the fields `needs` asks for; each value computed only then.
fn fields<'v>(needs: &Needs, root: &str, all: Vec<Field<'_, 'v>>) -> FactValue<'v> {
    map(all
        .into_iter()
        .filter(|(k, _)| wants(needs, root, k))
        .map(|(k, v)| (k, v()))
        .collect())
}

fn process_value<'v>(needs: &Needs, root: &str, p: &'v ProcessInfo, pid: u32) -> FactValue<'v> {
    fields(
        needs,
        root,
        vec![
            ("pid", &|| int(pid.into())),
            ("ppid", &|| int(p.ppid.into())),
            ("uid", &|| int(p.uid.into())),
            ("exe", &|| s(&p.exe)),
            ("name", &|| s(p.name())),
            ("comm", &|| s(&p.comm)),
            ("argv", &|| {
                Box::new(CelList::from(
                    p.argv.iter().map(|a| s(a)).collect::<Vec<_>>(),
                ))
            }),
            ("cmdline", &|| Box::new(CelString::from(p.cmdline()))),
            ("exe_sha256", &|| s(&p.exe_sha256)),
            ("cgroup", &|| s(&p.cgroup_path)),
            ("ns_pid", &|| int(p.ns_pid.into())),
            ("in_container", &|| Box::new(CelBool::from(p.ns_pid != 0))),
        ],
    )
}

/// The variables of one finding that `needs` asks for. Fields of objects
/// the finding does not have are empty values, never missing keys.
pub fn finding_values<'v>(
    f: &'v Finding,
    parent: Option<&'v ProcessInfo>,
    host: &'v HostFacts,
    needs: &Needs,
) -> Vec<(&'static str, FactValue<'v>)> {
    let mut out = Vec::new();
    if wants_any(needs, "signal") {
        out.push(("signal", s(f.signal.as_str())));
    }
    if wants_any(needs, "process") {
        out.push((
            "process",
            process_value(needs, "process", &f.process, f.process.pid),
        ));
    }
    if wants_any(needs, "parent") {
        // An unknown parent is empty but for its pid.
        static UNKNOWN: std::sync::LazyLock<ProcessInfo> =
            std::sync::LazyLock::new(ProcessInfo::default);
        let (p, pid) = match parent {
            Some(p) => (p, p.pid),
            None => (&*UNKNOWN, f.process.ppid),
        };
        out.push(("parent", process_value(needs, "parent", p, pid)));
    }
    if wants_any(needs, "file") {
        let path = f.file.as_ref().map(|x| x.path.as_str()).unwrap_or("");
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        static UNINSPECTED: std::sync::LazyLock<ModelIdentity> =
            std::sync::LazyLock::new(ModelIdentity::default);
        let m = f
            .file
            .as_ref()
            .and_then(|x| x.model.as_deref())
            .unwrap_or(&UNINSPECTED);
        out.push((
            "file",
            fields(
                needs,
                "file",
                vec![
                    ("path", &|| s(path)),
                    ("name", &|| s(name)),
                    ("dir", &|| s(dir)),
                    ("model_format", &|| s(&m.format)),
                    ("model_architecture", &|| s(&m.architecture)),
                    ("model_name", &|| s(&m.name)),
                    ("model_size_label", &|| s(&m.size_label)),
                    ("model_quantization", &|| s(&m.quantization)),
                    ("model_parameters", &|| {
                        int(i64::try_from(m.parameters).unwrap_or(i64::MAX))
                    }),
                    ("model_sha256", &|| s(&m.sha256)),
                    ("model_fingerprint", &|| s(&m.structure_fingerprint)),
                    ("model_risk", &|| s(m.risk.as_str())),
                    ("model_dangerous_imports", &|| {
                        Box::new(CelList::from(
                            m.dangerous_imports.iter().map(|a| s(a)).collect::<Vec<_>>(),
                        ))
                    }),
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
                    ("port", &|| int(n.map(|n| n.port.into()).unwrap_or(0))),
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
                    ("index", &|| int(g.map(|g| g.index.into()).unwrap_or(0))),
                    ("memory_bytes", &|| {
                        int(g.and_then(|g| g.used_memory_bytes).unwrap_or(0) as i64)
                    }),
                    ("sm_util", &|| {
                        int(g.and_then(|g| g.sm_util_percent).unwrap_or(0).into())
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
