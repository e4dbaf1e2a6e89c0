//! Value objects of the registry. Each is constructed only by a parser that checks it, so a
//! value that exists is valid (parse, don't validate).

use salus_kernel::DomainError;
use serde::{Deserialize, Serialize};

fn check_text(field: &str, s: &str, max: usize) -> Result<String, DomainError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(DomainError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if t.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(t.to_owned())
}

/// A phone number in E.164 form: `+`, a country code, up to 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct E164Phone(String);

impl E164Phone {
    /// Accepts `+` followed by 8–15 digits; spaces, dashes, dots and parentheses between
    /// digits are dropped.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t = s.trim();
        let Some(rest) = t.strip_prefix('+') else {
            return Err(DomainError::invalid(
                "phone",
                format!("phone '{t}' must be in E.164 form, starting with + and the country code"),
            ));
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => {
                    return Err(DomainError::invalid(
                        "phone",
                        format!("phone '{t}' has a character that is not a digit"),
                    ));
                }
            }
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(DomainError::invalid(
                "phone",
                format!(
                    "phone '{t}' must have 8 to 15 digits after + and a country code that does not start with 0"
                ),
            ));
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for E164Phone {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<E164Phone> for String {
    fn from(p: E164Phone) -> String {
        p.0
    }
}

/// An e-mail address: one `@`, a non-empty local part, a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t = s.trim();
        let bad = || {
            DomainError::invalid(
                "email",
                format!("email '{t}' is not an address like name@example.org"),
            )
        };
        let (local, domain) = t.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || t.len() > 254
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A business identifier: a namespace (`system`, usually a URI such as
/// `http://hospital.example/mrn`) and a value unique within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

impl Identifier {
    pub fn parse(system: &str, value: &str) -> Result<Self, DomainError> {
        let system = check_text("identifiers.system", system, 256)?;
        let value = check_text("identifiers.value", value, 128)?;
        if system.contains('|') {
            return Err(DomainError::invalid(
                "identifiers.system",
                "identifier system must not contain '|'",
            ));
        }
        Ok(Self { system, value })
    }
}

/// A person's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HumanName {
    pub family: String,
    #[serde(default)]
    pub given: Vec<String>,
}

impl HumanName {
    pub fn parse(family: &str, given: &[String]) -> Result<Self, DomainError> {
        let family = check_text("name.family", family, 100)?;
        let given = given
            .iter()
            .map(|g| check_text("name.given", g, 100))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { family, given })
    }

    /// "Given Given Family".
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = self.given.iter().map(String::as_str).collect();
        parts.push(&self.family);
        parts.join(" ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
    Other,
    Unknown,
}

impl Gender {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "male" => Ok(Gender::Male),
            "female" => Ok(Gender::Female),
            "other" => Ok(Gender::Other),
            "unknown" => Ok(Gender::Unknown),
            other => Err(DomainError::invalid(
                "gender",
                format!("gender '{other}' is not one of male, female, other, unknown"),
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
            Gender::Other => "other",
            Gender::Unknown => "unknown",
        }
    }
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    #[serde(default)]
    pub line: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Address {
    pub fn checked(self) -> Result<Self, DomainError> {
        let opt = |f: &str, v: Option<String>| -> Result<Option<String>, DomainError> {
            v.map(|s| check_text(f, &s, 200)).transpose()
        };
        Ok(Address {
            line: self
                .line
                .iter()
                .map(|l| check_text("address.line", l, 200))
                .collect::<Result<_, _>>()?,
            city: opt("address.city", self.city)?,
            district: opt("address.district", self.district)?,
            state: opt("address.state", self.state)?,
            postal_code: opt("address.postal_code", self.postal_code)?,
            country: opt("address.country", self.country)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_formatted_numbers_and_normalises_them() {
        assert_eq!(
            E164Phone::parse("+44 20 7946-0958").unwrap().as_str(),
            "+442079460958"
        );
        assert!(E164Phone::parse("020 7946 0958").is_err());
        assert!(E164Phone::parse("+0123456789").is_err());
        assert!(E164Phone::parse("+1234").is_err());
        assert!(E164Phone::parse("+1234567890123456").is_err());
        assert!(E164Phone::parse("+1 555 CALL NOW").is_err());
    }

    #[test]
    fn email_needs_a_dotted_domain() {
        assert_eq!(
            Email::parse("Ada@Example.ORG").unwrap().as_str(),
            "Ada@example.org"
        );
        for bad in [
            "ada",
            "ada@",
            "@x.org",
            "ada@localhost",
            "a b@x.org",
            "a@b@c.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifier_and_name_reject_blank_and_control_text() {
        assert!(Identifier::parse("urn:mrn", " ").is_err());
        assert!(Identifier::parse("a|b", "1").is_err());
        assert!(HumanName::parse("Lovelace\u{0}", &[]).is_err());
        assert_eq!(
            HumanName::parse(" Lovelace ", &["Ada".into()])
                .unwrap()
                .text(),
            "Ada Lovelace"
        );
    }
}
