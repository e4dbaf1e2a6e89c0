//! The kernel: the vocabulary every other crate speaks.
//!
//! It owns typed ids, the tenant/actor context a command runs in, the clock, the event
//! envelope and its hash chain, the aggregate contract (`decide` / `evolve`) and the Merkle
//! hashing of the ledger. It never does I/O: no files, no network, no database, no reading
//! the system clock except through [`clock::SystemClock`], which callers inject.

pub mod aggregate;
pub mod canonical;
pub mod clock;
pub mod context;
pub mod event;
pub mod ids;
pub mod merkle;
pub mod text;

pub use aggregate::{Aggregate, DecodeError, DomainError};
pub use clock::{Clock, SystemClock};
pub use context::{ActorId, TenantContext, TenantId};
pub use event::{EventEnvelope, Hash32, NewEvent};
pub use ids::new_id;
