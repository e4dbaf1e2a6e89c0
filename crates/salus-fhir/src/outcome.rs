//! OperationOutcome and Bundle shapes (FHIR R4 §2.36, §2.6).

use serde_json::{Value, json};

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// `error`, `warning`, `fatal`, `information`.
    pub severity: &'static str,
    /// An IssueType code: `invalid`, `structure`, `required`, `value`, `not-found`,
    /// `deleted`, `conflict`, `duplicate`, `security`, `forbidden`, `login`, `not-supported`,
    /// `processing`, `business-rule`, `exception`, `throttled`, `timeout`, `transient`.
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath of the element at fault (`Patient.name[0].family`).
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }
}

/// An OperationOutcome of these issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v =
                json!({"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics});
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// The IssueType code for an HTTP status.
pub fn issue_code_for_status(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 | 415 => "not-supported",
        408 => "timeout",
        409 => "conflict",
        410 => "deleted",
        412 => "conflict",
        413 => "too-costly",
        422 => "invalid",
        428 => "required",
        429 => "throttled",
        503 => "transient",
        _ if status >= 500 => "exception",
        _ => "processing",
    }
}
