//! The FHIR search rows of clinical entries (observations, conditions, allergies, …), so
//! that FHIR search answers every R4 search parameter of their type over the same rows as
//! the JSON API's filters.
//!
//! The domain does not read FHIR: the FHIR layer registers a [`Viewer`] at start
//! ([`set_viewer`]) that renders an entry as its FHIR resource and indexes that. Rows are
//! named `Type.code` (as documents' are, [`crate::documents::row_param`]), apart from the
//! entry's own rows. Without a viewer an entry has its own rows only; `salus reindex`
//! derives the rows again after the viewer changes.

use chrono::{DateTime, Utc};
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

/// `(stream type, when the entry last changed) → rows`: the FHIR `meta` parameters
/// (`_lastUpdated`) of an entry, which its state alone does not hold.
pub type MetaViewer = fn(&str, DateTime<Utc>) -> Vec<SearchRow>;

static META_VIEWER: OnceLock<MetaViewer> = OnceLock::new();

/// Register how an entry's last change is indexed for FHIR (once; later calls are ignored).
pub fn set_meta_viewer(f: MetaViewer) {
    let _ = META_VIEWER.set(f);
}

/// The FHIR `meta` rows of an entry of `stream_type` last changed at `updated` (none
/// without a viewer, or for a type without a FHIR view).
pub fn meta_rows(stream_type: &str, updated: DateTime<Utc>) -> Vec<SearchRow> {
    META_VIEWER
        .get()
        .map(|view| view(stream_type, updated))
        .unwrap_or_default()
}
