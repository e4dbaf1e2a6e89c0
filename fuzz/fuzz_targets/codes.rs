//! Code and value parsers of the clinical record and the registry: any text is either
//! accepted or refused with an error, never a panic; what is accepted is accepted again
//! in its normalised form (a parser that normalises to something it refuses is a bug).
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_domain::clinical::{attachment, observation, outcome, procedure};
use salus_domain::registry::values::{E164Phone, Email, Gender, HumanName, Identifier};

fuzz_target!(|data: &str| {
    if let Ok(u) = observation::parse_ucum(data) {
        assert!(observation::parse_ucum(&u).is_ok(), "{u:?} from {data:?}");
    }
    if let Ok(c) = observation::parse_loinc(data) {
        assert!(observation::parse_loinc(&c).is_ok(), "{c:?} from {data:?}");
    }
    if let Ok(c) = procedure::parse_sctid(data) {
        assert!(procedure::parse_sctid(&c).is_ok(), "{c:?} from {data:?}");
    }
    if let Ok(c) = outcome::parse_code(data) {
        assert!(outcome::parse_code(&c).is_ok(), "{c:?} from {data:?}");
    }
    let _ = attachment::parse_filename(data);
    let _ = E164Phone::parse(data);
    let _ = Email::parse(data);
    let _ = Gender::parse(data);
    let (a, b) = data.split_at(
        data.char_indices()
            .nth(data.chars().count() / 2)
            .map_or(0, |(i, _)| i),
    );
    let _ = Identifier::parse(a, b);
    let _ = HumanName::parse(a, &[b.to_owned()]);
});
