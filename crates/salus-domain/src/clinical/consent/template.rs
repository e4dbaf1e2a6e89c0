//! Consent templates (requirements/003 §3): template → sections → clauses, versioned.
//!
//! A [`ConsentTemplate`] has a `kind` (a free code such as `research`, `treatment`,
//! `data_sharing`: tenant data) and a list of versions. Version 1 is created as a draft;
//! a draft is edited in place ([`TemplateCommand::EditDraft`]) until it is published, after
//! which it is immutable for good: an edit then needs a new version
//! ([`TemplateCommand::NewVersion`], a draft copied from the latest published version).
//! At most one draft exists at a time, and it is always the latest version. Consents pin a
//! published version ([`ConsentTemplate::published`]).

use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The longest clause text (characters).
pub const MAX_CLAUSE_TEXT: usize = 10_000;
/// The most sections of a version, and clauses of a section.
pub const MAX_SECTIONS: usize = 50;
pub const MAX_CLAUSES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    Draft,
    Published,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Draft => "draft",
            VersionStatus::Published => "published",
        }
    }
}

/// One clause: its text, whether it must be acknowledged before signing, its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentClause {
    pub id: Uuid,
    pub text: String,
    pub required: bool,
    /// 1-based position in its section.
    pub order: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentSection {
    pub id: Uuid,
    pub title: String,
    /// 1-based position in the version.
    pub order: u32,
    pub clauses: Vec<ConsentClause>,
}

/// What a version says: a valid title and 1..=50 sections of 1..=100 clauses each. Made
/// only by [`TemplateContent::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateContent {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub sections: Vec<ConsentSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateVersion {
    pub version: u32,
    pub status: VersionStatus,
    #[serde(flatten)]
    pub content: TemplateContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by: Option<Uuid>,
}

impl TemplateVersion {
    /// Every clause, in order, with the id of its section.
    pub fn clauses(&self) -> impl Iterator<Item = (&ConsentSection, &ConsentClause)> {
        self.content
            .sections
            .iter()
            .flat_map(|s| s.clauses.iter().map(move |c| (s, c)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentTemplate {
    pub id: Uuid,
    /// A free code (`research`, `treatment`, `data_sharing`, …): 1-64 of a-z, 0-9, `_`,
    /// `.`, `-`, starting with a letter.
    pub kind: String,
    /// The newest version (the draft, when there is one).
    pub latest_version: u32,
    /// The newest published version, which new consents pin by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_version: Option<u32>,
    /// Oldest first.
    pub versions: Vec<TemplateVersion>,
}

impl ConsentTemplate {
    /// Version `v`, when it exists.
    pub fn version(&self, v: u32) -> Option<&TemplateVersion> {
        self.versions.iter().find(|x| x.version == v)
    }

    /// Version `v` if it is published (any published version when `v` is `None`: the
    /// newest).
    pub fn published(&self, v: Option<u32>) -> Option<&TemplateVersion> {
        match v {
            Some(v) => self
                .version(v)
                .filter(|x| x.status == VersionStatus::Published),
            None => self.published_version.and_then(|v| self.version(v)),
        }
    }

    fn latest(&self) -> Option<&TemplateVersion> {
        self.versions.last()
    }

    fn refresh(&mut self) {
        self.latest_version = self.versions.last().map(|v| v.version).unwrap_or(0);
        self.published_version = self
            .versions
            .iter()
            .rev()
            .find(|v| v.status == VersionStatus::Published)
            .map(|v| v.version);
    }
}

/// A kind code: 1-64 of `a-z 0-9 _ . -`, starting with a letter (folded to lower case).
pub fn parse_kind(s: &str) -> Result<String, DomainError> {
    let k = s.trim().to_ascii_lowercase();
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(k)
    } else {
        Err(DomainError::invalid(
            "kind",
            "kind is a code of 1-64 characters of a-z, 0-9, '_', '.' or '-', starting with a letter (e.g. research, treatment, data_sharing)",
        ))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClauseInput {
    /// The clause as the patient reads it (1-10,000 characters).
    pub text: String,
    /// Whether it must be acknowledged before the consent can be signed.
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionInput {
    pub title: String,
    /// In order (1..=100).
    pub clauses: Vec<ClauseInput>,
}

/// A new template: its kind and the content of its first (draft) version.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub kind: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// In order (1..=50).
    pub sections: Vec<SectionInput>,
}

/// An edit of the draft version: each field given replaces the draft's (sections as a
/// whole; their clauses get new ids).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftInput {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub sections: Option<Vec<SectionInput>>,
}

fn text(field: &str, s: &str, max: usize) -> Result<String, DomainError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("{field} must be 1-{max} characters"),
        ));
    }
    Ok(t.to_owned())
}

