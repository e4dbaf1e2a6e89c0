//! A bulk import file of any kind and format: decoding yields rows or row errors or a
//! "file is broken" message, never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_api::bulk::{files, Format};
use salus_domain::bulk::import::Input;
use salus_domain::bulk::Kind;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = [Format::Csv, Format::Json, Format::Ndjson][usize::from(selector % 3)];
    let kind = [
        Kind::Patients,
        Kind::Interactions,
        Kind::Encounters,
        Kind::Observations,
    ][usize::from((selector / 3) % 4)];
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Input>(64);
    let drain = std::thread::spawn(move || {
        let mut n = 0usize;
        while rx.blocking_recv().is_some() {
            n += 1;
        }
        n
    });
    files::decode(body, format, kind, &tx);
    drop(tx);
    let _ = drain.join();
});
