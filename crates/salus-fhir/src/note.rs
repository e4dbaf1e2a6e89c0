//! FHIR DocumentReference ⇄ the clinical note ([`ClinicalNote`]), both ways.
//!
//! Modelled: the note's text (the one `content` entry: a `text/plain` attachment whose
//! `data` is the UTF-8 text in base64; `size` and `hash`, the SHA-1 of the data as R4 has
//! it, are computed from the text on every read), `type` (the note type, as the LOINC
//! document codes of [`NOTE_TYPES`]), `subject` (`Patient/<id>`), `custodian`
//! (`Organization/<department id>`: the department of the medical record the note is
//! kept in), `docStatus` (`preliminary` until the author signs, then `final`), the first
//! `relatesTo` of code `appends` or `replaces` (the note it amends:
//! `DocumentReference/<id>`), the author (the user who wrote it, `author` by identifier
//! of system [`USER_SYSTEM`] when the resource names none) and the signer
//! (`authenticator`, the same user once signed). `status` is `current` (a note sent `superseded`, as Synthea writes them, keeps that). Every other
//! element (identifier, category, date, description, context, securityLabel, the
//! attachment's title, language and creation, the sent `author` and `authenticator`, …)
//! is kept as sent and merged back on read, so a note reads back as sent apart from `id`
//! and `meta`.
//!
//! A note is append-only: an update may only sign it (`docStatus` `preliminary` →
//! `final`, by its author); any other change is refused, naming the element (amend it
//! with a new DocumentReference that `appends` to it). There is no delete.
//!
//! A DocumentReference whose one content entry carries data of another media type than
//! `text/plain` is a file ([`holds_file`], [`file_from_fhir`]): it becomes an attachment of
//! the medical record, kept with every other element as sent, and reads back as sent with
//! its data given as the download path ([`file_to_fhir`]).

use crate::datatypes::*;
use crate::outcome::Issue;
use base64::Engine as _;
use salus_domain::clinical::attachment::Attachment;
use salus_domain::clinical::record::ClinicalNote;
use serde_json::{Map, Value, json};
use sha1::Digest as _;
use uuid::Uuid;

/// The LOINC system.
pub const LOINC: &str = "http://loinc.org";

/// The identifier system of a Salus user (the author and signer of a note).
pub const USER_SYSTEM: &str = "urn:salus:user";

/// The kept element holding the status a note was sent with when it was not `current`
/// (`superseded`: another system's older version of the document).
const SENT_STATUS: &str = "salus:status";

/// The kept element holding what the content's attachment has beyond its data, size and
/// hash (`contentType` as sent, `title`, `language`, `creation`, …), and the content's
/// `format`.
pub const CONTENT: &str = "salus:content[0]";

/// Each Salus note type with its LOINC document code and display.
pub const NOTE_TYPES: &[(&str, &str, &str)] = &[
    ("progress", "11506-3", "Progress note"),
    ("operative", "11504-8", "Surgical operation note"),
    ("discharge", "18842-5", "Discharge summary"),
    (
        "admission",
        "47039-3",
        "Hospital Admission history and physical note",
    ),
    ("consult", "11488-4", "Consult note"),
    ("procedure", "28570-0", "Procedure note"),
    ("nursing", "34746-8", "Nurse Note"),
    ("other", "34109-9", "Note"),
];

const T: &str = "DocumentReference";

/// The LOINC coding of a note type.
fn type_concept(note_type: &str) -> Value {
    let (_, code, display) = NOTE_TYPES
        .iter()
        .find(|(t, _, _)| *t == note_type)
        .copied()
        .unwrap_or(NOTE_TYPES[NOTE_TYPES.len() - 1]);
    json!({ "coding": [{ "system": LOINC, "code": code, "display": display }] })
}

