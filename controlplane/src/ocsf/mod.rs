//! The control plane's events as OCSF 1.1 JSON, the form SIEMs ingest: one
//! file per OCSF class, the objects they share in `ocsf_objects`, and
//! `ocsf_json` choosing the class for each kind of exported event. Each
//! class is a struct borrowing from the record, serialised straight to
//! JSON text.

mod compliance_finding;
mod detection_finding;
mod entity_management;
mod event;
mod ocsf_objects;

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod speed_tests;

#[cfg(test)]
pub use event::ocsf_event;
pub use event::{ocsf_json, write_ocsf};
pub use ocsf_objects::OCSF_VERSION;
