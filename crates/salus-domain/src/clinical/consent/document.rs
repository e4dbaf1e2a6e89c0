//! The signed consent's PDF: evidence of what was consented to, never the source of truth
//! (the consent's events are). It shows the template and version, every clause's text, the
//! acknowledgements with their SHA-256 snapshots, the signatures and the revocation rule.
//!
//! Plain PDF 1.5 written with `lopdf`: A4 pages, the standard Helvetica fonts in
//! WinAnsiEncoding (Latin-1), uncompressed content streams. A character the encoding lacks
//! is shown as `?`; the hashes are of the exact stored text. Rendering is pure and
//! deterministic: the same consent gives the same bytes.

use super::instance::Consent;
use lopdf::content::{Content, Operation};
use lopdf::{Dictionary, Document, Object, Stream, dictionary};

const PAGE_W: i64 = 595;
const PAGE_H: i64 = 842;
const MARGIN: i64 = 50;
const SIZE: i64 = 10;
const LEADING: i64 = 14;
/// Characters per line at 10 pt Helvetica within the margins (conservative).
const WRAP: usize = 88;
/// The same for Courier (6 pt a character at 10 pt).
const WRAP_MONO: usize = 80;

#[derive(Debug, thiserror::Error)]
#[error("the consent document could not be written: {0}")]
pub struct RenderError(String);

/// Lines of text in one font.
enum Line {
    Bold(String),
    Plain(String),
    Mono(String),
    Gap,
}

/// Split `text` into lines of at most `width` characters, at spaces where it can.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split(' ') {
            let mut word = word.to_owned();
            while word.chars().count() > width {
                if !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                }
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                out.push(head);
            }
            let len = line.chars().count();
            if len > 0 && len + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            } else if len > 0 {
                line.push(' ');
            }
            line.push_str(&word);
        }
        out.push(line);
    }
    out
}

