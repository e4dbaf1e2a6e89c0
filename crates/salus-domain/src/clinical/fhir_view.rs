//! The FHIR search rows of clinical entries (observations, conditions, allergies, …), so
//! that FHIR search answers every R4 search parameter of their type over the same rows as
//! the JSON API's filters.
//!
//! The domain does not read FHIR: the FHIR layer registers a [`Viewer`] at start
//! ([`set_viewer`]) that renders an entry as its FHIR resource and indexes that. Rows are
//! named `Type.code` (as documents' are, [`crate::documents::row_param`]), apart from the
//! entry's own rows. Without a viewer an entry has its own rows only; `salus reindex`
//! derives the rows again after the viewer changes.

use salus_store::SearchRow;
use serde::Serialize;
use serde_json::Value;
use std::sync::OnceLock;

/// `(stream type, the entry as its JSON document) → rows`.
pub type Viewer = fn(&str, &Value) -> Vec<SearchRow>;

static VIEWER: OnceLock<Viewer> = OnceLock::new();

/// Register how clinical entries are indexed for FHIR (once; later calls are ignored).
pub fn set_viewer(f: Viewer) {
    let _ = VIEWER.set(f);
}

/// The FHIR rows of `entry` (of stream type `stream_type`), none without a viewer.
pub fn rows<T: Serialize>(stream_type: &str, entry: &T) -> Vec<SearchRow> {
    let Some(view) = VIEWER.get() else {
        return Vec::new();
    };
    match serde_json::to_value(entry) {
        Ok(doc) => view(stream_type, &doc),
        Err(_) => Vec::new(),
    }
}
