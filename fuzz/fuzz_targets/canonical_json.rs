//! Canonical JSON (what event hashes cover): any JSON value renders to text that parses
//! back to the same value, and rendering is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_kernel::canonical::to_canonical_string;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let text = to_canonical_string(&v);
    let back: serde_json::Value = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => panic!("canonical text does not parse: {e}: {text}"),
    };
    assert_eq!(back, v);
    assert_eq!(to_canonical_string(&back), text);
});
