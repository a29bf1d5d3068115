//! CEL expressions in journeys: compiled at validation time, so a typo fails before the
//! journey runs, and checked to refer only to the variables the engine provides.

/// Variables an expression may read: the triggering `event`, the `profile`, the instance's
/// `journey` context (webhook responses and such), and `now` (milliseconds since the epoch).
pub const VARIABLES: [&str; 4] = ["event", "profile", "journey", "now"];

/// Compiles `source`; returns a message for the first problem found.
pub fn check(source: &str) -> Result<cel::Program, String> {
    if source.trim().is_empty() {
        return Err("expression is empty".into());
    }
    let program = cel::Program::compile(source).map_err(|e| format!("does not compile: {e}"))?;
    let references = program.references();
    let unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| !VARIABLES.contains(v))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(format!(
            "refers to unknown variable `{first}`; expressions can use {}",
            VARIABLES
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_expressions_over_known_variables() {
        assert!(check(r#"event.properties.total > 100 && profile.traits.plan == "pro""#).is_ok());
        assert!(check("has(profile.traits.email)").is_ok());
    }

    #[test]
    fn rejects_syntax_errors_and_unknown_variables() {
        assert!(
            check("event.properties.total >")
                .expect_err("should be rejected")
                .contains("does not compile")
        );
        assert!(
            check("evnt.name == 'x'")
                .expect_err("should be rejected")
                .contains("`evnt`")
        );
        assert!(check("  ").is_err());
    }
}
