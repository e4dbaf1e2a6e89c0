//! The event envelope and its per-stream hash chain.
//!
//! `hash = SHA-256(prev_hash || canonical(event without hashes))`; the first event of a
//! stream has `prev_hash` = 32 zero bytes. The chain is per stream, so writers to different
//! records never wait on each other; the ledger (see [`crate::merkle`]) gives the total
//! order per tenant.

use crate::canonical::to_canonical_string;
use crate::context::{ActorId, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Hash32(arr))
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(Hash32(arr))
    }

    pub fn sha256(data: &[u8]) -> Self {
        Hash32(Sha256::digest(data).into())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash32::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// An event as an aggregate's `decide` produces it, before it has a place in a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
}

/// A stored, chained event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    /// Per-tenant ledger sequence number: the one total order of the log.
    pub seq: i64,
    pub stream_type: String,
    pub stream_id: Uuid,
    /// 1 for the first event of a stream, then +1 for each.
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub actor_id: ActorId,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

/// RFC 3339 with exactly six fractional digits and `Z`: the one text form of instants that
/// is hashed.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl EventEnvelope {
    /// The canonical bytes that the hash covers (everything but `seq` and the hashes).
    pub fn canonical_body(&self) -> String {
        let body = json!({
            "event_id": self.event_id,
            "tenant_id": self.tenant_id,
            "stream_type": self.stream_type,
            "stream_id": self.stream_id,
            "version": self.version,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "payload": self.payload,
            "actor_id": self.actor_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "occurred_at": format_instant(&self.occurred_at),
            "recorded_at": format_instant(&self.recorded_at),
        });
        to_canonical_string(&body)
    }

    /// The hash this event must carry, given its `prev_hash`.
    pub fn compute_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(self.prev_hash.0);
        h.update(self.canonical_body().as_bytes());
        Hash32(h.finalize().into())
    }

    /// Set `prev_hash` and `hash`.
    pub fn seal(&mut self, prev_hash: Hash32) {
        self.prev_hash = prev_hash;
        self.hash = self.compute_hash();
    }

    /// Whether the stored hash matches the content.
    pub fn hash_is_valid(&self) -> bool {
        self.compute_hash() == self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventEnvelope {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        EventEnvelope {
            event_id: Uuid::from_u128(1),
            tenant_id: TenantId(Uuid::from_u128(2)),
            seq: 1,
            stream_type: "patient".into(),
            stream_id: Uuid::from_u128(3),
            version: 1,
            event_type: "patient.registered".into(),
            schema_version: 1,
            payload: json!({"name": "Ada"}),
            actor_id: ActorId(Uuid::from_u128(4)),
            correlation_id: Uuid::from_u128(5),
            causation_id: None,
            occurred_at: t,
            recorded_at: t,
            prev_hash: Hash32::ZERO,
            hash: Hash32::ZERO,
        }
    }

    #[test]
    fn sealed_event_verifies_and_any_change_breaks_it() {
        let mut e = sample();
        e.seal(Hash32::ZERO);
        assert!(e.hash_is_valid());
        let mut changed = e.clone();
        changed.payload = json!({"name": "Eve"});
        assert!(!changed.hash_is_valid());
        let mut moved = e.clone();
        moved.version = 2;
        assert!(!moved.hash_is_valid());
        let mut relinked = e.clone();
        relinked.prev_hash = Hash32([1; 32]);
        assert!(!relinked.hash_is_valid());
    }

    #[test]
    fn seq_is_not_part_of_the_stream_hash() {
        let mut e = sample();
        e.seal(Hash32::ZERO);
        let mut other = e.clone();
        other.seq = 99;
        assert!(other.hash_is_valid());
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = Hash32::sha256(b"abc");
        assert_eq!(Hash32::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash32::from_hex("zz"), None);
    }
}