fn win_ansi(text: &str) -> Vec<u8> {
    let enc = lopdf::Encoding::SimpleEncoding(b"WinAnsiEncoding");
    let mut out = Vec::with_capacity(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        let bytes = enc.string_to_bytes(c.encode_utf8(&mut buf));
        if bytes.is_empty() {
            out.push(b'?');
        } else {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn stamp(t: &chrono::DateTime<chrono::Utc>) -> String {
    salus_kernel::event::format_instant(t)
}

fn lines_of(c: &Consent, patient: Option<&str>) -> Vec<Line> {
    let mut l = vec![
        Line::Bold(format!("Consent: {}", c.title)),
        Line::Plain(format!("Consent id: {}", c.id)),
        Line::Plain(match patient {
            Some(p) => format!("Patient: {p} (id {})", c.patient_id),
            None => format!("Patient id: {}", c.patient_id),
        }),
        Line::Plain(format!(
            "Template: {} version {} (kind: {})",
            c.template_id, c.template_version, c.kind
        )),
        Line::Plain(format!("Status: {}", c.status.as_str())),
        Line::Gap,
    ];
    for s in &c.sections {
        l.push(Line::Bold(format!("{}. {}", s.order, s.title)));
        for cl in &s.clauses {
            let flag = if cl.required { "required" } else { "optional" };
            l.push(Line::Plain(format!("{}.{} [{flag}]", s.order, cl.order)));
            for w in wrap(&cl.text, WRAP) {
                l.push(Line::Plain(w));
            }
            match c.acknowledged(cl.id) {
                Some(a) => {
                    let by = a
                        .acknowledged_by
                        .as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default();
                    l.push(Line::Plain(format!(
                        "Acknowledged{by} at {} (recorded by user {})",
                        stamp(&a.acknowledged_at),
                        a.recorded_by
                    )));
                    l.push(Line::Mono(format!("SHA-256 {}", a.text_sha256)));
                }
                None => l.push(Line::Plain("Not acknowledged".into())),
            }
            l.push(Line::Gap);
        }
    }
    l.push(Line::Bold("Signatures".into()));
    for s in &c.signatures {
        l.push(Line::Plain(format!(
            "{} ({}), {}, at {} (recorded by user {})",
            s.signer_name,
            s.role.as_str(),
            s.method.as_str(),
            stamp(&s.signed_at),
            s.recorded_by
        )));
    }
    l.push(Line::Gap);
    for w in wrap(
        "This document is evidence of the consent above; the consent record in Salus is the source of truth. Each SHA-256 is of the clause text exactly as acknowledged. A revoked consent is never signed again: a new consent is created instead.",
        WRAP,
    ) {
        l.push(Line::Plain(w));
    }
    // Every line fits the page: long ones wrap (Courier is wider per character).
    l.into_iter()
        .flat_map(|line| match line {
            Line::Plain(t) => wrap(&t, WRAP).into_iter().map(Line::Plain).collect(),
            Line::Bold(t) => wrap(&t, WRAP).into_iter().map(Line::Bold).collect(),
            Line::Mono(t) => wrap(&t, WRAP_MONO).into_iter().map(Line::Mono).collect(),
            Line::Gap => vec![Line::Gap],
        })
        .collect()
}

/// The PDF of a consent as it stands (rendered when it is signed); `patient` names the
/// patient as the registry has them (see [`patient_label`]).
pub fn render(consent: &Consent, patient: Option<&str>) -> Result<Vec<u8>, RenderError> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = |doc: &mut Document, name: &str| {
        doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => name.to_owned(),
            "Encoding" => "WinAnsiEncoding",
        })
    };
    let plain = font(&mut doc, "Helvetica");
    let bold = font(&mut doc, "Helvetica-Bold");
    let mono = font(&mut doc, "Courier");
    let resources = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => plain, "F2" => bold, "F3" => mono },
    });
    let per_page = ((PAGE_H - 2 * MARGIN) / LEADING) as usize;
    let lines = lines_of(consent, patient);
    let mut kids = Vec::new();
    for chunk in lines.chunks(per_page.max(1)) {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("TL", vec![LEADING.into()]),
            Operation::new("Td", vec![MARGIN.into(), (PAGE_H - MARGIN).into()]),
        ];
        for line in chunk {
            let (f, text) = match line {
                Line::Bold(t) => ("F2", t.as_str()),
                Line::Plain(t) => ("F1", t.as_str()),
                Line::Mono(t) => ("F3", t.as_str()),
                Line::Gap => ("F1", ""),
            };
            ops.push(Operation::new(
                "Tf",
                vec![Object::Name(f.into()), SIZE.into()],
            ));
            if !text.is_empty() {
                ops.push(Operation::new(
                    "Tj",
                    vec![Object::string_literal(win_ansi(text))],
                ));
            }
            ops.push(Operation::new("T*", vec![]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops }
            .encode()
            .map_err(|e| RenderError(e.to_string()))?;
        let content_id = doc.add_object(Stream::new(Dictionary::new(), content));
        let page = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(Object::Reference(page));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), PAGE_W.into(), PAGE_H.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    let info = doc.add_object(dictionary! {
        "Title" => Object::string_literal(win_ansi(&format!("Consent {}", consent.id))),
        "Producer" => Object::string_literal("Salus"),
    });
    doc.trailer.set("Root", catalog);
    doc.trailer.set("Info", info);
    let mut out = Vec::new();
    doc.save_to(&mut out)
        .map_err(|e| RenderError(e.to_string()))?;
    Ok(out)
}

/// How the document names a patient: the first name on the record, family name first,
/// and the birth date when known ("Lovelace, Ada (born 1815-12-10)").
pub fn patient_label(p: &crate::registry::Patient) -> Option<String> {
    let name = p.details.name.first()?;
    let mut out = name.family.clone();
    if !name.given.is_empty() {
        out.push_str(", ");
        out.push_str(&name.given.join(" "));
    }
    if let Some(b) = p.details.birth_date {
        out.push_str(&format!(" (born {b})"));
    }
    Some(out)
}

/// The text of a PDF's pages (for tests and `salus` tooling): lines joined by `\n`.
pub fn extract_text(pdf: &[u8]) -> Result<String, RenderError> {
    let doc = Document::load_mem(pdf).map_err(|e| RenderError(e.to_string()))?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages)
        .map_err(|e| RenderError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrapping_keeps_every_word_in_order() {
        let t = "one two three four five six seven";
        let lines = wrap(t, 9);
        assert!(lines.iter().all(|l| l.chars().count() <= 9), "{lines:?}");
        assert_eq!(lines.join(" "), t);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    proptest! {
        #[test]
        fn wrapped_lines_rejoin_to_the_text(words in proptest::collection::vec("[a-zA-Z0-9.,]{1,12}", 1..60), width in 12usize..100) {
            let t = words.join(" ");
            let lines = wrap(&t, width);
            prop_assert!(lines.iter().all(|l| l.chars().count() <= width));
            prop_assert_eq!(lines.join(" "), t);
        }
    }
}