/// The note type a DocumentReference.type names: its first LOINC coding of
/// [`NOTE_TYPES`], else `other`.
fn note_type_of(concept: Option<&Value>) -> &'static str {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(LOINC))
        .find_map(|c| {
            let code = c.get("code").and_then(Value::as_str)?;
            NOTE_TYPES
                .iter()
                .find(|(_, k, _)| *k == code)
                .map(|(t, _, _)| *t)
        })
        .unwrap_or("other")
}

fn user(id: Uuid) -> Value {
    json!({ "identifier": { "system": USER_SYSTEM, "value": id.to_string() } })
}

/// The `content` entry of a text: base64 data, its size in bytes and SHA-1.
fn content_of(text: &str, kept: Option<&Value>) -> Value {
    let bytes = text.as_bytes();
    let b64 = base64::engine::general_purpose::STANDARD;
    content_entry(
        json!({
            "contentType": "text/plain; charset=utf-8",
            "data": b64.encode(bytes),
            "size": bytes.len(),
            "hash": b64.encode(sha1::Sha1::digest(bytes)),
        }),
        kept,
    )
}

/// A `content` entry of `attachment` with what was kept of the sent one ([`CONTENT`]:
/// the attachment's other elements, and the entry's `format`).
fn content_entry(mut attachment: Value, kept: Option<&Value>) -> Value {
    let mut entry = json!({});
    if let Some(k) = kept.and_then(Value::as_object) {
        for (key, v) in k {
            if key == "format" {
                entry["format"] = v.clone();
            } else {
                attachment[key] = v.clone();
            }
        }
    }
    entry["attachment"] = attachment;
    entry
}

/// The resource a note is: `version` and `updated` make its `meta` (`None` for the search
/// index).
pub fn to_fhir(n: &ClinicalNote, version: Option<(i64, chrono::DateTime<chrono::Utc>)>) -> Value {
    let mut r = json!({ "resourceType": T, "id": n.id.to_string(), "status": "current" });
    if let Some((v, at)) = version {
        r["meta"] = meta(v, at);
    }
    let kept = n.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    if let Some(s) = part(SENT_STATUS) {
        r["status"] = s.clone();
    }
    r["docStatus"] = json!(if n.signed_at.is_some() {
        "final"
    } else {
        "preliminary"
    });
    r["type"] = part("type")
        .cloned()
        .unwrap_or_else(|| type_concept(&n.note_type));
    r["subject"] = reference("Patient", n.patient_id, part("subject"));
    r["author"] = part("author")
        .cloned()
        .unwrap_or_else(|| json!([user(n.author_id)]));
    if let Some(a) = part("authenticator") {
        r["authenticator"] = a.clone();
    } else if n.signed_at.is_some() {
        r["authenticator"] = user(n.author_id);
    }
    if let Some(d) = n.department_id {
        r["custodian"] = reference("Organization", d, part("custodian"));
    }
    if let Some(a) = n.amends {
        let mut first = json!({
            "code": "appends",
            "target": { "reference": format!("{T}/{a}") },
        });
        let kept_rel = part("relatesTo").and_then(Value::as_array);
        if let Some(rest) = kept_rel.and_then(|a| a.first()) {
            merge(&mut first, rest);
        }
        let mut all = vec![first];
        all.extend(kept_rel.into_iter().flatten().skip(1).cloned());
        r["relatesTo"] = Value::Array(all);
    }
    r["content"] = json!([content_of(&n.text, part(CONTENT))]);
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in [
            CONTENT,
            SENT_STATUS,
            "type",
            "subject",
            "author",
            "authenticator",
            "custodian",
        ] {
            rest.remove(k);
        }
        if n.amends.is_some() {
            rest.remove("relatesTo");
        }
        merge(&mut r, &Value::Object(rest));
    }
    r
}

