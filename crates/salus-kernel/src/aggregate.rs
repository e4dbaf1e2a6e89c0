//! The aggregate contract. Aggregates are pure: `decide` turns a command into events or a
//! typed refusal, `evolve` folds one event into the state. No clock, no randomness, no I/O:
//! services pass instants and ids in through the command.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::event::NewEvent;

/// A refusal by the domain. `kind` is stable (it becomes the problem+json `type`), the
/// message says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// The command is not valid input (a field is missing or malformed).
    #[error("{message}")]
    Invalid {
        message: String,
        field: Option<String>,
    },
    /// The command is well-formed but the aggregate's state does not allow it.
    #[error("cannot {action} when status is {from}; {action} is allowed only from: {allowed}")]
    IllegalTransition {
        action: String,
        from: String,
        allowed: String,
    },
    /// A business rule refuses the command.
    #[error("{0}")]
    Rule(String),
    /// The target does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The command contradicts what the aggregate is for good (a revoked assignment
    /// reactivated, a built-in role edited): retrying it can never succeed.
    #[error("{0}")]
    Conflict(String),
    /// The actor may not do this to this aggregate (granting permissions it does not hold).
    #[error("{0}")]
    Forbidden(String),
}

impl DomainError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::Invalid {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

/// Events carry a stable dotted name and a schema version; the payload is their JSON.
pub trait DomainEvent: Serialize + Clone {
    fn event_type(&self) -> &'static str;
    fn schema_version(&self) -> i32 {
        1
    }
    /// Encode for the log.
    fn to_new_event(&self) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version: self.schema_version(),
            payload: serde_json::to_value(self)?,
        })
    }
}

pub trait Aggregate: Sized + Clone + Serialize + DeserializeOwned {
    /// The stream type under which this aggregate's events are kept (`patient`, ...).
    const STREAM_TYPE: &'static str;
    type Command;
    type Event: DomainEvent;

    /// The state before the first event of the stream.
    fn initial() -> Option<Self> {
        None
    }

    /// Decide which events a command produces; `None` state means the stream is new.
    fn decide(
        state: Option<&Self>,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// Fold one event into the state.
    fn evolve(state: Option<Self>, event: &Self::Event) -> Option<Self>;

    /// Decode a stored payload back into this aggregate's event type. Events are written
    /// with `#[serde(tag = "type")]`-free payloads, so the event type name picks the variant.
    fn decode_event(event_type: &str, payload: &Value) -> Result<Self::Event, serde_json::Error>;
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
}

/// Declare an aggregate's event enum: each variant wraps its payload type and names its
/// stable event type. Generates the payload-only serialisation, [`DomainEvent`] (schema
/// version 1) and `decode(event_type, payload)` for `Aggregate::decode_event`.
#[macro_export]
macro_rules! domain_events {
    ($(#[$m:meta])* pub enum $name:ident { $($variant:ident($ty:ty) = $etype:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $($variant($ty)),*
        }

        impl $crate::aggregate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::aggregate::__private::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $($name::$variant(e) => e.serialize(s)),*
                }
            }
        }

        impl $crate::aggregate::DomainEvent for $name {
            fn event_type(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => $etype),*
                }
            }

            fn to_new_event(&self) -> Result<$crate::NewEvent, $crate::aggregate::__private::serde_json::Error> {
                Ok($crate::NewEvent {
                    event_type: self.event_type().to_owned(),
                    schema_version: 1,
                    payload: $crate::aggregate::__private::serde_json::to_value(self)?,
                })
            }
        }

        impl $name {
            /// Decode a stored payload by its event type.
            pub fn decode(
                event_type: &str,
                payload: &$crate::aggregate::__private::serde_json::Value,
            ) -> Result<Self, $crate::aggregate::__private::serde_json::Error> {
                use $crate::aggregate::__private::serde::de::Error as _;
                match event_type {
                    $($etype => Ok($name::$variant($crate::aggregate::__private::serde_json::from_value(payload.clone())?)),)*
                    other => Err($crate::aggregate::__private::serde_json::Error::custom(format!(
                        "unknown {} event '{other}'",
                        stringify!($name)
                    ))),
                }
            }
        }
    };
}
