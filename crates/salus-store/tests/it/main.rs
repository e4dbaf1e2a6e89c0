//! The store conformance suite: every test runs against SQLite and PostgreSQL.
//!
//! PostgreSQL is required: the tests connect to `SALUS_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and create a fresh database per test. If
//! the server is not reachable they fail; they are never skipped.

mod access_log;
mod audit;
mod backends;
mod conformance;
mod postgres_only;
mod tenants;
