//! Surfaces: the places on a page or app that content goes, named by URI
//! (`web://shop.example/home#hero`, `app://com.example/home`, `code://anything`). Placements
//! (decisioning) are defined on them and journeys place content on them, so the rule for
//! what reads as one lives here, beneath both.

/// The schemes a surface URI may have, one per placement channel.
pub const SCHEMES: [&str; 3] = ["web", "app", "code"];
/// The longest surface URI.
pub const MAX_LEN: usize = 512;

/// Whether `text` reads as a surface URI: a known scheme, something after `://`, at most
/// [`MAX_LEN`] bytes, no whitespace.
pub fn is_uri(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, rest)| {
        SCHEMES.contains(&scheme) && !rest.is_empty() && well_formed(text)
    })
}

/// Within the length limit and without whitespace.
pub fn well_formed(text: &str) -> bool {
    text.len() <= MAX_LEN && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    #[test]
    fn surface_uris_read_as_such() {
        assert!(super::is_uri("web://shop.example/home#hero"));
        assert!(super::is_uri("app://com.example/home"));
        assert!(!super::is_uri("ftp://x"));
        assert!(!super::is_uri("web://"));
        assert!(!super::is_uri("web://a b"));
        assert!(!super::is_uri(&format!("web://{}", "a".repeat(600))));
        assert!(!super::is_uri("hero"));
    }
}
