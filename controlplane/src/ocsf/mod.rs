//! The control plane's events as OCSF 1.1 JSON, the form SIEMs ingest: one
//! file per OCSF class, the objects they share in `ocsf_objects`, and
//! `ocsf_event` choosing the class for each kind of exported event.

mod compliance_finding;
mod detection_finding;
mod entity_management;
mod event;
mod ocsf_objects;

#[cfg(test)]
mod schema_tests;

pub use compliance_finding::compliance_finding;
pub use detection_finding::detection_finding;
pub use entity_management::entity_management;
pub use event::ocsf_event;
pub use ocsf_objects::OCSF_VERSION;