/// The DocumentReference an attachment of a medical record is: its file by download path
/// (`/api/v1/attachments/<id>/content`, hash-checked there), content type, size and file
/// name, the patient and the uploading user. An upload reads `final` and `current`; a file
/// that came as a DocumentReference ([`file_from_fhir`]) reads back as it was sent, its
/// `data` given as the download path.
pub fn file_to_fhir(
    a: &Attachment,
    version: Option<(i64, chrono::DateTime<chrono::Utc>)>,
) -> Value {
    let kept = a.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    let content = content_entry(
        json!({
            "contentType": a.content_type,
            "url": format!("/api/v1/attachments/{}/content", a.id),
            "size": a.size,
            "title": a.filename,
        }),
        part(CONTENT),
    );
    let mut r = json!({
        "resourceType": T,
        "id": a.id.to_string(),
        "status": "current",
        "subject": reference("Patient", a.patient_id, part("subject")),
        "author": part("author").cloned().unwrap_or_else(|| json!([user(a.uploaded_by)])),
        "content": [content],
    });
    if kept.is_none() {
        r["docStatus"] = json!("final");
    }
    if let Some((v, at)) = version {
        r["meta"] = meta(v, at);
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in [CONTENT, "subject", "author"] {
            rest.remove(k);
        }
        merge(&mut r, &Value::Object(rest));
    }
    r
}

/// What a FHIR DocumentReference holding a file says ([`holds_file`]): the file becomes an
/// attachment of the patient's medical record (the one of `custodian`, chosen as for a
/// note).
#[derive(Debug, Clone, PartialEq)]
pub struct FileWrite {
    pub patient_id: Uuid,
    /// The department of the record (`custodian`, which is also kept as sent), when named.
    pub department_id: Option<Uuid>,
    /// The declared media type, without parameters, in lower case (the domain checks it
    /// against the content).
    pub content_type: String,
    pub data: Vec<u8>,
    /// The attachment's `title` made a file name, else `document` with the type's extension.
    pub filename: String,
    /// Every element not modelled, kept as sent; the attachment's other elements, its
    /// `hash` (as sent, or computed) and a `title` that is not a file name as [`CONTENT`].
    pub kept: Map<String, Value>,
}

/// `r` as its object, once it passes structural validation.
fn checked_object(r: &Value) -> Result<Map<String, Value>, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    r.as_object()
        .cloned()
        .ok_or_else(|| vec![invalid(T, "a DocumentReference is a JSON object")])
}

/// The media type of a `contentType` (`Text/Plain; charset=utf-8` → `text/plain`).
fn media_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether `r` (a DocumentReference) holds a file rather than a note's text: one content
/// entry whose attachment carries `data` of a media type other than `text/plain`.
pub fn holds_file(r: &Value) -> bool {
    let Some([entry]) = r
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    else {
        return false;
    };
    let att = &entry["attachment"];
    let media = att.get("contentType").and_then(Value::as_str).map(media_of);
    att.get("data").is_some() && media.is_some_and(|m| !m.is_empty() && m != "text/plain")
}

/// Read a FHIR DocumentReference holding a file ([`holds_file`]): structural validation
/// first, then the file and what is kept beside it. The domain still checks the media type
/// against the content and the record when it decides.
pub fn file_from_fhir(r: &Value) -> Result<FileWrite, Vec<Issue>> {
    let mut o = checked_object(r)?;
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let patient_id = take_required_reference(
        &mut o,
        "subject",
        "Patient",
        T,
        "a document is about a patient: subject is Patient/<id>",
        &mut issues,
    );
    // The custodian chooses the record, and reads back as sent.
    let department_id = match o.get("custodian") {
        Some(c) => match split_reference(c, "Organization", &format!("{T}.custodian")) {
            Ok((id, _)) => Some(id),
            Err(e) => {
                issues.push(e);
                None
            }
        },
        None => None,
    };
    let file = match take_file(&mut o) {
        Ok(f) => Some(f),
        Err(e) => {
            issues.push(e);
            None
        }
    };
    match (issues.is_empty(), patient_id, file) {
        (true, Some(patient_id), Some((content_type, data, filename, kept))) => {
            o.insert(CONTENT.into(), kept);
            Ok(FileWrite {
                patient_id,
                department_id,
                content_type,
                data,
                filename,
                kept: o,
            })
        }
        _ => Err(issues),
    }
}

