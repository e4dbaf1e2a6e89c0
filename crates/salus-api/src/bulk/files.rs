//! Reading and writing bulk files, streaming: CSV (a header row, then one record per row),
//! JSON (one array of records, read element by element) and NDJSON (one record per line).
//! Readers hold one record at a time (at most [`MAX_RECORD_BYTES`]), so memory does not
//! grow with the file; they run on a blocking thread and hand rows to the import engine
//! through a bounded channel.

use super::Format;
use super::columns::{self, Header};
use salus_domain::bulk::export::ExportItem;
use salus_domain::bulk::import::{Input, Progress};
use salus_domain::bulk::{Kind, RowError, records};
use serde_json::Value;
use std::io::{BufRead, Read};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// The largest record (a JSON element, an NDJSON line) a reader takes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Counts the bytes read into the import's progress.
pub struct Counting<'a, R> {
    pub inner: R,
    pub progress: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Check the start of a file before its job is accepted: a CSV header that fits the
/// column mapping, a JSON file that opens an array.
pub fn check_start<R: BufRead>(mut reader: R, format: Format, kind: Kind) -> Result<(), String> {
    match format {
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(reader);
            let headers = rdr
                .headers()
                .map_err(|e| format!("the CSV header cannot be read: {e}"))?;
            if headers.is_empty() || headers.iter().all(|h| h.trim().is_empty()) {
                return Err("the CSV file has no header row".into());
            }
            Header::parse(kind, headers.iter()).map(|_| ())
        }
        Format::Json => {
            let mut bytes = Bytes::new(&mut reader);
            skip_space(&mut bytes).map_err(|e| e.to_string())?;
            match bytes.next().map_err(|e| e.to_string())? {
                Some(b'[') => Ok(()),
                _ => Err("a JSON import is one array of records ([{...}, ...]); for one record per line use NDJSON".into()),
            }
        }
        Format::Ndjson => Ok(()),
    }
}

/// Decode the rows of `reader` and send them (blocking; run on a blocking thread). Stops
/// early when the receiver is gone.
pub fn decode<R: BufRead>(reader: R, format: Format, kind: Kind, tx: &mpsc::Sender<Input>) {
    let sent = match format {
        Format::Csv => decode_csv(reader, kind, tx),
        Format::Json => decode_json(reader, kind, tx),
        Format::Ndjson => decode_ndjson(reader, kind, tx),
    };
    if let Err(Stop::Broken(m)) = sent {
        let _ = tx.blocking_send(Input::Broken(m));
    }
}

enum Stop {
    /// The engine stopped listening.
    Closed,
    /// The file cannot be read on.
    Broken(String),
}

fn send(tx: &mpsc::Sender<Input>, input: Input) -> Result<(), Stop> {
    tx.blocking_send(input).map_err(|_| Stop::Closed)
}

fn row_of(kind: Kind, row: u64, value: Result<Value, RowError>) -> Input {
    Input::Row(row, value.and_then(|v| records::decode(kind, row, v)))
}

fn decode_csv<R: Read>(reader: R, kind: Kind, tx: &mpsc::Sender<Input>) -> Result<(), Stop> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = {
        let h = rdr
            .headers()
            .map_err(|e| Stop::Broken(format!("the CSV header cannot be read: {e}")))?;
        Header::parse(kind, h.iter()).map_err(Stop::Broken)?
    };
    let mut record = csv::StringRecord::new();
    let mut row = 0u64;
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                row += 1;
                let value = columns::row_to_value(&header, row, &record);
                send(tx, row_of(kind, row, value))?;
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => {
                    return Err(Stop::Broken(format!("the file cannot be read: {e}")));
                }
                _ => {
                    row += 1;
                    send(
                        tx,
                        Input::Row(
                            row,
                            Err(RowError::new(row, None, format!("not a CSV row: {e}"))),
                        ),
                    )?;
                }
            },
        }
    }
}

/// Bytes of a buffered reader, one at a time, without copying.
struct Bytes<'a, R> {
    reader: &'a mut R,
}

impl<'a, R: BufRead> Bytes<'a, R> {
    fn new(reader: &'a mut R) -> Self {
        Self { reader }
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn next(&mut self) -> std::io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.reader.consume(1);
        }
        Ok(b)
    }
}

fn skip_space<R: BufRead>(bytes: &mut Bytes<'_, R>) -> std::io::Result<()> {
    // A UTF-8 byte-order mark is space here too.
    while let Some(b) = bytes.peek()? {
        if b.is_ascii_whitespace() || b == 0xEF || b == 0xBB || b == 0xBF {
            bytes.next()?;
        } else {
            break;
        }
    }
    Ok(())
}

fn io_broken(e: std::io::Error) -> Stop {
    Stop::Broken(format!("the file cannot be read: {e}"))
}

