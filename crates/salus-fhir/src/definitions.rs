//! The official FHIR R4 (4.0.1) definitions, bundled as data (see `data/extract.py` for
//! their provenance): every search parameter, and the elements of every resource and data
//! type. Each file is decompressed and parsed once, on first use.

use flate2::read::GzDecoder;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::sync::LazyLock;

static SEARCH_PARAMETERS_GZ: &[u8] = include_bytes!("../data/search-parameters.json.gz");
static ELEMENTS_GZ: &[u8] = include_bytes!("../data/elements.json.gz");

/// The FHIR version these definitions are of.
pub const FHIR_VERSION: &str = "4.0.1";

/// A search parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// One R4 `SearchParameter` resource, the fields a server uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParameter {
    pub id: String,
    pub url: String,
    /// The name in a query (`birthdate`).
    pub code: String,
    /// The resource types it applies to (`Resource` and `DomainResource` apply to all).
    pub base: Vec<String>,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The FHIRPath expression (absent for `_text`, `_content`, `_query`).
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Resource types a reference parameter may point at.
    #[serde(default)]
    pub target: Vec<String>,
    /// The parts of a composite parameter, in order.
    #[serde(default)]
    pub component: Vec<Component>,
}

/// One part of a composite parameter: the parameter whose type it is searched as, and its
/// FHIRPath relative to each node of the composite's expression.
#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    /// The canonical URL of the parameter (`http://hl7.org/fhir/SearchParameter/…`).
    pub definition: String,
    pub expression: String,
}

#[derive(Deserialize)]
struct Bundle {
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    resource: SearchParameter,
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // The bundled files are checked by this crate's tests; a corrupt build is a bug.
    if GzDecoder::new(bytes).read_to_end(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Every R4 search parameter, and an index by resource type.
pub struct SearchParameters {
    pub all: Vec<SearchParameter>,
    /// Resource type → (code → index into `all`), including `Resource`/`DomainResource` ones.
    by_type: HashMap<String, HashMap<String, usize>>,
    /// Canonical URL → index into `all`.
    by_url: HashMap<String, usize>,
}

impl SearchParameters {
    /// The parameter `code` of `resource_type` (its own, or one of every resource).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParameter> {
        for t in [resource_type, "DomainResource", "Resource"] {
            if let Some(&i) = self.by_type.get(t).and_then(|m| m.get(code)) {
                return Some(&self.all[i]);
            }
        }
        None
    }

    /// The parameter with canonical URL `url`.
    pub fn by_url(&self, url: &str) -> Option<&SearchParameter> {
        self.by_url.get(url).map(|&i| &self.all[i])
    }

    /// Every parameter of `resource_type`, its own first, sorted by code.
    pub fn of(&self, resource_type: &str) -> Vec<&SearchParameter> {
        let mut out: Vec<&SearchParameter> = Vec::new();
        for t in [resource_type, "DomainResource", "Resource"] {
            if let Some(m) = self.by_type.get(t) {
                let mut own: Vec<&SearchParameter> = m.values().map(|&i| &self.all[i]).collect();
                own.sort_by(|a, b| a.code.cmp(&b.code));
                out.extend(own);
            }
        }
        out
    }
}

static SEARCH_PARAMETERS: LazyLock<SearchParameters> = LazyLock::new(|| {
    let bundle: Bundle = serde_json::from_slice(&gunzip(SEARCH_PARAMETERS_GZ))
        .unwrap_or(Bundle { entry: Vec::new() });
    let all: Vec<SearchParameter> = bundle.entry.into_iter().map(|e| e.resource).collect();
    let mut by_type: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for (i, p) in all.iter().enumerate() {
        for b in &p.base {
            by_type
                .entry(b.clone())
                .or_default()
                .insert(p.code.clone(), i);
        }
    }
    let by_url = all
        .iter()
        .enumerate()
        .map(|(i, p)| (p.url.clone(), i))
        .collect();
    SearchParameters {
        all,
        by_type,
        by_url,
    }
});

/// The R4 search parameters.
pub fn search_parameters() -> &'static SearchParameters {
    &SEARCH_PARAMETERS
}

