//! Search result parameters that every searchable type shares (R4 §3.1.1.5 and §3.1.1.4.9):
//! `_sort`, `_total`, `_summary`, `_elements`, `_include` and `_revinclude` (both with
//! `:iterate`), and the searchset they shape.
//!
//! A type's search ([`TypeSearch`]) says which resources match, in id order; this module
//! orders them (`_sort`: over the whole match set, so at most [`SORT_LIMIT`] matches),
//! counts them (`_total`), adds what they reference or what references them, trims what
//! is answered (`_summary`, `_elements`), logs every patient's data it returns, and builds
//! the Bundle. Sorted pages are linked by offset (`_offset`), unsorted ones by the id
//! cursor (`_cursor`), so that a page never repeats or skips a match that stayed put.

use super::documents::DocumentSearch;
use super::patient::PatientSearch;
use super::rest::{ClinicalSearch, DomainType};
use super::*;
use salus_fhir::definitions::{ParamType, structures};
use salus_fhir::search as fsearch;
use std::collections::HashSet;

/// The most matches a sorted search orders (it orders the whole match set).
pub(super) const SORT_LIMIT: u32 = 5_000;
/// The most resources `_include` and `_revinclude` add to one page.
const INCLUDE_LIMIT: usize = 1_000;
/// How many rounds `:iterate` follows.
const ITERATE_DEPTH: usize = 3;

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Summary {
    #[default]
    Full,
    True,
    Text,
    Data,
    Count,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Total {
    #[default]
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct SortKey {
    code: String,
    desc: bool,
}

/// One `_include` or `_revinclude`: `source:param[:target]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Include {
    source: String,
    /// A reference parameter of `source`, or `*` (every one).
    param: String,
    target: Option<String>,
    iterate: bool,
}

/// The result parameters of one search.
#[derive(Debug, Default)]
pub(super) struct ResultParams {
    sort: Vec<SortKey>,
    summary: Summary,
    total: Total,
    elements: Option<Vec<String>>,
    includes: Vec<Include>,
    revincludes: Vec<Include>,
    offset: usize,
}

fn invalid(msg: impl Into<String>) -> FhirError {
    FhirError::new(400, "invalid", msg)
}

impl ResultParams {
    /// Take `key=value` when it is a result parameter of a search of `t` (`Ok(true)`);
    /// `Ok(false)` when it is not one. A malformed one is a 400.
    pub(super) fn take(&mut self, t: &str, key: &str, value: &str) -> Result<bool, FhirError> {
        match key {
            "_sort" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (code, desc) = match part.strip_prefix('-') {
                        Some(c) => (c, true),
                        None => (part, false),
                    };
                    let sortable = search_parameters()
                        .get(t, code)
                        .is_some_and(fsearch::is_sortable);
                    if !sortable {
                        return Err(invalid(format!(
                            "_sort: '{code}' is not a search parameter of {t} that can order results"
                        )));
                    }
                    self.sort.push(SortKey {
                        code: code.to_owned(),
                        desc,
                    });
                }
            }
            "_summary" => {
                self.summary = match value {
                    "true" => Summary::True,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    "false" => Summary::Full,
                    other => {
                        return Err(invalid(format!(
                            "_summary '{other}' is not one of true, text, data, count, false"
                        )));
                    }
                }
            }
            "_total" => {
                self.total = match value {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    other => {
                        return Err(invalid(format!(
                            "_total '{other}' is not one of none, estimate, accurate"
                        )));
                    }
                }
            }
            "_elements" => {
                self.elements = Some(
                    value
                        .split(',')
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty())
                        .collect(),
                );
            }
            "_offset" => {
                self.offset = value
                    .parse()
                    .map_err(|_| invalid("_offset must be a whole number"))?;
            }
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                let iterate = key.ends_with(":iterate");
                let inc = parse_include(t, value, iterate, key.starts_with("_include"))?;
                if key.starts_with("_include") {
                    self.includes.push(inc);
                } else {
                    self.revincludes.push(inc);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether the parameter goes into the paging links (the offset is the link's own).
    pub(super) fn linked(key: &str) -> bool {
        key != "_offset"
    }
}

/// `Source:param[:Target]` (or `*` for every reference parameter of the searched type).
fn parse_include(t: &str, value: &str, iterate: bool, forward: bool) -> Result<Include, FhirError> {
    if value == "*" {
        return Ok(Include {
            source: t.to_owned(),
            param: "*".into(),
            target: None,
            iterate,
        });
    }
    let mut parts = value.split(':');
    let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!(
            "'{value}' is not Type:parameter or Type:parameter:TargetType"
        )));
    };
    let target = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(invalid(format!("'{value}' has too many parts")));
    }
    if !structures().is_resource(source) {
        return Err(invalid(format!("'{source}' is not a resource type")));
    }
    if forward && !iterate && source != t {
        return Err(invalid(format!(
            "_include names {source}, but the search is of {t} (use _include:iterate to follow included resources)"
        )));
    }
    if param != "*" {
        let is_ref = search_parameters()
            .get(source, param)
            .is_some_and(|p| p.kind == ParamType::Reference && p.expression.is_some());
        if !is_ref {
            return Err(invalid(format!(
                "'{param}' is not a reference search parameter of {source}"
            )));
        }
    }
    if let Some(tt) = &target
        && !structures().is_resource(tt)
    {
        return Err(invalid(format!("'{tt}' is not a resource type")));
    }
    Ok(Include {
        source: source.to_owned(),
        param: param.to_owned(),
        target,
        iterate,
    })
}