impl TemplateContent {
    /// Check a version's content; `ids` mints the section and clause ids (the service
    /// passes fresh UUIDs; tests pass a counter).
    pub fn parse(
        title: &str,
        description: Option<&str>,
        sections: &[SectionInput],
        ids: &mut dyn FnMut() -> Uuid,
    ) -> Result<TemplateContent, DomainError> {
        let title = text("title", title, 200)?;
        let description = match description.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => Some(text("description", d, 2000)?),
            None => None,
        };
        if sections.is_empty() || sections.len() > MAX_SECTIONS {
            return Err(DomainError::invalid(
                "sections",
                format!("a template has 1-{MAX_SECTIONS} sections"),
            ));
        }
        let mut out = Vec::with_capacity(sections.len());
        for (i, s) in sections.iter().enumerate() {
            let field = format!("sections[{i}]");
            if s.clauses.is_empty() || s.clauses.len() > MAX_CLAUSES {
                return Err(DomainError::invalid(
                    &format!("{field}.clauses"),
                    format!("a section has 1-{MAX_CLAUSES} clauses"),
                ));
            }
            let section_title = text(&format!("{field}.title"), &s.title, 200)?;
            let mut clauses = Vec::with_capacity(s.clauses.len());
            for (j, c) in s.clauses.iter().enumerate() {
                clauses.push(ConsentClause {
                    id: ids(),
                    text: text(
                        &format!("{field}.clauses[{j}].text"),
                        &c.text,
                        MAX_CLAUSE_TEXT,
                    )?,
                    required: c.required,
                    order: j as u32 + 1,
                });
            }
            out.push(ConsentSection {
                id: ids(),
                title: section_title,
                order: i as u32 + 1,
                clauses,
            });
        }
        Ok(TemplateContent {
            title,
            description,
            sections: out,
        })
    }

    /// The same content under fresh section and clause ids (a new version's copy).
    pub fn with_fresh_ids(&self, ids: &mut dyn FnMut() -> Uuid) -> TemplateContent {
        let mut c = self.clone();
        for s in &mut c.sections {
            s.id = ids();
            for cl in &mut s.clauses {
                cl.id = ids();
            }
        }
        c
    }

    /// This content with the fields of `edit` replaced.
    pub fn edited(
        &self,
        edit: &DraftInput,
        ids: &mut dyn FnMut() -> Uuid,
    ) -> Result<TemplateContent, DomainError> {
        let title = edit.title.as_deref().unwrap_or(&self.title);
        let description = match &edit.description {
            Some(d) => Some(d.as_str()),
            None => self.description.as_deref(),
        };
        match &edit.sections {
            Some(sections) => TemplateContent::parse(title, description, sections, ids),
            None => {
                let mut c = TemplateContent::parse(title, description, &as_input(self), ids)?;
                // Unchanged sections keep their ids.
                c.sections = self.sections.clone();
                Ok(c)
            }
        }
    }
}

