//! SMART on FHIR scopes (App Launch 1 and 2): `patient/*.read`, `user/Observation.write`,
//! `system/*.read`, and the v2 form `patient/Observation.rs` (letters `c r u d s`, in that
//! order). A token's scopes narrow what it may do below its roles: effective permissions
//! are the roles' ∩ the scopes' whenever the token carries at least one resource scope.
//!
//! Each FHIR resource type maps to our permission domains in one table, [`FHIR_RESOURCES`].
//! Our permissions are coarser than SMART's interactions, so a scope grants a permission
//! only if it grants everything the permission covers: `:read` needs both `r` and `s`,
//! `:write` needs `c`, `u` and `d` (v1 `read` and `write` are exactly these). Fail closed
//! everywhere: a malformed resource scope, or one with parameters (`?category=…`, which we
//! cannot enforce), counts as present and grants nothing; `patient/` scopes grant nothing
//! to a token without a patient context. Scopes never grant what is not a FHIR resource
//! (users, roles, audit), with one exception the Bulk Data Access IG makes: a `system/`
//! scope that reads also grants `exports:read`, the `$export` kick-off, status and files
//! (a kick-off still needs the read permission of each type it exports).

use super::{Permission, PermissionSet};

/// Whose data a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The patient in the token's launch context (claim `patient`).
    Patient,
    /// What the signed-in user may see.
    User,
    /// A backend service, no user.
    System,
}

/// SMART v2 interactions, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interactions(u8);

const LETTERS: [char; 5] = ['c', 'r', 'u', 'd', 's'];

impl Interactions {
    pub const READ: Interactions = Interactions(0b01001); // r, s
    pub const WRITE: Interactions = Interactions(0b10110); // c, u, d
    pub const ALL: Interactions = Interactions(0b11111);

    fn bit(c: char) -> Option<u8> {
        LETTERS.iter().position(|l| *l == c).map(|i| 1 << (4 - i))
    }

    pub fn has(self, c: char) -> bool {
        Self::bit(c).is_some_and(|b| self.0 & b != 0)
    }

    fn covers(self, other: Interactions) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// The FHIR resource type; `None` for `*`.
    pub resource: Option<String>,
    pub interactions: Interactions,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope '{0}': the context must be patient, user or system")]
    Context(String),
    #[error("scope '{0}': the resource must be * or a FHIR resource type")]
    Resource(String),
    #[error(
        "scope '{0}': the action must be read, write, * or SMART v2 letters in the order c r u d s"
    )]
    Action(String),
    #[error("scope '{0}': scope parameters are not supported")]
    Parameters(String),
}

/// Parse one scope. `Ok(None)` for scopes that are not about resources (`openid`,
/// `profile`, `fhirUser`, `launch`, `launch/patient`, `offline_access`, …).
pub fn parse(scope: &str) -> Result<Option<Scope>, ScopeError> {
    let Some((context, rest)) = scope.split_once('/') else {
        return Ok(None);
    };
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        "launch" => return Ok(None),
        _ => return Err(ScopeError::Context(scope.into())),
    };
    if rest.contains('?') {
        return Err(ScopeError::Parameters(scope.into()));
    }
    let (resource, action) = rest
        .split_once('.')
        .ok_or_else(|| ScopeError::Action(scope.into()))?;
    let resource = match resource {
        "*" => None,
        r if r.len() <= 64
            && r.starts_with(|c: char| c.is_ascii_uppercase())
            && r.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Some(r.to_owned())
        }
        _ => return Err(ScopeError::Resource(scope.into())),
    };
    let interactions = match action {
        "read" => Interactions::READ,
        "write" => Interactions::WRITE,
        "*" => Interactions::ALL,
        letters => {
            let mut bits = 0u8;
            let mut last: Option<usize> = None;
            for c in letters.chars() {
                let i = LETTERS
                    .iter()
                    .position(|l| *l == c)
                    .ok_or_else(|| ScopeError::Action(scope.into()))?;
                if last.is_some_and(|l| i <= l) {
                    return Err(ScopeError::Action(scope.into()));
                }
                last = Some(i);
                bits |= 1 << (4 - i);
            }
            if bits == 0 {
                return Err(ScopeError::Action(scope.into()));
            }
            Interactions(bits)
        }
    };
    Ok(Some(Scope {
        context,
        resource,
        interactions,
    }))
}