/// One resource found, ready to answer: where it is stored (for the access log), its
/// patient, and its FHIR form.
pub(super) struct Hit {
    pub row_id: Uuid,
    /// The stored resource type (`patient`, `fhir_document`, …), as the access log names it.
    pub stored: &'static str,
    pub patient: Option<Uuid>,
    /// `Type/id`.
    pub reference: String,
    pub resource: Value,
}

impl Hit {
    fn resource_type(&self) -> &str {
        self.reference.split('/').next().unwrap_or("")
    }
}

/// A search of one type, parsed.
pub(super) enum TypeSearch {
    Patient(PatientSearch),
    Document(DocumentSearch),
    Clinical(ClinicalSearch),
}

impl TypeSearch {
    /// Matches in id order after `after`, at most `limit`, those the actor may see.
    async fn page(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Hit>, FhirError> {
        match self {
            TypeSearch::Patient(s) => s.hits(state, actor, after, limit).await,
            TypeSearch::Document(s) => s.hits(state, actor, after, limit).await,
            TypeSearch::Clinical(s) => s.hits(state, actor, after, limit).await,
        }
    }

    /// How many resources match, when the store can say it (else counted here, up to
    /// [`SORT_LIMIT`]; `None` beyond).
    async fn count(&self, state: &AppState, actor: &Actor) -> Result<Option<u64>, FhirError> {
        let counted = match self {
            TypeSearch::Patient(s) => s.count(state, actor).await?,
            TypeSearch::Document(s) => s.count(state, actor).await?,
            TypeSearch::Clinical(s) => s.count(state, actor).await?,
        };
        if counted.is_some() {
            return Ok(counted);
        }
        let all = self.page(state, actor, None, SORT_LIMIT + 1).await?;
        Ok((all.len() <= SORT_LIMIT as usize).then_some(all.len() as u64))
    }
}

/// A resource by type and id as `_include` finds it (`None`: not here, or not the
/// actor's to see).
async fn read_hit(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Option<Hit>, FhirError> {
    if t == "Patient" {
        super::patient::hit(state, actor, id).await
    } else if super::documents::is_document_type(t) {
        super::documents::hit(state, actor, t, id).await
    } else if let Some(kind) = DomainType::of(t) {
        kind.hit(state, actor, id).await
    } else {
        Ok(None)
    }
}

/// Resources of `source` whose reference parameter `param` names one of `refs`.
async fn referencing(
    state: &AppState,
    actor: &Actor,
    source: &str,
    param: &str,
    refs: Vec<String>,
) -> Result<Vec<Hit>, FhirError> {
    if super::documents::is_document_type(source) {
        let s = DocumentSearch::referencing(source, param, refs);
        s.hits(state, actor, None, INCLUDE_LIMIT as u32).await
    } else if let Some(kind) = DomainType::of(source) {
        let s = ClinicalSearch::referencing(kind, param, refs);
        s.hits(state, actor, None, INCLUDE_LIMIT as u32).await
    } else if source == "Patient" {
        let s = super::patient::PatientSearch::referencing(param, refs);
        s.hits(state, actor, None, INCLUDE_LIMIT as u32).await
    } else {
        Err(FhirError::new(
            400,
            "not-supported",
            format!("_revinclude of {source} is not supported (not a resource type served here)"),
        ))
    }
}

/// The references (`Type/id`) that `param` (or every reference parameter, `*`) of `hit`
/// holds, to `target` when given.
fn references_of(hit: &Hit, param: &str, target: Option<&str>) -> Vec<(String, String)> {
    let t = hit.resource_type();
    let params = search_parameters();
    fsearch::rows_of(t, &hit.resource)
        .into_iter()
        .filter(|r| {
            if param == "*" {
                params
                    .get(t, &r.param)
                    .is_some_and(|p| p.kind == ParamType::Reference)
            } else {
                r.param == param
            }
        })
        .filter_map(|r| {
            let (rt, id) = r.value.split_once('/')?;
            if id.contains('/') || !structures().is_resource(rt) {
                return None;
            }
            if target.is_some_and(|want| want != rt) {
                return None;
            }
            Some((rt.to_owned(), id.to_owned()))
        })
        .collect()
}

/// What `_include` and `_revinclude` add to the page `matches`.
async fn included(
    state: &AppState,
    actor: &Actor,
    p: &ResultParams,
    matches: &[Hit],
) -> Result<Vec<Hit>, FhirError> {
    if p.includes.is_empty() && p.revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut have: HashSet<String> = matches.iter().map(|h| h.reference.clone()).collect();
    let mut out: Vec<Hit> = Vec::new();
    // Round 0 works on the matches; later rounds (only `:iterate`) on what the round
    // before added.
    let mut frontier: Vec<usize> = Vec::new();
    for round in 0..=ITERATE_DEPTH {
        let sources: Vec<&Hit> = if round == 0 {
            matches.iter().collect()
        } else {
            frontier.iter().map(|&i| &out[i]).collect()
        };
        if sources.is_empty() {
            break;
        }
        let mut found: Vec<Hit> = Vec::new();
        for inc in p.includes.iter().filter(|i| round == 0 || i.iterate) {
            let mut wanted: Vec<(String, String)> = Vec::new();
            for h in sources.iter().filter(|h| h.resource_type() == inc.source) {
                wanted.extend(references_of(h, &inc.param, inc.target.as_deref()));
            }
            for (rt, id) in wanted {
                let r = format!("{rt}/{id}");
                if have.contains(&r) || out.len() + found.len() >= INCLUDE_LIMIT {
                    continue;
                }
                if let Some(h) = read_hit(state, actor, &rt, &id).await? {
                    have.insert(r);
                    found.push(h);
                }
            }
        }
        for inc in p.revincludes.iter().filter(|i| round == 0 || i.iterate) {
            let refs: Vec<String> = sources.iter().map(|h| h.reference.clone()).collect();
            let refs: Vec<String> = match &inc.target {
                Some(tt) => refs
                    .into_iter()
                    .filter(|r| r.split('/').next() == Some(tt.as_str()))
                    .collect(),
                None => refs,
            };
            if refs.is_empty() {
                continue;
            }
            let params: Vec<String> = if inc.param == "*" {
                search_parameters()
                    .of(&inc.source)
                    .into_iter()
                    .filter(|p| p.kind == ParamType::Reference && p.expression.is_some())
                    .map(|p| p.code.clone())
                    .collect()
            } else {
                vec![inc.param.clone()]
            };
            for param in params {
                for h in referencing(state, actor, &inc.source, &param, refs.clone()).await? {
                    if out.len() + found.len() >= INCLUDE_LIMIT {
                        break;
                    }
                    if have.insert(h.reference.clone()) {
                        found.push(h);
                    }
                }
            }
        }
        let start = out.len();
        out.extend(found);
        frontier = (start..out.len()).collect();
        let iterates = p.includes.iter().chain(&p.revincludes).any(|i| i.iterate);
        if !iterates {
            break;
        }
    }
    Ok(out)
}

/// Log the hits as searched patient data, per stored type.
async fn log_hits(state: &AppState, actor: &Actor, hits: &[&Hit]) -> Result<(), FhirError> {
    let mut stored: Vec<&'static str> = hits.iter().map(|h| h.stored).collect();
    stored.sort_unstable();
    stored.dedup();
    if stored.is_empty() {
        // Nothing found still went through the log.
        access_log::record(state, actor, AccessAction::Search, "fhir_document", []).await?;
    }
    for s in stored {
        let accesses = hits.iter().filter(|h| h.stored == s).filter_map(|h| {
            h.patient.map(|patient| Access {
                patient,
                resource_id: Some(h.row_id),
            })
        });
        access_log::record(state, actor, AccessAction::Search, s, accesses).await?;
    }
    Ok(())
}

/// The sort key of a hit for one `_sort` parameter: its lowest value ascending, highest
/// descending (the index values order as the parameter's values do); `None` sorts last.
fn sort_value(hit: &Hit, key: &SortKey) -> Option<String> {
    let rows = fsearch::rows_of(hit.resource_type(), &hit.resource);
    let values = rows
        .into_iter()
        .filter(|r| r.param == key.code)
        .map(|r| r.value);
    if key.desc { values.max() } else { values.min() }
}

fn sort_hits(hits: &mut Vec<Hit>, keys: &[SortKey]) {
    let mut keyed: Vec<(Vec<Option<String>>, Hit)> = hits
        .drain(..)
        .map(|h| (keys.iter().map(|k| sort_value(&h, k)).collect(), h))
        .collect();
    keyed.sort_by(|(a, ha), (b, hb)| {
        for (i, k) in keys.iter().enumerate() {
            let ord = match (&a[i], &b[i]) {
                (Some(x), Some(y)) if k.desc => y.cmp(x),
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        ha.row_id.cmp(&hb.row_id)
    });
    hits.extend(keyed.into_iter().map(|(_, h)| h));
}

/// The element definition a top-level JSON key of a resource of type `t` stands for
/// (`valueQuantity` → `value[x]`, `_birthDate` → `birthDate`).
fn element_of<'a>(t: &str, key: &str) -> Option<&'a salus_fhir::definitions::ElementDef> {
    let st = structures().get(t)?;
    let key = key.strip_prefix('_').unwrap_or(key);
    if let Some(e) = st.elements.get(key) {
        return Some(e);
    }
    st.elements.iter().find_map(|(path, e)| {
        let stem = path.strip_suffix("[x]")?;
        let rest = key.strip_prefix(stem)?;
        rest.starts_with(|c: char| c.is_ascii_uppercase())
            .then_some(e)
    })
}

/// Mark a resource as a subset of itself (R4 §3.1.1.5.9).
fn mark_subsetted(o: &mut serde_json::Map<String, Value>) {
    let meta = o.entry("meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Some(a) = tags.as_array_mut() {
            a.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
        }
    }
}

/// The resource as `_summary` and `_elements` ask for it.
pub(super) fn shaped(mut r: Value, summary: Summary, elements: Option<&[String]>) -> Value {
    let t = r["resourceType"].as_str().unwrap_or("").to_owned();
    let Some(o) = r.as_object_mut() else {
        return r;
    };
    let always = |k: &str| k == "resourceType" || k == "id" || k == "meta";
    let mandatory = |k: &str| element_of(&t, k).is_some_and(|e| e.min >= 1);
    let before = o.len();
    match summary {
        Summary::Full | Summary::Count => {}
        Summary::True => o.retain(|k, _| {
            always(k) || mandatory(k) || element_of(&t, k).is_some_and(|e| e.summary)
        }),
        Summary::Text => o.retain(|k, _| always(k) || k == "text" || mandatory(k)),
        Summary::Data => {
            o.remove("text");
        }
    }
    if let Some(els) = elements {
        o.retain(|k, _| {
            always(k)
                || mandatory(k)
                || els.iter().any(|e| e == k || e == k.trim_start_matches('_'))
        });
    }
    if o.len() < before || summary == Summary::Data {
        mark_subsetted(o);
    }
    r
}

/// Answer a search of `t`: the page (sorted, or after the cursor), its total when asked,
/// what it includes, every patient's data in it logged, as a searchset Bundle.
#[allow(clippy::too_many_arguments)]
pub(super) async fn answer(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    t: &str,
    search: TypeSearch,
    p: &ResultParams,
    applied: &[(String, String)],
    count: u32,
    cursor: Option<Uuid>,
    ignored: &[String],
) -> Result<Response, FhirError> {
    let base = base_url(headers);
    let links = Links {
        base: &base,
        t,
        applied,
        count,
    };
    if p.summary == Summary::Count {
        let total = search.count(state, actor).await?;
        log_hits(state, actor, &[]).await?;
        let bundle = searchset_bundle(
            state,
            vec![links.link("self", None)],
            Vec::new(),
            total,
            ignored,
        );
        return Ok(ok_json(&bundle));
    }
    let (page, total, self_link, next_link) = if p.sort.is_empty() {
        let mut found = search.page(state, actor, cursor, count + 1).await?;
        let more = found.len() > count as usize;
        found.truncate(count as usize);
        let total = match p.total {
            Total::None => None,
            _ => search.count(state, actor).await?,
        };
        let next = more
            .then(|| {
                found
                    .last()
                    .map(|h| format!("_cursor={}", http::encode_cursor(h.row_id)))
            })
            .flatten();
        let this = cursor.map(|c| format!("_cursor={}", http::encode_cursor(c)));
        (found, total, this, next)
    } else {
        let mut all = search.page(state, actor, None, SORT_LIMIT + 1).await?;
        if all.len() > SORT_LIMIT as usize {
            return Err(FhirError::new(
                400,
                "too-costly",
                format!("_sort orders at most {SORT_LIMIT} matches; narrow the search"),
            ));
        }
        sort_hits(&mut all, &p.sort);
        let total = all.len();
        let start = p.offset.min(total);
        let end = (start + count as usize).min(total);
        let next = (end < total).then(|| format!("_offset={end}"));
        let this = (start > 0).then(|| format!("_offset={start}"));
        let page: Vec<Hit> = all.drain(start..end).collect();
        (page, Some(total as u64), this, next)
    };
    let extra = included(state, actor, p, &page).await?;
    let logged: Vec<&Hit> = page.iter().chain(&extra).collect();
    log_hits(state, actor, &logged).await?;
    let mut entries: Vec<Value> = Vec::with_capacity(page.len() + extra.len());
    for (mode, hits) in [("match", page), ("include", extra)] {
        for h in hits {
            let elements = (mode == "match").then_some(p.elements.as_deref()).flatten();
            entries.push(json!({
                "fullUrl": format!("{base}/{}", h.reference),
                "resource": shaped(h.resource, p.summary, elements),
                "search": {"mode": mode},
            }));
        }
    }
    let mut link_list = vec![links.link("self", self_link)];
    if let Some(n) = next_link {
        link_list.push(links.link("next", Some(n)));
    }
    let total = if p.total == Total::None && p.sort.is_empty() {
        None
    } else {
        total
    };
    Ok(ok_json(&searchset_bundle(
        state, link_list, entries, total, ignored,
    )))
}

/// The paging links of a search.
pub(super) struct Links<'a> {
    pub(super) base: &'a str,
    pub(super) t: &'a str,
    pub(super) applied: &'a [(String, String)],
    pub(super) count: u32,
}

impl Links<'_> {
    /// The `relation` link: the applied parameters, `_count`, and the page's own one.
    pub(super) fn link(&self, relation: &str, page: Option<String>) -> Value {
        let mut parts: Vec<String> = self
            .applied
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        parts.push(format!("_count={}", self.count));
        parts.extend(page);
        json!({"relation": relation, "url": format!("{}/{}?{}", self.base, self.t, parts.join("&"))})
    }
}

/// A searchset Bundle with these links and entries, its total when known, and an outcome
/// entry saying what lenient handling ignored.
pub(super) fn searchset_bundle(
    state: &AppState,
    links: Vec<Value>,
    mut entries: Vec<Value>,
    total: Option<u64>,
    ignored: &[String],
) -> Value {
    if !ignored.is_empty() {
        entries.push(
            json!({"resource": super::ignored_outcome(ignored), "search": {"mode": "outcome"}}),
        );
    }
    let mut b = bundle_of(state, "searchset", links, entries);
    if let Some(n) = total {
        b["total"] = json!(n);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, resource: Value) -> Hit {
        Hit {
            row_id: Uuid::now_v7(),
            stored: "fhir_document",
            patient: None,
            reference: format!("Observation/{id}"),
            resource,
        }
    }

    #[test]
    fn sort_orders_by_values_with_missing_last_in_both_directions() {
        let obs = |id: &str, date: Option<&str>| {
            let mut r = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"}});
            if let Some(d) = date {
                r["effectiveDateTime"] = json!(d);
            }
            hit(id, r)
        };
        let mut hits = vec![
            obs("b", Some("2024-05-01")),
            obs("none", None),
            obs("a", Some("2023-01-01")),
            obs("c", Some("2025-12-31")),
        ];
        let key = |desc| SortKey {
            code: "date".into(),
            desc,
        };
        sort_hits(&mut hits, &[key(false)]);
        let order: Vec<&str> = hits
            .iter()
            .map(|h| h.resource["id"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["a", "b", "c", "none"]);
        sort_hits(&mut hits, &[key(true)]);
        let order: Vec<&str> = hits
            .iter()
            .map(|h| h.resource["id"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["c", "b", "a", "none"]);
    }

    #[test]
    fn summaries_keep_what_the_definitions_say() {
        let r = json!({
            "resourceType": "Observation", "id": "1", "meta": {"versionId": "1"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1},
            "note": [{"text": "n"}], "interpretation": [{"text": "h"}]
        });
        let t = shaped(r.clone(), Summary::True, None);
        assert!(
            t.get("valueQuantity").is_some(),
            "value[x] is a summary element"
        );
        assert!(t.get("status").is_some() && t.get("code").is_some());
        assert!(t.get("note").is_none() && t.get("text").is_none());
        assert_eq!(t["meta"]["tag"][0]["code"], "SUBSETTED");
        let d = shaped(r.clone(), Summary::Data, None);
        assert!(d.get("text").is_none() && d.get("note").is_some());
        let x = shaped(r.clone(), Summary::Text, None);
        assert!(x.get("text").is_some() && x.get("note").is_none());
        assert!(x.get("status").is_some(), "mandatory elements stay");
        let full = shaped(r.clone(), Summary::Full, None);
        assert_eq!(full, r, "nothing asked, nothing changed");
        let e = shaped(r, Summary::Full, Some(&["note".to_owned()]));
        assert!(e.get("note").is_some() && e.get("valueQuantity").is_none());
    }

    #[test]
    fn includes_are_checked_against_the_definitions() {
        let mut p = ResultParams::default();
        assert!(
            p.take("Observation", "_include", "Observation:subject")
                .unwrap()
        );
        assert!(
            p.take("Observation", "_include", "Observation:subject:Patient")
                .unwrap()
        );
        assert!(
            p.take("Observation", "_revinclude", "Provenance:target")
                .unwrap()
        );
        assert!(
            p.take("Observation", "_include", "Observation:status")
                .is_err()
        );
        assert!(
            p.take("Observation", "_include", "Encounter:subject")
                .is_err()
        );
        assert!(
            p.take("Observation", "_include:iterate", "Encounter:subject")
                .unwrap()
        );
        assert!(p.take("Observation", "_sort", "-date,code").unwrap());
        assert!(p.take("Observation", "_sort", "nonsense").is_err());
        assert!(p.take("Observation", "_summary", "maybe").is_err());
        assert!(!p.take("Observation", "code", "x").unwrap());
        let refs = references_of(
            &hit(
                "1",
                json!({"resourceType": "Observation", "id": "1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}]}),
            ),
            "*",
            None,
        );
        assert!(refs.contains(&("Patient".to_owned(), "p1".to_owned())));
        assert!(refs.contains(&("Practitioner".to_owned(), "d1".to_owned())));
    }
}
