//! The production backend (PostgreSQL). Being written.