/// The file of the one content entry: (media type, bytes, file name, what is kept of the
/// entry as [`CONTENT`]).
fn take_file(o: &mut Map<String, Value>) -> Result<(String, Vec<u8>, String, Value), Issue> {
    let (entry, mut att, path) = take_one_content(
        o,
        "a document is one content entry with its data",
        "a Salus document is one content entry: send each file as its own DocumentReference",
    )?;
    let sent_type = att
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let media = media_of(&sent_type);
    if media.is_empty() {
        return Err(required(
            format!("{path}.contentType"),
            "a file needs its media type",
        ));
    }
    // Rendered from the stored media type; kept only when sent otherwise.
    if sent_type == media {
        att.remove("contentType");
    }
    let (bytes, sha1) = take_data(&mut att, &path, "a file is sent as the attachment's data")?;
    if bytes.is_empty() {
        return Err(invalid(format!("{path}.data"), "the file is empty"));
    }
    // Kept (as sent, or computed), as the data is given by its download path.
    att.insert("hash".into(), json!(sha1));
    if att.get("url").is_some() {
        return Err(refused(
            format!("{path}.url"),
            "a file is its data; a url is not kept beside it",
        ));
    }
    let filename = match att.get("title").and_then(Value::as_str) {
        Some(t) => {
            let f = file_name_of(t, &media);
            if f == t {
                att.remove("title");
            }
            f
        }
        None => file_name_of("", &media),
    };
    if let Some(f) = entry.get("format") {
        att.insert("format".into(), f.clone());
    }
    Ok((media, bytes, filename, Value::Object(att)))
}

/// `title` as a file name (no path separators or control characters, at most 255
/// characters); `document` with the media type's extension when nothing is left.
fn file_name_of(title: &str, media: &str) -> String {
    let name: String = title
        .chars()
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        let ext = match media {
            "application/pdf" => "pdf",
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/gif" => "gif",
            "application/dicom" => "dcm",
            _ => "bin",
        };
        format!("document.{ext}")
    } else {
        name.to_owned()
    }
}

/// What a FHIR DocumentReference says, in the note's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct NoteWrite {
    pub id: Option<String>,
    pub patient_id: Uuid,
    /// The department of the record (`custodian`), when named.
    pub department_id: Option<Uuid>,
    pub note_type: String,
    pub text: String,
    pub amends: Option<Uuid>,
    /// `docStatus` is `final`: signed by its author.
    pub signed: bool,
    /// Every element not modelled, kept as sent.
    pub kept: Map<String, Value>,
}

impl NoteWrite {
    /// Drop the `author` and `authenticator` the rendering writes itself for a note by
    /// `author` (the Salus user), unless the note keeps its own (`kept_now`).
    pub fn settle(&mut self, author: Uuid, kept_now: &Map<String, Value>) {
        let me = user(author);
        if !kept_now.contains_key("author") && self.kept.get("author") == Some(&json!([me])) {
            self.kept.remove("author");
        }
        if !kept_now.contains_key("authenticator") && self.kept.get("authenticator") == Some(&me) {
            self.kept.remove("authenticator");
        }
    }
}

type Object = Map<String, Value>;

/// The one content entry of `o`, taken out: the entry, its attachment, and the
/// attachment's path. `missing` and `several` say what a DocumentReference without one, or
/// with more, is refused for.
fn take_one_content(
    o: &mut Map<String, Value>,
    missing: &str,
    several: &str,
) -> Result<(Object, Object, String), Issue> {
    let path = format!("{T}.content");
    let Some(Value::Array(content)) = o.remove("content") else {
        return Err(required(path, missing));
    };
    if content.len() != 1 {
        return Err(refused(format!("{path}[1]"), several));
    }
    let entry = content[0].as_object().cloned().unwrap_or_default();
    let att = entry
        .get("attachment")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok((entry, att, format!("{path}[0].attachment")))
}

