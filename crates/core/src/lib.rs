//! Waymark's domain model and the pure rules that change it.
//!
//! Architecture invariant: this crate performs no I/O. It knows nothing of tokio, sockets,
//! files or SQL; time and identifiers are passed in. Everything here is testable as plain
//! functions, and every storage backend runs the same rules by calling into it.

pub mod audience;
pub mod campaign;
pub mod channel;
pub mod content;
pub mod decisioning;
pub mod delivery;
pub mod error;
pub mod event;
pub mod governance;
pub mod identity;
pub mod ingest;
pub mod journey;
pub mod links;
pub mod partition;
pub mod profile;
pub mod schedule;
pub mod segment;
pub mod surface;
pub mod template;
pub mod time;

pub use error::FieldError;
pub use event::{Event, EventKind, Sender};
pub use identity::{Identity, Namespace};
pub use ingest::{IngestPlan, Merge, ProfileId, WorkingSet};
pub use partition::{PartitionId, partition_of};
pub use profile::ProfileState;
