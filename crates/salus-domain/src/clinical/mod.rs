//! The clinical record. So far: interactions with patients and the tenant's configurable
//! outcomes (requirements/004). Encounters, observations, notes and the rest follow.

pub mod encounter;
pub mod interaction;
pub mod observation;
pub mod outcome;
pub mod procedure;
pub mod record;
pub mod statement;

pub use interaction::{Interaction, InteractionCommand, InteractionKind};
pub use outcome::{Outcome, OutcomeCommand};