/// FHIR resource types and the permissions reading and writing them take here.
pub const FHIR_RESOURCES: &[(&str, &[&str], &[&str])] = &[
    ("Patient", &["patients:read"], &["patients:write"]),
    (
        "Observation",
        &["observations:read"],
        &["observations:write"],
    ),
    ("Encounter", &["encounters:read"], &["encounters:write"]),
    ("Procedure", &["procedures:read"], &["procedures:write"]),
    ("Condition", &["conditions:read"], &["conditions:write"]),
    (
        "AllergyIntolerance",
        &["allergies:read"],
        &["allergies:write"],
    ),
    (
        "Communication",
        &["interactions:read"],
        &["interactions:write"],
    ),
    ("Practitioner", &["clinicians:read"], &["clinicians:write"]),
    ("Location", &["places:read"], &["places:write"]),
    ("Organization", &["places:read"], &["places:write"]),
    (
        "DocumentReference",
        &["medical_records:read", "notes:read", "attachments:read"],
        &["medical_records:write", "notes:write", "attachments:write"],
    ),
    ("Binary", &["attachments:read"], &["attachments:write"]),
    ("Consent", &["consents:read"], &["consents:write"]),
    ("Appointment", &[], &["theater:book"]),
    ("MedicationRequest", &[], &["orders:write:medication"]),
    // The types Salus keeps as documents share one permission pair, so only a scope on
    // every type (`*`) grants it.
    ("*", &["fhir_resources:read"], &["fhir_resources:write"]),
];

fn set_of(names: &[&str]) -> PermissionSet {
    names
        .iter()
        .filter_map(|n| Permission::parse(n).ok())
        .collect()
}

/// Every permission some FHIR resource maps to: all a scope can ever grant.
pub fn fhir_permissions() -> PermissionSet {
    FHIR_RESOURCES
        .iter()
        .fold(PermissionSet::EMPTY, |acc, (_, r, w)| {
            acc.union(set_of(r)).union(set_of(w))
        })
}

impl Scope {
    /// What this scope grants, for a token with (or without) a patient context.
    pub fn permissions(&self, has_patient: bool) -> PermissionSet {
        if self.context == Context::Patient && !has_patient {
            return PermissionSet::EMPTY;
        }
        let mut out = PermissionSet::EMPTY;
        for (fhir, read, write) in FHIR_RESOURCES {
            if self.resource.as_deref().is_some_and(|r| r != *fhir) {
                continue;
            }
            if self.interactions.covers(Interactions::READ) {
                out = out.union(set_of(read));
            }
            if self.interactions.covers(Interactions::WRITE) {
                out = out.union(set_of(write));
            }
        }
        // SMART Backend Services: what a Bulk Data client holds.
        if self.context == Context::System && self.interactions.covers(Interactions::READ) {
            out = out.union(set_of(&["exports:read"]));
        }
        out
    }
}

