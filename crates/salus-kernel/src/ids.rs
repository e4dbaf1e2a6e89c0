//! Identifiers. Every key in Salus is a UUIDv7: time-ordered (good for B-tree locality and
//! stable paging) and safe to mint on any shard without coordination.

use uuid::Uuid;

/// A fresh UUIDv7.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// Parse a UUID given by a client (path segment, query parameter or body field).
pub fn parse_id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s.trim()).ok()
}