/// The attachment's data (at `path`), taken out with its `size` and `hash` after checking
/// them against it: the bytes and their SHA-1 (base64, as R4's `hash`). `missing` says
/// why an attachment without data is refused.
fn take_data(
    att: &mut Map<String, Value>,
    path: &str,
    missing: &str,
) -> Result<(Vec<u8>, String), Issue> {
    let Some(data) = att.remove("data") else {
        return Err(required(format!("{path}.data"), missing));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = data
        .as_str()
        .and_then(|d| b64.decode(d.trim()).ok())
        .ok_or_else(|| invalid(format!("{path}.data"), "data is base64"))?;
    if let Some(size) = att.remove("size")
        && size.as_u64() != Some(bytes.len() as u64)
    {
        return Err(invalid(
            format!("{path}.size"),
            format!("size is {size} but the data holds {} bytes", bytes.len()),
        ));
    }
    let sha1 = b64.encode(sha1::Sha1::digest(&bytes));
    if let Some(hash) = att.remove("hash")
        && hash.as_str() != Some(sha1.as_str())
    {
        return Err(invalid(
            format!("{path}.hash"),
            "hash is not the SHA-1 of the data (base64)",
        ));
    }
    Ok((bytes, sha1))
}

/// The text of the one content entry, and what else it holds (kept as [`CONTENT`]).
fn take_content(o: &mut Map<String, Value>) -> Result<(String, Option<Value>), Issue> {
    let (entry, mut att, path) = take_one_content(
        o,
        "a note is one content entry: a text/plain attachment with its data",
        "a Salus note is one text/plain content entry; send each file as its own DocumentReference",
    )?;
    let ct = att
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let media = media_of(&ct);
    let charset_ok = ct
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().strip_prefix("charset="))
        .all(|c| c.trim_matches('"').eq_ignore_ascii_case("utf-8"));
    if media != "text/plain" || !charset_ok {
        return Err(refused(
            format!("{path}.contentType"),
            format!(
                "a Salus note is text/plain (UTF-8), not '{ct}'; files are attachments of the medical record"
            ),
        ));
    }
    let (bytes, _) = take_data(
        &mut att,
        &path,
        "a note carries its text as the attachment's data (a url is not fetched)",
    )?;
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("{path}.data"), "the text is not UTF-8"))?;
    if att.get("url").is_some() {
        return Err(refused(
            format!("{path}.url"),
            "a note is its data; a url is not kept beside it",
        ));
    }
    // The rendering writes the content type this way when it was not sent otherwise.
    if att.get("contentType").and_then(Value::as_str) == Some("text/plain; charset=utf-8") {
        att.remove("contentType");
    }
    let mut kept = att;
    if let Some(f) = entry.get("format") {
        kept.insert("format".into(), f.clone());
    }
    Ok((text, nonempty(kept)))
}