/// Read one JSON value (its bytes) of an array: an object or array by bracket depth
/// outside strings, a scalar up to the next `,` or `]`. `None` in the buffer means it was
/// longer than [`MAX_RECORD_BYTES`] (and was skipped).
fn json_element<R: BufRead>(bytes: &mut Bytes<'_, R>, out: &mut Vec<u8>) -> Result<bool, Stop> {
    out.clear();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut too_long = false;
    loop {
        let Some(b) = bytes.peek().map_err(io_broken)? else {
            return Err(Stop::Broken(
                "the JSON array is not closed (the file ends inside it)".into(),
            ));
        };
        if !in_string && depth == 0 && (b == b',' || b == b']') {
            return Ok(!too_long);
        }
        bytes.next().map_err(io_broken)?;
        if out.len() < MAX_RECORD_BYTES {
            out.push(b);
        } else {
            too_long = true;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(!too_long);
                }
            }
            _ => {}
        }
    }
}

fn decode_json<R: BufRead>(
    mut reader: R,
    kind: Kind,
    tx: &mpsc::Sender<Input>,
) -> Result<(), Stop> {
    let mut bytes = Bytes::new(&mut reader);
    skip_space(&mut bytes).map_err(io_broken)?;
    if bytes.next().map_err(io_broken)? != Some(b'[') {
        return Err(Stop::Broken("a JSON import is one array of records".into()));
    }
    let mut buf = Vec::new();
    let mut row = 0u64;
    loop {
        skip_space(&mut bytes).map_err(io_broken)?;
        if row == 0 && bytes.peek().map_err(io_broken)? == Some(b']') {
            bytes.next().map_err(io_broken)?;
            break;
        }
        row += 1;
        let whole = json_element(&mut bytes, &mut buf)?;
        let value = if !whole {
            Err(RowError::new(
                row,
                None,
                format!("the record is larger than {MAX_RECORD_BYTES} bytes"),
            ))
        } else {
            serde_json::from_slice::<Value>(&buf)
                .map_err(|e| RowError::new(row, None, format!("not a JSON record: {e}")))
        };
        send(tx, row_of(kind, row, value))?;
        skip_space(&mut bytes).map_err(io_broken)?;
        match bytes.next().map_err(io_broken)? {
            Some(b',') => continue,
            Some(b']') => break,
            _ => {
                return Err(Stop::Broken(format!(
                    "expected ',' or ']' after record {row} of the JSON array"
                )));
            }
        }
    }
    skip_space(&mut bytes).map_err(io_broken)?;
    if bytes.peek().map_err(io_broken)?.is_some() {
        return Err(Stop::Broken("there is data after the JSON array".into()));
    }
    Ok(())
}

