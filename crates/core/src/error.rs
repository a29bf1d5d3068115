use serde::Serialize;

/// A problem with one field of a request, located by its path in the document
/// (`batch[3].properties`), so the caller knows exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Stable machine-readable code, e.g. `missing_field`, `invalid_type`.
    pub code: &'static str,
    /// Path of the offending field in the request document.
    pub field: String,
    pub message: String,
    /// Where inside the field's text (a template), 1-based, when that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl FieldError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// Prefix the path with the position of the item in a batch.
    pub fn at_index(mut self, index: usize) -> Self {
        self.field = if self.field.is_empty() {
            format!("batch[{index}]")
        } else {
            format!("batch[{index}].{}", self.field)
        };
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}
