//! Values taken from query strings and headers: cursors, instants, uuids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_api::http;

fuzz_target!(|data: &str| {
    // A cursor that decodes is exactly the one the server would have issued for it.
    if let Ok((id, value)) = http::decode_cursor_parts(data) {
        let again = match &value {
            Some(v) => http::encode_cursor_at(id, v),
            None => http::encode_cursor(id),
        };
        assert_eq!(again, data);
    }
    let _ = http::parse_instant("from", data);
    let _ = http::parse_uuid("id", data);
    let _ = salus_domain::clinical::interaction::parse_instant("occurred_at", data);
    let _ = salus_domain::registry::patient::parse_date("birth_date", data);
    let _ = salus_kernel::ids::parse_id(data);
});