fn as_input(c: &TemplateContent) -> Vec<SectionInput> {
    c.sections
        .iter()
        .map(|s| SectionInput {
            title: s.title.clone(),
            clauses: s
                .clauses
                .iter()
                .map(|c| ClauseInput {
                    text: c.text.clone(),
                    required: c.required,
                })
                .collect(),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub enum TemplateCommand {
    Create {
        id: Uuid,
        kind: String,
        content: TemplateContent,
    },
    /// Replace the draft's content (the latest version must be a draft).
    EditDraft {
        content: TemplateContent,
    },
    Publish {
        by: Uuid,
        at: DateTime<Utc>,
    },
    /// Start a draft of the next version with `content` (the latest must be published).
    NewVersion {
        content: TemplateContent,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftEdited {
    pub version: u32,
    pub content: TemplateContent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub version: u32,
    pub at: DateTime<Utc>,
    pub by: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDrafted {
    pub version: u32,
    pub content: TemplateContent,
}

domain_events! {
    pub enum TemplateEvent {
        Created(ConsentTemplate) = "consent_template.created",
        DraftEdited(DraftEdited) = "consent_template.draft_edited",
        Published(Published) = "consent_template.published",
        VersionDrafted(VersionDrafted) = "consent_template.version_drafted",
    }
}

/// The actions of `POST /consent-templates/{id}/{action}`.
pub const ACTIONS: &[&str] = &["publish", "new-version"];

impl Aggregate for ConsentTemplate {
    const STREAM_TYPE: &'static str = "consent_template";
    type Command = TemplateCommand;
    type Event = TemplateEvent;

    fn decide(
        state: Option<&Self>,
        command: &TemplateCommand,
    ) -> Result<Vec<TemplateEvent>, DomainError> {
        match (state, command) {
            (None, TemplateCommand::Create { id, kind, content }) => {
                let mut t = ConsentTemplate {
                    id: *id,
                    kind: parse_kind(kind)?,
                    latest_version: 1,
                    published_version: None,
                    versions: vec![TemplateVersion {
                        version: 1,
                        status: VersionStatus::Draft,
                        content: content.clone(),
                        published_at: None,
                        published_by: None,
                    }],
                };
                t.refresh();
                Ok(vec![TemplateEvent::Created(t)])
            }
            (Some(_), TemplateCommand::Create { .. }) => {
                Err(DomainError::Rule("consent template already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("consent template".into())),
            (Some(t), TemplateCommand::EditDraft { content }) => {
                let latest = latest_of(t)?;
                if latest.status == VersionStatus::Published {
                    return Err(DomainError::Conflict(format!(
                        "version {} is published and can never change; POST new-version to draft version {}",
                        latest.version,
                        latest.version + 1
                    )));
                }
                Ok(vec![TemplateEvent::DraftEdited(DraftEdited {
                    version: latest.version,
                    content: content.clone(),
                })])
            }
            (Some(t), TemplateCommand::Publish { by, at }) => {
                let latest = latest_of(t)?;
                if latest.status == VersionStatus::Published {
                    return Err(DomainError::IllegalTransition {
                        action: "publish".into(),
                        from: "published".into(),
                        allowed: "draft".into(),
                    });
                }
                Ok(vec![TemplateEvent::Published(Published {
                    version: latest.version,
                    at: *at,
                    by: *by,
                })])
            }
            (Some(t), TemplateCommand::NewVersion { content }) => {
                let latest = latest_of(t)?;
                if latest.status == VersionStatus::Draft {
                    return Err(DomainError::IllegalTransition {
                        action: "new-version".into(),
                        from: "draft".into(),
                        allowed: "published".into(),
                    });
                }
                Ok(vec![TemplateEvent::VersionDrafted(VersionDrafted {
                    version: latest.version + 1,
                    content: content.clone(),
                })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &TemplateEvent) -> Option<Self> {
        let mut t = match (state, event) {
            (_, TemplateEvent::Created(t)) => return Some(t.clone()),
            (None, _) => return None,
            (Some(t), _) => t,
        };
        match event {
            TemplateEvent::Created(_) => {}
            TemplateEvent::DraftEdited(e) => {
                if let Some(v) = t
                    .versions
                    .iter_mut()
                    .find(|v| v.version == e.version && v.status == VersionStatus::Draft)
                {
                    v.content = e.content.clone();
                }
            }
            TemplateEvent::Published(e) => {
                if let Some(v) = t.versions.iter_mut().find(|v| v.version == e.version) {
                    v.status = VersionStatus::Published;
                    v.published_at = Some(e.at);
                    v.published_by = Some(e.by);
                }
            }
            TemplateEvent::VersionDrafted(e) => t.versions.push(TemplateVersion {
                version: e.version,
                status: VersionStatus::Draft,
                content: e.content.clone(),
                published_at: None,
                published_by: None,
            }),
        }
        t.refresh();
        Some(t)
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<TemplateEvent, serde_json::Error> {
        TemplateEvent::decode(event_type, payload)
    }
}

fn latest_of(t: &ConsentTemplate) -> Result<&TemplateVersion, DomainError> {
    t.latest()
        .ok_or_else(|| DomainError::NotFound("consent template version".into()))
}

impl Projected for ConsentTemplate {
    const RESOURCE_TYPE: &'static str = "consent_template";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("kind", self.kind.clone()),
            SearchRow::new(
                "published",
                if self.published_version.is_some() {
                    "true"
                } else {
                    "false"
                },
            ),
        ]
    }
}

fn fresh() -> impl FnMut() -> Uuid {
    Uuid::now_v7
}

/// Create a template with its first version as a draft.
pub async fn create_template(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: TemplateInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<ConsentTemplate>, crate::service::ServiceError> {
    let id = Uuid::now_v7();
    services
        .create::<ConsentTemplate, _>(
            ctx,
            id,
            move |_, _| {
                let content = TemplateContent::parse(
                    &input.title,
                    input.description.as_deref(),
                    &input.sections,
                    &mut fresh(),
                )?;
                Ok(TemplateCommand::Create {
                    id,
                    kind: input.kind,
                    content,
                })
            },
            idempotency,
        )
        .await
}

/// The command of an edit of the draft, from the template as it stands.
pub fn edit_command(
    state: Option<&ConsentTemplate>,
    edit: &DraftInput,
) -> Result<TemplateCommand, DomainError> {
    let t = state.ok_or_else(|| DomainError::NotFound("consent template".into()))?;
    let latest = t
        .latest()
        .ok_or_else(|| DomainError::NotFound("consent template version".into()))?;
    Ok(TemplateCommand::EditDraft {
        content: latest.content.edited(edit, &mut fresh())?,
    })
}

/// The command of an action (`publish`, `new-version`) on the template as it stands.
pub fn action_command(
    state: Option<&ConsentTemplate>,
    action: &str,
    by: Uuid,
    at: DateTime<Utc>,
) -> Result<TemplateCommand, DomainError> {
    match action {
        "publish" => Ok(TemplateCommand::Publish { by, at }),
        _ => {
            let t = state.ok_or_else(|| DomainError::NotFound("consent template".into()))?;
            // A draft copied from the newest published version (decide refuses when a
            // draft exists already).
            let base = t
                .published(None)
                .or(t.latest())
                .ok_or_else(|| DomainError::NotFound("consent template version".into()))?;
            Ok(TemplateCommand::NewVersion {
                content: base.content.with_fresh_ids(&mut fresh()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn counter() -> impl FnMut() -> Uuid {
        let mut n = 0u128;
        move || {
            n += 1;
            Uuid::from_u128(n)
        }
    }

    fn section(title: &str, clauses: &[(&str, bool)]) -> SectionInput {
        SectionInput {
            title: title.into(),
            clauses: clauses
                .iter()
                .map(|(t, r)| ClauseInput {
                    text: (*t).into(),
                    required: *r,
                })
                .collect(),
        }
    }

    fn created() -> ConsentTemplate {
        let content = TemplateContent::parse(
            "Research participation",
            None,
            &[section(
                "Data",
                &[("I agree.", true), ("Contact me.", false)],
            )],
            &mut counter(),
        )
        .unwrap();
        let evs = ConsentTemplate::decide(
            None,
            &TemplateCommand::Create {
                id: Uuid::nil(),
                kind: " Research ".into(),
                content,
            },
        )
        .unwrap();
        evs.iter().fold(None, ConsentTemplate::evolve).unwrap()
    }

    fn run(t: &ConsentTemplate, c: TemplateCommand) -> Result<ConsentTemplate, DomainError> {
        let evs = ConsentTemplate::decide(Some(t), &c)?;
        Ok(evs
            .iter()
            .fold(Some(t.clone()), ConsentTemplate::evolve)
            .unwrap())
    }

    #[test]
    fn content_is_checked_and_ordered() {
        let c = TemplateContent::parse(
            " T ",
            Some("  "),
            &[
                section("A", &[("one", true), ("two", false)]),
                section("B", &[("three", true)]),
            ],
            &mut counter(),
        )
        .unwrap();
        assert_eq!(c.title, "T");
        assert_eq!(c.description, None);
        assert_eq!(c.sections[1].order, 2);
        assert_eq!(c.sections[0].clauses[1].order, 2);
        assert!(!c.sections[0].clauses[1].required);
        for bad in [
            vec![],
            vec![section("A", &[])],
            vec![section("", &[("x", true)])],
            vec![section("A", &[("   ", true)])],
        ] {
            let e = TemplateContent::parse("T", None, &bad, &mut counter()).unwrap_err();
            assert!(matches!(e, DomainError::Invalid { .. }), "{e}");
        }
        let long = "x".repeat(MAX_CLAUSE_TEXT + 1);
        assert!(
            TemplateContent::parse("T", None, &[section("A", &[(&long, true)])], &mut counter())
                .is_err()
        );
        assert!(parse_kind("9lives").is_err());
        assert!(parse_kind("data sharing").is_err());
        assert_eq!(parse_kind("Data_Sharing").unwrap(), "data_sharing");
    }

    #[test]
    fn a_published_version_is_immutable_and_edits_make_a_new_version() {
        let t = created();
        assert_eq!(t.kind, "research");
        assert_eq!((t.latest_version, t.published_version), (1, None));
        assert!(t.published(None).is_none() && t.published(Some(1)).is_none());
        let edit = DraftInput {
            title: Some("Research participation (v1b)".into()),
            ..Default::default()
        };
        let t = run(&t, edit_command(Some(&t), &edit).unwrap()).unwrap();
        assert_eq!(t.versions[0].content.title, "Research participation (v1b)");
        let at = Utc::now();
        let t = run(
            &t,
            TemplateCommand::Publish {
                by: Uuid::nil(),
                at,
            },
        )
        .unwrap();
        assert_eq!(t.published_version, Some(1));
        let frozen = t.versions[0].clone();
        // Published: edits refused for good, publish again is an illegal transition.
        assert!(matches!(
            run(&t, edit_command(Some(&t), &edit).unwrap()),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            run(
                &t,
                TemplateCommand::Publish {
                    by: Uuid::nil(),
                    at
                }
            ),
            Err(DomainError::IllegalTransition { .. })
        ));
        let t = run(
            &t,
            action_command(Some(&t), "new-version", Uuid::nil(), at).unwrap(),
        )
        .unwrap();
        assert_eq!((t.latest_version, t.published_version), (2, Some(1)));
        assert_eq!(t.versions[1].status, VersionStatus::Draft);
        assert_eq!(t.versions[1].content.title, frozen.content.title);
        assert_ne!(
            t.versions[1].content.sections[0].clauses[0].id,
            frozen.content.sections[0].clauses[0].id,
            "a new version's clauses are new clauses"
        );
        assert!(matches!(
            run(
                &t,
                action_command(Some(&t), "new-version", Uuid::nil(), at).unwrap()
            ),
            Err(DomainError::IllegalTransition { .. })
        ));
        let edit = DraftInput {
            sections: Some(vec![section("Data", &[("I agree, again.", true)])]),
            ..Default::default()
        };
        let t = run(&t, edit_command(Some(&t), &edit).unwrap()).unwrap();
        assert_eq!(t.versions[0], frozen, "editing v2 leaves v1 as published");
        assert_eq!(
            t.versions[1].content.sections[0].clauses[0].text,
            "I agree, again."
        );
        assert!(t.published(Some(2)).is_none());
        assert_eq!(t.published(None).unwrap().version, 1);
    }
}