/// Read one line (without its end) into `out`; false at the end of the file. A line longer
/// than [`MAX_RECORD_BYTES`] is cut there (and `long` set).
fn line<R: BufRead>(reader: &mut R, out: &mut Vec<u8>, long: &mut bool) -> std::io::Result<bool> {
    out.clear();
    *long = false;
    let mut any = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_RECORD_BYTES.saturating_sub(out.len());
        if chunk.len() > room {
            *long = true;
        }
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

fn decode_ndjson<R: BufRead>(
    mut reader: R,
    kind: Kind,
    tx: &mpsc::Sender<Input>,
) -> Result<(), Stop> {
    let mut buf = Vec::new();
    let mut long = false;
    let mut row = 0u64;
    while line(&mut reader, &mut buf, &mut long).map_err(io_broken)? {
        row += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = if long {
            Err(RowError::new(
                row,
                None,
                format!("the line is longer than {MAX_RECORD_BYTES} bytes"),
            ))
        } else {
            serde_json::from_slice::<Value>(&buf)
                .map_err(|e| RowError::new(row, None, format!("not a JSON record: {e}")))
        };
        send(tx, row_of(kind, row, value))?;
    }
    Ok(())
}

/// Writes exported resources in a format, page by page.
pub struct Encoder {
    format: Format,
    kind: Kind,
    first: bool,
}

/// CSV text of some rows.
fn csv_rows(rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    for r in rows {
        let _ = w.write_record(&r);
    }
    w.into_inner().unwrap_or_default()
}

impl Encoder {
    pub fn new(format: Format, kind: Kind) -> Self {
        Self {
            format,
            kind,
            first: true,
        }
    }

    /// What opens the file (the CSV header, the JSON array's `[`).
    pub fn start(&mut self) -> Vec<u8> {
        match self.format {
            Format::Csv => csv_rows([columns::columns(self.kind)
                .iter()
                .map(|c| (*c).to_owned())
                .collect()]),
            Format::Json => b"[".to_vec(),
            Format::Ndjson => Vec::new(),
        }
    }

    /// One page of resources.
    pub fn page(&mut self, items: &[ExportItem]) -> Vec<u8> {
        if self.format == Format::Csv {
            return csv_rows(
                items
                    .iter()
                    .map(|i| columns::value_to_row(self.kind, &export_doc(self.kind, i))),
            );
        }
        let mut out = Vec::new();
        for item in items {
            let doc = export_doc(self.kind, item);
            match self.format {
                Format::Csv => {}
                Format::Json => {
                    out.extend_from_slice(if self.first { b"\n" } else { b",\n" });
                    self.first = false;
                    let _ = serde_json::to_writer(&mut out, &doc);
                }
                Format::Ndjson => {
                    let _ = serde_json::to_writer(&mut out, &doc);
                    out.push(b'\n');
                }
            }
        }
        out
    }

    /// What closes the file.
    pub fn finish(&mut self) -> Vec<u8> {
        match self.format {
            Format::Json => b"\n]\n".to_vec(),
            _ => Vec::new(),
        }
    }
}

/// The exported form of a resource: the API's JSON of it plus its references' natural keys.
pub fn export_doc(kind: Kind, item: &ExportItem) -> Value {
    let mut doc = crate::http::resource_json(&item.row);
    if let Value::Object(m) = &mut doc {
        if kind != Kind::Patients {
            m.insert(
                "patient_identifier".into(),
                item.patient_identifier
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            );
        }
        if kind == Kind::Encounters {
            m.insert(
                "clinician_credential".into(),
                item.clinician_credential
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            );
            m.insert(
                "department_code".into(),
                item.department_code
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            );
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(format: Format, kind: Kind, text: &str) -> Vec<Input> {
        let (tx, mut rx) = mpsc::channel(1024);
        decode(
            std::io::Cursor::new(text.as_bytes().to_vec()),
            format,
            kind,
            &tx,
        );
        drop(tx);
        let mut out = Vec::new();
        while let Ok(i) = rx.try_recv() {
            out.push(i);
        }
        out
    }

    fn summary(inputs: &[Input]) -> Vec<String> {
        inputs
            .iter()
            .map(|i| match i {
                Input::Row(n, Ok(_)) => format!("{n}:ok"),
                Input::Row(n, Err(e)) => format!("{n}:err:{}", e.field.clone().unwrap_or_default()),
                Input::Broken(m) => format!("broken:{m}"),
            })
            .collect()
    }

    #[test]
    fn json_arrays_are_read_element_by_element_and_bad_elements_stay_alone() {
        let text = r#" [ {"family_x": 1}, {"name": [{"family": "A, [b]", "given": ["{x\"y"]}]}, 42 ,
            {"identifiers": "nope"} ] "#;
        assert_eq!(
            summary(&rows(Format::Json, Kind::Patients, text)),
            ["1:err:family_x", "2:ok", "3:err:", "4:err:"]
        );
        assert_eq!(
            summary(&rows(Format::Json, Kind::Patients, "[]")),
            Vec::<String>::new()
        );
        let broken = summary(&rows(
            Format::Json,
            Kind::Patients,
            r#"[{"name": []} {"name": []}]"#,
        ));
        assert_eq!(broken.len(), 2);
        assert!(broken[1].starts_with("broken:expected ','"), "{broken:?}");
        let open = summary(&rows(
            Format::Json,
            Kind::Patients,
            r#"[{"name": []}, {"na"#,
        ));
        assert!(open.last().unwrap().contains("not closed"), "{open:?}");
    }

    #[test]
    fn ndjson_numbers_rows_by_line_and_skips_blank_lines() {
        let text = "{\"kind\":\"call\",\"outcome\":\"healthy\",\"patient_id\":\"0190a5a8-0000-7000-8000-000000000001\"}\n\n{oops\n";
        assert_eq!(
            summary(&rows(Format::Ndjson, Kind::Interactions, text)),
            ["1:ok", "3:err:"]
        );
    }

    #[test]
    fn csv_rows_with_the_wrong_number_of_fields_fail_alone() {
        let text = "family,given\nLovelace,Ada\nBabbage\nHopper,Grace\n";
        assert_eq!(
            summary(&rows(Format::Csv, Kind::Patients, text)),
            ["1:ok", "2:err:", "3:ok"]
        );
        let bad = summary(&rows(Format::Csv, Kind::Patients, "colour\nred\n"));
        assert!(bad[0].contains("unknown column"), "{bad:?}");
    }

    proptest! {
        /// The readers never panic and never send more rows than the input has records,
        /// whatever the bytes.
        #[test]
        fn readers_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&data).into_owned();
            for format in [Format::Csv, Format::Json, Format::Ndjson] {
                let n = rows(format, Kind::Patients, &text).len();
                prop_assert!(n <= data.len() + 1);
            }
        }

        /// A JSON array of any records splits into exactly its elements.
        #[test]
        fn json_arrays_split_into_their_elements(names in proptest::collection::vec("[a-z\"\\\\\\[\\]{},]{0,6}", 0..8)) {
            let elements: Vec<Value> = names.iter().map(|n| serde_json::json!({"name": [{"family": n}]})).collect();
            let text = serde_json::to_string(&elements).unwrap();
            let got = rows(Format::Json, Kind::Patients, &text);
            prop_assert_eq!(got.len(), elements.len());
            for (i, g) in got.iter().enumerate() {
                let is_row = matches!(g, Input::Row(n, Ok(_)) if *n == i as u64 + 1);
                prop_assert!(is_row);
            }
        }
    }
}