/// Read a FHIR DocumentReference: structural validation first, then what the note keeps.
/// The domain still checks the text's length and the amended note when it decides.
pub fn from_fhir(r: &Value) -> Result<NoteWrite, Vec<Issue>> {
    let mut o = checked_object(r)?;
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    match o.remove("status").as_ref().and_then(Value::as_str) {
        Some("current") => {}
        // Another system's older version of a document (Synthea writes its notes so):
        // Salus holds its text as a note, and keeps the status it was sent with.
        Some("superseded") => {
            o.insert(SENT_STATUS.into(), json!("superseded"));
        }
        other => issues.push(refused(
            format!("{T}.status"),
            format!(
                "a Salus note is current (not {}): correct it with an amendment",
                other.unwrap_or("absent")
            ),
        )),
    }
    let signed = match o.remove("docStatus").as_ref().and_then(Value::as_str) {
        None | Some("preliminary") => false,
        Some("final") => true,
        Some(other) => {
            issues.push(refused(
                format!("{T}.docStatus"),
                format!(
                    "a note is preliminary until its author signs it, then final (not {other}); amendments are new notes"
                ),
            ));
            false
        }
    };
    let note_type = note_type_of(o.get("type")).to_owned();
    if o.get("type") == Some(&type_concept(&note_type)) {
        o.remove("type");
    }
    let patient_id = take_required_reference(
        &mut o,
        "subject",
        "Patient",
        T,
        "a note is about a patient: subject is Patient/<id>",
        &mut issues,
    );
    let department_id =
        take_reference(&mut o, "custodian", "Organization", T).unwrap_or_else(|e| {
            issues.push(e);
            None
        });
    let amends = take_amends(&mut o).unwrap_or_else(|e| {
        issues.push(e);
        None
    });
    let text = match take_content(&mut o) {
        Ok((text, kept)) => {
            if let Some(k) = kept {
                o.insert(CONTENT.into(), k);
            }
            Some(text)
        }
        Err(e) => {
            issues.push(e);
            None
        }
    };
    match (issues.is_empty(), patient_id, text) {
        (true, Some(patient_id), Some(text)) => Ok(NoteWrite {
            id,
            patient_id,
            department_id,
            note_type,
            text,
            amends,
            signed,
            kept: o,
        }),
        _ => Err(issues),
    }
}

/// The note amended: the first `relatesTo` of code `appends` or `replaces`, kept as sent
/// when it holds more than the rendering writes.
fn take_amends(o: &mut Map<String, Value>) -> Result<Option<Uuid>, Issue> {
    let Some(Value::Array(rel)) = o.get("relatesTo") else {
        return Ok(None);
    };
    let Some(first) = rel.first() else {
        return Ok(None);
    };
    let code = first.get("code").and_then(Value::as_str);
    if !matches!(code, Some("appends" | "replaces")) {
        return Ok(None);
    }
    let (target, rest) = split_reference(
        first.get("target").unwrap_or(&Value::Null),
        T,
        &format!("{T}.relatesTo[0].target"),
    )?;
    let mut first_rest = first.as_object().cloned().unwrap_or_default();
    first_rest.remove("target");
    if code == Some("appends") {
        first_rest.remove("code");
    }
    if let Some(r) = rest {
        first_rest.insert("target".into(), r);
    }
    let mut kept = vec![Value::Object(first_rest)];
    kept.extend(rel.iter().skip(1).cloned());
    if kept.len() == 1 && kept[0].as_object().is_some_and(Map::is_empty) {
        o.remove("relatesTo");
    } else {
        o.insert("relatesTo".into(), Value::Array(kept));
    }
    Ok(Some(target))
}

