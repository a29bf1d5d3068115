//! Identities: a value in a namespace (`user_id:42`, `email:ada@example.com`) that points at
//! exactly one profile. The identity graph is the set of these pointers.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// A namespace name: lowercase ASCII letters, digits and `_`, 1 to 64 characters.
/// Built-in ones are `user_id`, `anonymous_id`, `email` and `phone`; any other valid name
/// (`device_token`, `crm_id`, ...) is a custom namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Namespace(String);

impl Namespace {
    pub const USER_ID: &'static str = "user_id";
    pub const ANONYMOUS_ID: &'static str = "anonymous_id";
    pub const EMAIL: &'static str = "email";
    pub const PHONE: &'static str = "phone";
    /// Push tokens: `context.device.token` of iOS devices (APNs) and of the rest (FCM).
    pub const APNS_TOKEN: &'static str = "apns_token";
    pub const FCM_TOKEN: &'static str = "fcm_token";
    /// Push platforms and the namespace holding each one's device tokens, iOS first.
    pub const PUSH_TOKENS: [(&'static str, &'static str); 2] =
        [("apns", Self::APNS_TOKEN), ("fcm", Self::FCM_TOKEN)];

    /// The namespace of a push platform's device tokens (`apns`, else FCM's).
    pub fn of_push_platform(platform: &str) -> &'static str {
        if platform == "apns" {
            Self::APNS_TOKEN
        } else {
            Self::FCM_TOKEN
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "namespace {name:?} must be 1 to 64 characters of a-z, 0-9 and _"
            ))
        }
    }

    fn known(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub const MAX_IDENTITY_VALUE_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub namespace: Namespace,
    pub value: String,
}

impl Identity {
    /// Builds an identity, normalising the value the way the namespace requires
    /// (emails are case-insensitive; phone numbers keep only `+` and digits).
    pub fn new(namespace: Namespace, value: &str) -> Result<Self, String> {
        let value = match namespace.as_str() {
            Namespace::EMAIL => value.trim().to_lowercase(),
            Namespace::PHONE => value
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect(),
            _ => value.to_owned(),
        };
        if value.is_empty() {
            return Err(format!("{namespace} must not be empty"));
        }
        if value.len() > MAX_IDENTITY_VALUE_LEN {
            return Err(format!(
                "{namespace} is longer than {MAX_IDENTITY_VALUE_LEN} bytes"
            ));
        }
        Ok(Self { namespace, value })
    }

    pub fn parse(namespace: &str, value: &str) -> Result<Self, String> {
        Self::new(Namespace::parse(namespace)?, value)
    }

    pub fn user_id(value: &str) -> Result<Self, String> {
        Self::new(Namespace::known(Namespace::USER_ID), value)
    }

    pub fn anonymous_id(value: &str) -> Result<Self, String> {
        Self::new(Namespace::known(Namespace::ANONYMOUS_ID), value)
    }

    pub fn is_user_id(&self) -> bool {
        self.namespace.as_str() == Namespace::USER_ID
    }

    /// Where messages go: an email address, a phone number or a push token. Attaching
    /// one to a person decides who receives their messages.
    pub fn is_address(&self) -> bool {
        matches!(self.namespace.as_str(), Namespace::EMAIL | Namespace::PHONE)
            || self.is_push_token()
    }

    /// An app install's push token (APNs or FCM).
    pub fn is_push_token(&self) -> bool {
        Namespace::PUSH_TOKENS
            .iter()
            .any(|(_, ns)| self.namespace.as_str() == *ns)
    }

    pub(crate) fn from_field(
        namespace: &'static str,
        value: &str,
        field: &str,
    ) -> Result<Self, FieldError> {
        Self::new(Namespace::known(namespace), value)
            .map_err(|m| FieldError::new("invalid_value", field, m))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.namespace, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_email_and_phone() {
        assert_eq!(
            Identity::parse("email", "  Ada@Example.COM ")
                .expect("ok")
                .value,
            "ada@example.com"
        );
        assert_eq!(
            Identity::parse("phone", "+1 (555) 010-9999")
                .expect("ok")
                .value,
            "+15550109999"
        );
        assert_eq!(Identity::parse("user_id", "Ada").expect("ok").value, "Ada");
    }

    #[test]
    fn rejects_bad_namespaces_and_values() {
        assert!(Identity::parse("User-Id", "x").is_err());
        assert!(Identity::parse("", "x").is_err());
        assert!(Identity::parse("email", "   ").is_err());
        assert!(Identity::parse("crm_id", &"x".repeat(MAX_IDENTITY_VALUE_LEN + 1)).is_err());
        assert!(Identity::parse("crm_id", "C-1").is_ok());
    }
}
