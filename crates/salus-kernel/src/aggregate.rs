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
    /// The schema version this build writes for `event_type`; `None` for a type it does
    /// not know.
    fn current_version(event_type: &str) -> Option<i32>
    where
        Self: Sized,
    {
        let _ = event_type;
        Some(1)
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

    /// Turn a stored payload of `event_type` written at schema version `from` into the
    /// payload of version `from + 1`. Events in the log never change: when an event's
    /// payload changes shape, its version goes up (`= "type" @ 2` in [`domain_events!`])
    /// and this step is written for the old one, so that history, `as_of` and replays keep
    /// reading every event ever stored. The default knows no step.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        let _ = payload;
        Err(format!(
            "no upcaster from schema version {from} of '{event_type}'"
        ))
    }

    /// Decode a stored event of any schema version up to the one this build writes,
    /// upcasting older payloads one version at a time.
    fn decode_stored(
        event_type: &str,
        schema_version: i32,
        payload: &Value,
    ) -> Result<Self::Event, DecodeError> {
        let current = <Self::Event as DomainEvent>::current_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if schema_version > current {
            return Err(DecodeError::Newer {
                event_type: event_type.to_owned(),
                stored: schema_version,
                known: current,
            });
        }
        if schema_version == current {
            return Self::decode_event(event_type, payload).map_err(DecodeError::Payload);
        }
        let mut upgraded = payload.clone();
        for from in schema_version..current {
            upgraded = Self::upcast(event_type, from, upgraded).map_err(DecodeError::Upcast)?;
        }
        Self::decode_event(event_type, &upgraded).map_err(DecodeError::Payload)
    }
}

/// Why a stored event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type '{0}'")]
    UnknownType(String),
    #[error(
        "'{event_type}' is stored at schema version {stored}, this build reads up to {known} (written by a newer Salus)"
    )]
    Newer {
        event_type: String,
        stored: i32,
        known: i32,
    },
    #[error("{0}")]
    Upcast(String),
    #[error("payload does not decode: {0}")]
    Payload(serde_json::Error),
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
}

/// Declare an aggregate's event enum: each variant wraps its payload type and names its
/// stable event type, and optionally its schema version (`= "type" @ 2`; 1 when not
/// given). Generates the payload-only serialisation, [`DomainEvent`] and
/// `decode(event_type, payload)` for `Aggregate::decode_event`.
#[macro_export]
macro_rules! domain_events {
    ($(#[$m:meta])* pub enum $name:ident { $($variant:ident($ty:ty) = $etype:literal $(@ $ver:literal)?),* $(,)? }) => {
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

            fn schema_version(&self) -> i32 {
                match self {
                    $($name::$variant(_) => { let _v = 1; $(let _v = $ver;)? _v }),*
                }
            }

            fn current_version(event_type: &str) -> Option<i32> {
                match event_type {
                    $($etype => { let _v = 1; $(let _v = $ver;)? Some(_v) },)*
                    _ => None,
                }
            }

            fn to_new_event(&self) -> Result<$crate::NewEvent, $crate::aggregate::__private::serde_json::Error> {
                Ok($crate::NewEvent {
                    event_type: self.event_type().to_owned(),
                    schema_version: self.schema_version(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Opened {
        pub ward_code: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Closed {
        pub reason: String,
    }

    crate::domain_events! {
        pub enum BedEvent {
            Opened(Opened) = "bed.opened" @ 3,
            Closed(Closed) = "bed.closed",
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Bed {
        ward_code: String,
        open: bool,
    }

    impl Aggregate for Bed {
        const STREAM_TYPE: &'static str = "bed";
        type Command = ();
        type Event = BedEvent;

        fn decide(_: Option<&Self>, _: &()) -> Result<Vec<BedEvent>, DomainError> {
            Ok(Vec::new())
        }

        fn evolve(state: Option<Self>, event: &BedEvent) -> Option<Self> {
            match event {
                BedEvent::Opened(o) => Some(Bed {
                    ward_code: o.ward_code.clone(),
                    open: true,
                }),
                BedEvent::Closed(_) => state.map(|b| Bed { open: false, ..b }),
            }
        }

        fn decode_event(event_type: &str, payload: &Value) -> Result<BedEvent, serde_json::Error> {
            BedEvent::decode(event_type, payload)
        }

        /// v1 `{"ward": "a1"}` → v2 `{"ward_name": "a1"}` → v3 `{"ward_code": "A1"}`.
        fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
            let text = |v: &Value, k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{event_type} v{from} has no {k}"))
            };
            match (event_type, from) {
                ("bed.opened", 1) => Ok(json!({ "ward_name": text(&payload, "ward")? })),
                ("bed.opened", 2) => {
                    Ok(json!({ "ward_code": text(&payload, "ward_name")?.to_uppercase() }))
                }
                _ => Err(format!("no upcaster from {from} of {event_type}")),
            }
        }
    }

    #[test]
    fn events_are_written_at_their_declared_version() {
        let opened = BedEvent::Opened(Opened {
            ward_code: "A1".into(),
        });
        let closed = BedEvent::Closed(Closed {
            reason: "cleaning".into(),
        });
        assert_eq!(opened.to_new_event().unwrap().schema_version, 3);
        assert_eq!(closed.to_new_event().unwrap().schema_version, 1);
        assert_eq!(BedEvent::current_version("bed.opened"), Some(3));
        assert_eq!(BedEvent::current_version("bed.closed"), Some(1));
        assert_eq!(BedEvent::current_version("bed.painted"), None);
    }

    #[test]
    fn old_payloads_are_upcast_step_by_step_and_newer_ones_refused() {
        let want = BedEvent::Opened(Opened {
            ward_code: "A1".into(),
        });
        let from_v1 = Bed::decode_stored("bed.opened", 1, &json!({"ward": "a1"})).unwrap();
        let from_v2 = Bed::decode_stored("bed.opened", 2, &json!({"ward_name": "a1"})).unwrap();
        let from_v3 = Bed::decode_stored("bed.opened", 3, &json!({"ward_code": "A1"})).unwrap();
        assert_eq!((&from_v1, &from_v2, &from_v3), (&want, &want, &want));
        // A v1 payload presented as v3 is not silently accepted.
        assert!(matches!(
            Bed::decode_stored("bed.opened", 3, &json!({"ward": "a1"})),
            Err(DecodeError::Payload(_))
        ));
        let newer = Bed::decode_stored("bed.opened", 4, &json!({})).unwrap_err();
        assert!(matches!(
            newer,
            DecodeError::Newer {
                stored: 4,
                known: 3,
                ..
            }
        ));
        assert!(newer.to_string().contains("newer Salus"), "{newer}");
        assert!(matches!(
            Bed::decode_stored("bed.painted", 1, &json!({})),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Bed::decode_stored("bed.opened", 1, &json!({"ward_name": "a1"})),
            Err(DecodeError::Upcast(_))
        ));
        // Version 1 events with no upcaster need none.
        let closed = Bed::decode_stored("bed.closed", 1, &json!({"reason": "x"})).unwrap();
        assert_eq!(closed, BedEvent::Closed(Closed { reason: "x".into() }));
    }
}