/// One element of a structure definition's snapshot.
#[derive(Debug, Clone, Deserialize)]
pub struct ElementDef {
    pub min: u32,
    /// `"1"`, `"*"`, or another upper bound.
    pub max: String,
    /// Type codes (`HumanName`, `BackboneElement`, `System.String`, …).
    #[serde(default)]
    pub types: Vec<String>,
    /// For an element defined elsewhere (`Questionnaire.item.item` → `Questionnaire.item`).
    #[serde(default, rename = "ref")]
    pub content_ref: Option<String>,
    /// A summary element (`isSummary`): kept by `_summary=true`.
    #[serde(default)]
    pub summary: bool,
}

impl ElementDef {
    pub fn is_array(&self) -> bool {
        self.max != "1" && self.max != "0"
    }
}

/// A resource or data type.
#[derive(Debug, Clone, Deserialize)]
pub struct StructureDef {
    pub kind: String,
    #[serde(rename = "abstract")]
    pub is_abstract: bool,
    pub base: Option<String>,
    /// By path relative to the type (`name`, `contact.name`, `deceased[x]`).
    pub elements: HashMap<String, ElementDef>,
}

/// Every R4 resource and data type by name.
pub struct Structures {
    pub types: HashMap<String, StructureDef>,
}

impl Structures {
    pub fn get(&self, name: &str) -> Option<&StructureDef> {
        self.types.get(name)
    }

    /// Whether `name` is a resource type that can be instantiated.
    pub fn is_resource(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|s| s.kind == "resource" && !s.is_abstract)
    }

    /// Whether type `t` is `ancestor` or derives from it.
    pub fn derives(&self, t: &str, ancestor: &str) -> bool {
        let mut cur = Some(t);
        let mut hops = 0;
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            hops += 1;
            if hops > 16 {
                return false;
            }
            cur = self.types.get(c).and_then(|s| s.base.as_deref());
        }
        false
    }

    /// The element `path` of type `ty`, looked up in `ty` and then its base types (so
    /// `Patient` finds `id` and `meta` of `Resource`). The returned name is the type that
    /// defines it.
    pub fn element<'a>(&'a self, ty: &'a str, path: &str) -> Option<(&'a str, &'a ElementDef)> {
        let mut cur = Some(ty);
        let mut hops = 0;
        while let Some(c) = cur {
            let s = self.types.get(c)?;
            if let Some(e) = s.elements.get(path) {
                return Some((c, e));
            }
            hops += 1;
            if hops > 16 {
                return None;
            }
            cur = s.base.as_deref();
        }
        None
    }
}

static STRUCTURES: LazyLock<Structures> = LazyLock::new(|| Structures {
    types: serde_json::from_slice(&gunzip(ELEMENTS_GZ)).unwrap_or_default(),
});

/// The R4 structure definitions (elements only).
pub fn structures() -> &'static Structures {
    &STRUCTURES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_definitions_load() {
        let sp = search_parameters();
        assert_eq!(sp.all.len(), 1378);
        let birthdate = sp.get("Patient", "birthdate").unwrap();
        assert_eq!(birthdate.kind, ParamType::Date);
        assert_eq!(
            birthdate.expression.as_deref(),
            Some("Patient.birthDate | Person.birthDate | RelatedPerson.birthDate")
        );
        assert_eq!(sp.get("Patient", "_id").unwrap().kind, ParamType::Token);
        assert!(sp.get("Patient", "nonsense").is_none());
        let st = structures();
        assert!(st.is_resource("Patient"));
        assert!(!st.is_resource("DomainResource"));
        assert!(st.derives("code", "string"));
        let (owner, id) = st.element("Patient", "id").unwrap();
        assert_eq!(owner, "Patient", "snapshots carry inherited elements");
        assert_eq!(id.types, ["System.String"]);
        let (_, deceased) = st.element("Patient", "deceased[x]").unwrap();
        assert_eq!(deceased.types, ["boolean", "dateTime"]);
        assert!(st.element("Patient", "name").unwrap().1.is_array());
    }
}
