//! Origin allowlists for browser-facing endpoints (the chat socket, `/v1/personalize`):
//! the brand lists its websites, and a page from any other origin is refused.

/// Most origins on an allowlist: a brand has a handful of sites, not hundreds.
pub const MAX_ORIGINS: usize = 50;

/// Normalizes `list` in place (lowercase, no trailing slash) and checks each entry is
/// `scheme://host[:port]`. The error names the field and the bad entry.
pub fn normalize(field: &str, list: &mut [String]) -> Result<(), String> {
    if list.len() > MAX_ORIGINS {
        return Err(format!(
            "{field} has {} entries; at most {MAX_ORIGINS}",
            list.len()
        ));
    }
    for o in list.iter_mut() {
        let t = o.trim().trim_end_matches('/').to_ascii_lowercase();
        let host = t
            .strip_prefix("https://")
            .or_else(|| t.strip_prefix("http://"));
        let ok = host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ']));
        if !ok {
            return Err(format!(
                "{field}: `{o}` is not an origin; write scheme and host, e.g. `https://shop.example.vn`"
            ));
        }
        *o = t;
    }
    Ok(())
}

/// Whether the browser `origin` header value is on the normalized `list`.
pub fn allows(list: &[String], origin: &str) -> bool {
    let o = origin.trim_end_matches('/');
    list.iter().any(|a| a.eq_ignore_ascii_case(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_matches_case_insensitively() {
        let mut l = vec!["https://Shop.Example.vn/".to_string()];
        normalize("allowed_origins", &mut l).unwrap();
        assert_eq!(l, ["https://shop.example.vn"]);
        assert!(allows(&l, "https://SHOP.example.vn"));
        assert!(!allows(&l, "https://evil.example"));
    }

    #[test]
    fn rejects_a_host_without_scheme_naming_it() {
        let mut l = vec!["shop.example.vn".to_string()];
        let e = normalize("allowed_origins", &mut l).unwrap_err();
        assert!(e.contains("`shop.example.vn`"), "{e}");
    }
}
