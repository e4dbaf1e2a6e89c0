//! What tokens carry into access decisions: SMART scopes, permission and role names, and the
//! claims an issuer's mapping reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_domain::access::{self, scopes, Permission};

fuzz_target!(|data: &str| {
    // Scopes never grant beyond FHIR data, whatever they say.
    let fhir = scopes::fhir_permissions();
    if let Ok(Some(scope)) = scopes::parse(data) {
        assert!(scope.permissions(true).is_subset(fhir));
    }
    if let Some(set) = scopes::narrowing(data.split_whitespace(), true) {
        assert!(set.is_subset(fhir));
    }
    // A permission that parses is exactly its name.
    if let Ok(p) = Permission::parse(data) {
        assert_eq!(p.as_str(), data);
    }
    // A role name that parses is accepted again as it is.
    if let Ok(name) = access::parse_role_name(data) {
        assert_eq!(access::parse_role_name(&name).ok(), Some(name));
    }
    // Claims of any shape map to roles and a tenant without a panic.
    if let Ok(claims) = serde_json::from_str::<salus_api::auth::Claims>(data) {
        let mapping = salus_api::auth::ClaimMapping::default();
        let _ = mapping.roles(&claims);
        let _ = mapping.tenant(&claims);
    }
});
