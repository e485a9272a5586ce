//! Raft storage on sled: the log and the state machine, in separate trees of
//! one database.

mod database;
pub mod durability_check;
mod log_store;
pub mod snapshot_file;
pub(crate) mod state_machine;
mod write_watch;

pub use database::{open_checked, open_stores, OpenError};
pub use log_store::SledLogStore;
pub use state_machine::{
    hour_of, AlertTally, CertificateStanding, CountKind, EventPage, EventsError, JournalRecord,
    JournalRef, ReadError, SledStateMachine, StateReader, Supersession, TriageTally,
    MIN_RENEWAL_INTERVAL_NANOS, USER_EXISTS,
};
pub use write_watch::{InFlight, OldestWrite, WriteWatch};

#[cfg(test)]
#[path = "storage_suite_tests.rs"]
mod storage_suite_tests;