/// Whether a FHIR update of `current` signs it: `Ok(true)` signs, `Ok(false)` changes
/// nothing; any other change is refused (a note is append-only).
pub fn update_signs(current: &ClinicalNote, w: &NoteWrite) -> Result<bool, Vec<Issue>> {
    let fixed = "cannot change: a note is append-only (amend it with a new DocumentReference that appends to it)";
    let mut issues = Vec::new();
    if w.text != current.text {
        issues.push(refused(format!("{T}.content"), format!("the text {fixed}")));
    }
    if w.note_type != current.note_type {
        issues.push(refused(format!("{T}.type"), format!("the type {fixed}")));
    }
    if w.patient_id != current.patient_id {
        issues.push(refused(
            format!("{T}.subject"),
            format!("the patient {fixed}"),
        ));
    }
    if w.department_id.is_some() && w.department_id != current.department_id {
        issues.push(refused(
            format!("{T}.custodian"),
            format!("the record {fixed}"),
        ));
    }
    if w.amends != current.amends {
        issues.push(refused(
            format!("{T}.relatesTo"),
            format!("the amended note {fixed}"),
        ));
    }
    let kept_now = kept_of(&current.fhir_elements);
    let mut w = w.clone();
    w.settle(current.author_id, &kept_now);
    let (sent, now) = (w.kept.clone(), kept_now);
    if sent != now {
        let mut keys: Vec<&String> = sent
            .keys()
            .chain(now.keys())
            .filter(|k| sent.get(*k) != now.get(*k))
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let name = if k.as_str() == CONTENT {
                "content[0]"
            } else {
                k.as_str()
            };
            issues.push(refused(format!("{T}.{name}"), format!("{name} {fixed}")));
        }
    }
    if !w.signed && current.signed_at.is_some() {
        issues.push(refused(
            format!("{T}.docStatus"),
            "a signed note stays final",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(w.signed && current.signed_at.is_none())
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field(field: &str) -> String {
    match field {
        "text" => format!("{T}.content[0].attachment.data"),
        "note_type" => format!("{T}.type"),
        "amends" => format!("{T}.relatesTo[0].target"),
        "patient_id" => format!("{T}.subject"),
        "department_id" | "record_id" => format!("{T}.custodian"),
        "fhir_elements" => T.to_owned(),
        other => format!("{T}.{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn note() -> ClinicalNote {
        let text = "Stable. BP 120/80.".to_owned();
        ClinicalNote {
            id: Uuid::from_u128(1),
            record_id: Uuid::from_u128(2),
            patient_id: Uuid::from_u128(3),
            note_type: "discharge".into(),
            author_id: Uuid::from_u128(4),
            content_sha256: salus_kernel::Hash32::sha256(text.as_bytes()).to_hex(),
            text,
            amends: Some(Uuid::from_u128(5)),
            signed_at: None,
            department_id: Some(Uuid::from_u128(6)),
            fhir_elements: None,
        }
    }

    fn as_written(mut w: NoteWrite, n: &ClinicalNote) -> ClinicalNote {
        w.settle(n.author_id, &Map::new());
        ClinicalNote {
            note_type: w.note_type,
            text: w.text,
            amends: w.amends,
            patient_id: w.patient_id,
            department_id: w.department_id,
            fhir_elements: nonempty(w.kept),
            ..n.clone()
        }
    }

    #[test]
    fn a_note_reads_back_as_its_fhir_rendering() {
        let n = note();
        let r = to_fhir(&n, Some((1, Utc::now())));
        assert_eq!(r["type"]["coding"][0]["code"], "18842-5");
        assert_eq!(r["docStatus"], "preliminary");
        assert_eq!(r["content"][0]["attachment"]["size"], 18);
        // The SHA-1 of "Stable. BP 120/80." in base64.
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            r["content"][0]["attachment"]["hash"],
            b64.encode(sha1::Sha1::digest(b"Stable. BP 120/80."))
        );
        assert_eq!(
            r["relatesTo"][0]["target"]["reference"],
            format!("DocumentReference/{}", Uuid::from_u128(5))
        );
        let mut w = from_fhir(&r).unwrap();
        w.settle(n.author_id, &Map::new());
        assert!(w.kept.is_empty(), "{:?}", w.kept);
        assert_eq!(as_written(w, &n), n);
    }

    #[test]
    fn unmodelled_elements_are_kept_and_merged_back() {
        let sent = json!({
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "final",
            "identifier": [{"system": "urn:x", "value": "d-1"}],
            "type": {"coding": [{"system": LOINC, "code": "11506-3"}], "text": "Progress"},
            "category": [{"text": "clinical note"}],
            "subject": {"reference": format!("Patient/{}", Uuid::from_u128(3)), "display": "Ada"},
            "date": "2024-05-01T10:00:00Z",
            "author": [{"display": "Dr Who"}],
            "relatesTo": [{"code": "replaces", "target": {"reference": format!("DocumentReference/{}", Uuid::from_u128(5))}},
                          {"code": "transforms", "target": {"display": "scan"}}],
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk=", "title": "note.txt"},
                         "format": {"system": "urn:f", "code": "plain"}}],
            "context": {"period": {"start": "2024-05-01"}}
        });
        let w = from_fhir(&sent).unwrap();
        assert!(w.signed);
        assert_eq!(w.text, "hi");
        assert_eq!(w.note_type, "progress");
        assert_eq!(w.amends, Some(Uuid::from_u128(5)));
        let mut n = as_written(w, &note());
        n.signed_at = Some(Utc::now());
        let mut back = to_fhir(&n, None);
        let mut sent = sent;
        // Computed on read.
        back["content"][0]["attachment"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k != "size" && k != "hash");
        back.as_object_mut().unwrap().remove("id");
        back.as_object_mut().unwrap().remove("custodian");
        sent.as_object_mut().unwrap().remove("resourceType");
        back.as_object_mut().unwrap().remove("resourceType");
        // Signed: the author's signature.
        assert_eq!(back["authenticator"]["identifier"]["system"], USER_SYSTEM);
        back.as_object_mut().unwrap().remove("authenticator");
        assert_eq!(back, sent);
    }

    #[test]
    fn what_a_note_cannot_hold_is_refused_naming_the_element() {
        let p = format!("Patient/{}", Uuid::from_u128(3));
        let base = json!({"resourceType": "DocumentReference", "status": "current", "subject": {"reference": p},
                          "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]});
        let refused_at = |patch: Value| {
            let mut r = base.clone();
            merge(&mut r, &patch);
            from_fhir(&r)
                .unwrap_err()
                .iter()
                .filter_map(|i| i.expression.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            refused_at(
                json!({"content": [{"attachment": {"contentType": "application/pdf", "url": "x"}}]})
            ),
            ["DocumentReference.content[1]"]
        );
        let mut pdf = base.clone();
        pdf["content"][0]["attachment"]["contentType"] = json!("application/pdf");
        assert_eq!(
            from_fhir(&pdf).unwrap_err()[0].expression.as_deref(),
            Some("DocumentReference.content[0].attachment.contentType")
        );
        let mut bad = base.clone();
        bad["content"][0]["attachment"]["hash"] = json!("AAAA");
        assert_eq!(
            from_fhir(&bad).unwrap_err()[0].expression.as_deref(),
            Some("DocumentReference.content[0].attachment.hash")
        );
        let mut eie = base.clone();
        eie["status"] = json!("entered-in-error");
        assert_eq!(
            from_fhir(&eie).unwrap_err()[0].expression.as_deref(),
            Some("DocumentReference.status")
        );
        let mut nobody = base.clone();
        nobody.as_object_mut().unwrap().remove("subject");
        assert_eq!(
            from_fhir(&nobody).unwrap_err()[0].expression.as_deref(),
            Some("DocumentReference.subject")
        );
    }

    #[test]
    fn an_update_only_signs() {
        let n = note();
        let mut r = to_fhir(&n, None);
        assert_eq!(update_signs(&n, &from_fhir(&r).unwrap()), Ok(false));
        r["docStatus"] = json!("final");
        assert_eq!(update_signs(&n, &from_fhir(&r).unwrap()), Ok(true));
        r["content"][0]["attachment"] = json!({"contentType": "text/plain", "data": "aGk="});
        let e = update_signs(&n, &from_fhir(&r).unwrap()).unwrap_err();
        assert_eq!(
            e[0].expression.as_deref(),
            Some("DocumentReference.content")
        );
        let mut signed = n.clone();
        signed.signed_at = Some(Utc::now());
        let mut r = to_fhir(&signed, None);
        assert_eq!(update_signs(&signed, &from_fhir(&r).unwrap()), Ok(false));
        r["docStatus"] = json!("preliminary");
        assert!(update_signs(&signed, &from_fhir(&r).unwrap()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_round_trips(text in "\\PC{1,200}", t in 0usize..8) {
            let mut n = note();
            n.text = text;
            n.note_type = NOTE_TYPES[t].0.to_owned();
            let r = to_fhir(&n, None);
            let w = from_fhir(&r).unwrap();
            proptest::prop_assert_eq!(as_written(w, &n), n);
        }
    }
}
