//! The R4 search-parameter expressions against the FHIRPath subset, and the parser's
//! properties.

use proptest::prelude::*;
use salus_fhir::coverage;
use salus_fhir::definitions::search_parameters;
use salus_fhir::fhirpath::{self, BinOp, Expr};
use salus_fhir::index;
use serde_json::{Value, json};

/// The resource types Salus serves over FHIR today.
const SUPPORTED: &[&str] = &["Patient"];

/// Fuller resources than `{"resourceType": X}`, so that evaluation walks real paths.
fn sample(resource_type: &str) -> Option<Value> {
    Some(match resource_type {
        "Patient" => json!({"resourceType": "Patient", "id": "p1", "active": true,
            "identifier": [{"system": "urn:mrn", "value": "1"}],
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "telecom": [{"system": "phone", "value": "+442079460958"}, {"system": "email", "value": "a@b.org"}],
            "gender": "female", "birthDate": "1815-12-10", "deceasedDateTime": "1852-11-27",
            "address": [{"city": "London", "country": "GB"}],
            "generalPractitioner": [{"reference": "Practitioner/1"}],
            "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}],
            "extension": [{"url": "http://example.org/x", "valueString": "y"}]}),
        "Observation" => json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 72},
            "effectiveDateTime": "2024-01-01T10:00:00Z",
            "component": [{"code": {"text": "x"}, "valueCodeableConcept": {"text": "y"}}]}),
        "Encounter" => json!({"resourceType": "Encounter", "status": "finished",
            "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"},
            "participant": [{"individual": {"reference": "Practitioner/1"}}],
            "period": {"start": "2024-01-01"}}),
        "Bundle" => json!({"resourceType": "Bundle", "type": "document",
            "entry": [{"resource": {"resourceType": "Composition", "status": "final"}}]}),
        _ => return None,
    })
}

#[test]
fn every_search_parameter_of_the_supported_types_parses_and_evaluates() {
    for rt in SUPPORTED {
        let params = search_parameters().of(rt);
        assert!(params.len() > 20, "{rt} has {} parameters", params.len());
        for p in params {
            let Some(expr) = &p.expression else { continue };
            let parsed = fhirpath::parse(expr).unwrap_or_else(|e| panic!("{}: {e}", p.id));
            assert_eq!(
                fhirpath::parse(&parsed.to_string()).unwrap(),
                parsed,
                "{}",
                p.id
            );
            salus_fhir::coverage::resolve_paths(salus_fhir::definitions::structures(), &parsed, rt)
                .unwrap_or_else(|e| panic!("{}: {e}", p.id));
            let r = sample(rt).unwrap();
            index::extract(p, &r).unwrap_or_else(|e| panic!("{}: {e}", p.id));
        }
    }
}

#[test]
fn coverage_of_the_r4_search_parameters() {
    let c = coverage::measure(sample);
    println!(
        "R4 search parameters with an expression: {}; parsed: {} ({:.1}%); every path resolved against the structure definitions: {} ({:.1}%); evaluated over every base type: {} ({:.1}%)",
        c.with_expression,
        c.parsed,
        100.0 * c.parsed as f64 / c.with_expression as f64,
        c.resolved,
        100.0 * c.resolved as f64 / c.with_expression as f64,
        c.evaluated,
        100.0 * c.evaluated as f64 / c.with_expression as f64
    );
    for (id, why) in &c.failures {
        println!("  {id}: {why}");
    }
    assert_eq!(c.with_expression, 1375);
    assert_eq!(c.parsed, c.with_expression, "{:?}", c.failures);
    assert_eq!(c.evaluated, c.with_expression, "{:?}", c.failures);
    assert!(
        c.resolved * 100 >= c.with_expression * 95,
        "{:?}",
        c.failures
    );
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-zA-Z0-9]{0,6}",
        Just("as".to_owned()),
        Just("where".to_owned()),
        "[ -~]{1,5}",
    ]
}

fn type_name() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Z][a-zA-Z]{0,6}", Just("System.String".to_owned())]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::Empty),
        any::<bool>().prop_map(Expr::Bool),
        "[ -~\\n]{0,6}".prop_map(Expr::Str),
        "[0-9]{1,4}(\\.[0-9]{1,3})?".prop_map(Expr::Num),
        "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?)?)?".prop_map(Expr::DateTime),
        Just(Expr::This),
        Just(Expr::Index),
        "[a-z]{1,6}".prop_map(Expr::Env),
        name().prop_map(Expr::Ident),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        let op = prop_oneof![
            Just(BinOp::Union),
            Just(BinOp::And),
            Just(BinOp::Or),
            Just(BinOp::Eq),
            Just(BinOp::Ne),
            Just(BinOp::Lt),
            Just(BinOp::Add),
            Just(BinOp::Mul),
            Just(BinOp::In),
            Just(BinOp::Implies),
            Just(BinOp::Concat),
        ];
        prop_oneof![
            (inner.clone(), name()).prop_map(|(e, n)| Expr::Member(Box::new(e), n)),
            (
                proptest::option::of(inner.clone()),
                name(),
                proptest::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(f, name, args)| Expr::Func {
                    focus: f.map(Box::new),
                    name,
                    args
                }),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| Expr::Indexer(Box::new(a), Box::new(b))),
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            (op, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Bin(
                op,
                Box::new(a),
                Box::new(b)
            )),
            (any::<bool>(), inner, type_name()).prop_map(|(is, e, ty)| Expr::TypeTest {
                is,
                expr: Box::new(e),
                ty
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics the parser (nor an evaluation of what parses).
    #[test]
    fn the_parser_never_panics(src in "[ -~]{0,64}") {
        if let Ok(e) = fhirpath::parse(&src) {
            let _ = fhirpath::evaluate(&e, &json!({"resourceType": "Patient", "name": [{"family": "A"}]}));
        }
    }

    /// Text made of FHIRPath's own tokens never panics it either.
    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(prop_oneof![
        Just("Patient"), Just("."), Just("name"), Just("("), Just(")"), Just("["), Just("]"),
        Just("|"), Just("and"), Just("as"), Just("is"), Just("where"), Just("'x'"), Just("1"),
        Just("@2020"), Just("$this"), Just("%resource"), Just("="), Just(","), Just("-"), Just("`a`"),
    ], 0..24)) {
        let src = toks.join(" ");
        if let Ok(e) = fhirpath::parse(&src) {
            prop_assert_eq!(fhirpath::parse(&e.to_string()), Ok(e));
        }
    }

    /// The printed form of any tree parses back to the same tree.
    #[test]
    fn printing_round_trips(e in expr()) {
        let text = e.to_string();
        prop_assert_eq!(fhirpath::parse(&text), Ok(e), "{}", text);
    }
}

#[test]
fn the_path_check_catches_unknown_elements() {
    let st = salus_fhir::definitions::structures();
    let check = |src: &str, base: &str| {
        salus_fhir::coverage::resolve_paths(st, &fhirpath::parse(src).unwrap(), base)
    };
    assert!(check("Patient.nmae", "Patient").is_err());
    assert!(
        check("Observation.valueQuantity", "Observation").is_err(),
        "a choice is named without its type"
    );
    assert!(check("Observation.value.ofType(Quantity).value", "Observation").is_ok());
    assert!(check("Patient.contact.name.family", "Patient").is_ok());
    assert!(check("Patient.contact.nmae", "Patient").is_err());
    assert!(
        check("Questionnaire.item.item.linkId", "Questionnaire").is_ok(),
        "content references"
    );
    assert!(check("Patient.birthDate | Person.birthDate", "Patient").is_ok());
}