/// What a token's scopes allow: `None` when it carries no resource scope (its roles
/// alone count), else the union of what its resource scopes grant.
pub fn narrowing<'a>(
    scopes: impl IntoIterator<Item = &'a str>,
    has_patient: bool,
) -> Option<PermissionSet> {
    let mut present = false;
    let mut out = PermissionSet::EMPTY;
    for s in scopes {
        match parse(s) {
            Ok(None) => {}
            Ok(Some(scope)) => {
                present = true;
                out = out.union(scope.permissions(has_patient));
            }
            Err(_) => present = true,
        }
    }
    present.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn perms(s: &str, patient: bool) -> Vec<&'static str> {
        parse(s).unwrap().unwrap().permissions(patient).names()
    }

    #[test]
    fn v1_and_v2_scopes_parse_to_the_same_grants() {
        assert_eq!(perms("user/Observation.read", false), ["observations:read"]);
        assert_eq!(perms("user/Observation.rs", false), ["observations:read"]);
        assert_eq!(
            perms("user/Observation.write", false),
            ["observations:write"]
        );
        assert_eq!(perms("user/Observation.cud", false), ["observations:write"]);
        assert_eq!(
            perms("system/Observation.*", false),
            ["observations:read", "observations:write", "exports:read"]
        );
        // Bulk Data: a system read scope may export; a user or patient one may not.
        assert!(perms("system/Patient.rs", false).contains(&"exports:read"));
        assert!(!perms("system/Patient.cud", false).contains(&"exports:read"));
        assert!(!perms("user/*.read", false).contains(&"exports:read"));
        assert!(!perms("patient/*.read", true).contains(&"exports:read"));
        // Partial interactions grant nothing coarser than they are.
        assert!(perms("user/Observation.r", false).is_empty());
        assert!(perms("user/Observation.cu", false).is_empty());
        // patient/ needs a patient context.
        assert!(perms("patient/*.read", false).is_empty());
        let all_read = perms("patient/*.read", true);
        assert!(all_read.contains(&"patients:read") && all_read.contains(&"notes:read"));
        assert!(all_read.iter().all(|p| p.ends_with(":read")));
        assert!(!perms("system/*.*", false).contains(&"users:write"));
    }

    #[test]
    fn non_resource_scopes_are_ignored_and_malformed_ones_fail_closed() {
        for s in [
            "openid",
            "profile",
            "fhirUser",
            "launch",
            "launch/patient",
            "offline_access",
        ] {
            assert_eq!(parse(s), Ok(None), "{s}");
        }
        for s in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation.x",
            "patient/observation.read",
            "doctor/Patient.read",
            "patient/Observation",
            "patient/Observation.rs?category=laboratory",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert_eq!(narrowing(["openid", "profile"], false), None);
        assert_eq!(
            narrowing(["openid", "patient/Observation.sr"], true),
            Some(PermissionSet::EMPTY)
        );
        assert!(
            narrowing(["user/Patient.read", "user/Observation.rs"], false)
                .unwrap()
                .allows("observations:read")
        );
    }

    #[test]
    fn every_mapped_permission_exists() {
        for (fhir, read, write) in FHIR_RESOURCES {
            for p in read.iter().chain(write.iter()) {
                assert!(Permission::parse(p).is_ok(), "{fhir}: {p}");
            }
        }
    }

    fn context() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("patient"), Just("user"), Just("system")]
    }

    fn resource() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            proptest::sample::select(FHIR_RESOURCES.iter().map(|r| r.0).collect::<Vec<_>>())
                .prop_map(str::to_owned),
            "[A-Z][A-Za-z0-9]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn generated_v2_scopes_parse_with_their_letters(
            ctx in context(), res in resource(), bits in 1u8..32
        ) {
            let letters: String = LETTERS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << (4 - i)) != 0)
                .map(|(_, c)| *c)
                .collect();
            let s = format!("{ctx}/{res}.{letters}");
            let scope = parse(&s).unwrap().unwrap();
            for c in LETTERS {
                prop_assert_eq!(scope.interactions.has(c), letters.contains(c));
            }
            prop_assert_eq!(scope.resource.is_none(), res == "*");
            // What a scope grants never exceeds what its full form grants.
            let full = parse(&format!("{ctx}/{res}.*")).unwrap().unwrap();
            prop_assert!(scope.permissions(true).is_subset(full.permissions(true)));
        }

        #[test]
        fn v1_names_equal_their_v2_letters(ctx in context(), res in resource()) {
            for (v1, v2) in [("read", "rs"), ("write", "cud"), ("*", "cruds")] {
                let a = parse(&format!("{ctx}/{res}.{v1}")).unwrap().unwrap();
                let b = parse(&format!("{ctx}/{res}.{v2}")).unwrap().unwrap();
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn any_text_parses_or_fails_without_panic(s in "\\PC{0,40}") {
            let _ = parse(&s);
            let _ = narrowing(s.split(' '), true);
        }

        #[test]
        fn narrowing_only_ever_takes_away(scopes in proptest::collection::vec("[a-z]{1,8}/[A-Za-z*]{1,12}\\.[a-z*]{1,5}", 0..6)) {
            if let Some(set) = narrowing(scopes.iter().map(String::as_str), true) {
                prop_assert!(set.is_subset(PermissionSet::all()));
                prop_assert!(!set.allows("users:write") && !set.allows("roles:grant") && !set.allows("audit:read"));
            }
        }
    }
}
