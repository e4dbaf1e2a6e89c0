//! The event envelope and its per-stream hash chain.
//!
//! `hash = SHA-256(prev_hash || body_digest || recorded_at)` where `body_digest` is the
//! SHA-256 of the canonical JSON of the event without `recorded_at`, `seq` and the hashes,
//! and `recorded_at` is its RFC 3339 text with six fractional digits. The first event of a
//! stream has `prev_hash` = 32 zero bytes. Splitting the body digest from the commit time
//! lets writers digest the (large) body before the commit queue and the committer add only
//! the chain link and the time. The chain is per stream, so writers to different
//! records never wait on each other; the ledger (see [`crate::merkle`]) gives the total
//! order per tenant.

use crate::canonical::to_canonical_string;
use crate::context::{ActorId, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// The fields of an event's body other than its payload.
#[derive(Debug, Clone, Copy)]
pub struct BodyRef<'a> {
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    pub stream_type: &'a str,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub actor_id: ActorId,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

fn json_str(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// The canonical JSON of an event body, given its payload already in canonical form: the
/// same bytes as `to_canonical_string` of the body object (keys in byte order).
pub fn canonical_body(b: &BodyRef<'_>, payload_canonical: &str) -> String {
    let mut out = String::with_capacity(320 + payload_canonical.len());
    out.push_str("{\"actor_id\":\"");
    out.push_str(&b.actor_id.0.to_string());
    out.push_str("\",\"causation_id\":");
    match b.causation_id {
        Some(c) => {
            out.push('"');
            out.push_str(&c.to_string());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"correlation_id\":\"");
    out.push_str(&b.correlation_id.to_string());
    out.push_str("\",\"event_id\":\"");
    out.push_str(&b.event_id.to_string());
    out.push_str("\",\"event_type\":");
    json_str(&mut out, b.event_type);
    out.push_str(",\"occurred_at\":\"");
    out.push_str(&format_instant(&b.occurred_at));
    out.push_str("\",\"payload\":");
    out.push_str(payload_canonical);
    out.push_str(",\"schema_version\":");
    out.push_str(&b.schema_version.to_string());
    out.push_str(",\"stream_id\":\"");
    out.push_str(&b.stream_id.to_string());
    out.push_str("\",\"stream_type\":");
    json_str(&mut out, b.stream_type);
    out.push_str(",\"tenant_id\":\"");
    out.push_str(&b.tenant_id.0.to_string());
    out.push_str("\",\"version\":");
    out.push_str(&b.version.to_string());
    out.push('}');
    out
}

/// One link of a stream's chain: `SHA-256(prev || body_digest || recorded_at)`.
pub fn chain_hash(prev: &Hash32, body_digest: &Hash32, recorded_at: &DateTime<Utc>) -> Hash32 {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(body_digest.0);
    h.update(format_instant(recorded_at).as_bytes());
    Hash32(h.finalize().into())
}

/// RFC 3339 with exactly six fractional digits and `Z`: the one text form of instants that
/// is hashed.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    // Written by hand (it is on every write and read path); chrono keeps the cases it
    // writes differently: years outside 0000-9999 and leap seconds.
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let put = |b: &mut [u8; 27], at: usize, digits: usize, mut v: u32| {
        for i in (0..digits).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 0, 4, year as u32);
    put(&mut b, 5, 2, t.month());
    put(&mut b, 8, 2, t.day());
    put(&mut b, 11, 2, t.hour());
    put(&mut b, 14, 2, t.minute());
    put(&mut b, 17, 2, t.second());
    put(&mut b, 20, 6, nanos / 1000);
    b.iter().map(|&c| c as char).collect()
}

impl EventEnvelope {
    /// The canonical bytes of the event's body: everything but `seq`, `recorded_at` and the
    /// hashes.
    pub fn canonical_body(&self) -> String {
        canonical_body(&self.body_ref(), &to_canonical_string(&self.payload))
    }

    pub fn body_ref(&self) -> BodyRef<'_> {
        BodyRef {
            event_id: self.event_id,
            tenant_id: self.tenant_id,
            stream_type: &self.stream_type,
            stream_id: self.stream_id,
            version: self.version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            actor_id: self.actor_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            occurred_at: self.occurred_at,
        }
    }

    /// SHA-256 of [`EventEnvelope::canonical_body`].
    pub fn body_digest(&self) -> Hash32 {
        Hash32::sha256(self.canonical_body().as_bytes())
    }

    /// The hash this event must carry, given its `prev_hash`.
    pub fn compute_hash(&self) -> Hash32 {
        chain_hash(&self.prev_hash, &self.body_digest(), &self.recorded_at)
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
    use serde_json::json;

    proptest::proptest! {
        /// The hand-written form is chrono's, byte for byte, over the whole range chrono
        /// represents (the hashes of stored events depend on it).
        #[test]
        fn instants_are_written_as_chrono_writes_them(
            secs in -100_000_000_000i64..1_000_000_000_000i64,
            nanos in 0u32..1_000_000_000,
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                proptest::prop_assert_eq!(
                    format_instant(&t),
                    t.to_rfc3339_opts(SecondsFormat::Micros, true)
                );
            }
        }
    }

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
    fn hand_written_canonical_body_equals_canonical_json_of_the_body_object() {
        let mut e = sample();
        e.stream_type = "pa\"ti\u{e9}nt".into();
        e.causation_id = Some(Uuid::from_u128(77));
        let via_value = to_canonical_string(&json!({
            "event_id": e.event_id, "tenant_id": e.tenant_id, "stream_type": e.stream_type,
            "stream_id": e.stream_id, "version": e.version, "event_type": e.event_type,
            "schema_version": e.schema_version, "payload": e.payload, "actor_id": e.actor_id,
            "correlation_id": e.correlation_id, "causation_id": e.causation_id,
            "occurred_at": format_instant(&e.occurred_at),
        }));
        assert_eq!(e.canonical_body(), via_value);
        e.causation_id = None;
        let body: Value = serde_json::from_str(&e.canonical_body()).unwrap();
        assert_eq!(to_canonical_string(&body), e.canonical_body());
    }

    #[test]
    fn recorded_at_is_covered_by_the_hash() {
        let mut e = sample();
        e.seal(Hash32::ZERO);
        let mut moved = e.clone();
        moved.recorded_at += chrono::Duration::microseconds(1);
        assert!(!moved.hash_is_valid());
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
