//! Identity rules: which identifiers an event carries, how they are normalised (E.164
//! phones, lower-case e-mail), which values are never used (placeholders), how many of
//! each kind one profile may hold, and their priority when a merge must give one up.
//! Pure functions; [`crate::ingest::processor`] applies them.

use serde_json::Value;

use crate::ingest::segment::{Message, MessageType};
use crate::profiles::IdentityRecord;

/// Identity kind of the brand's user id.
pub const USER_ID: &str = "user_id";
/// Identity kind of a device's anonymous id.
pub const ANONYMOUS_ID: &str = "anonymous_id";
/// Identity kind of an e-mail address.
pub const EMAIL: &str = "email";
/// Identity kind of an E.164 phone number.
pub const PHONE: &str = "phone";

/// Longest identity kind: kinds come from `context.externalIds[].type` too.
const MAX_KIND_BYTES: usize = 64;

/// Values analytics libraries and forms send when they have no real id. Matching is
/// case-insensitive; values made only of `0` and `-` are blocked too.
const BLOCKED: &[&str] = &[
    "null",
    "undefined",
    "anonymous",
    "none",
    "nil",
    "unknown",
    "n/a",
    "-1",
    "test@test.com",
];

/// Whether `value` is a placeholder that must never identify a profile.
pub fn is_blocked(value: &str) -> bool {
    let v = value.trim();
    v.is_empty()
        || v.chars().all(|c| c == '0' || c == '-')
        || BLOCKED.iter().any(|b| b.eq_ignore_ascii_case(v))
}

/// Most identities of `kind` one profile may hold (Segment Unify's defaults: one user id,
/// five of anything else), so a shared device cannot merge many people into one profile.
pub fn limit(kind: &str) -> usize {
    if kind == USER_ID {
        1
    } else {
        5
    }
}

/// Merge priority of `kind`, lower is stronger: user id, then e-mail, then the rest
/// alphabetically (returned as a sort key).
pub fn priority(kind: &str) -> (u8, &str) {
    match kind {
        USER_ID => (0, ""),
        EMAIL => (1, ""),
        other => (2, other),
    }
}

/// Normalises a phone number to E.164. Accepts `+<country><number>`, `00<country>…`, and
/// the Vietnamese forms `0xxxxxxxxx` and `84xxxxxxxxx` (9 or 10 national digits); spaces,
/// dots, dashes and parentheses are ignored. `None` if it is not a plausible number.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let plus = raw.starts_with('+');
    let mut digits = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '.' | '-' | '(' | ')' | '+' => {}
            _ => return None,
        }
    }
    let e164 = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(national) = digits.strip_prefix('0') {
        // Vietnamese national format: 0 + 9 digits (mobile) or 0 + 10 digits (landline).
        if !(9..=10).contains(&national.len()) {
            return None;
        }
        format!("84{national}")
    } else if digits.starts_with("84") && (11..=12).contains(&digits.len()) {
        digits
    } else {
        return None;
    };
    // E.164: at most 15 digits; 8 is the shortest plausible international number.
    if !(8..=15).contains(&e164.len()) || e164.starts_with('0') {
        return None;
    }
    Some(format!("+{e164}"))
}

/// Normalises an e-mail address (trimmed, lower-case); `None` without a single `@` between
/// non-empty parts.
pub fn normalize_email(raw: &str) -> Option<String> {
    let v = raw.trim().to_lowercase();
    let (user, domain) = v.split_once('@')?;
    if user.is_empty() || domain.is_empty() || domain.contains('@') || v.contains(' ') {
        return None;
    }
    Some(v)
}

/// Normalises one identity for storage and lookup: `None` if blocked or malformed.
pub fn normalize(kind: &str, value: &str) -> Option<IdentityRecord> {
    let kind = kind.trim().to_ascii_lowercase();
    if kind.is_empty()
        || kind.len() > MAX_KIND_BYTES
        || !kind
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b':')
    {
        return None;
    }
    if is_blocked(value) {
        return None;
    }
    let value = match kind.as_str() {
        PHONE => normalize_phone(value)?,
        EMAIL => normalize_email(value)?,
        _ => value.trim().to_string(),
    };
    Some(IdentityRecord { kind, value })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The identities a message carries, normalised, deduplicated and in priority order:
/// `userId`, `anonymousId`, identify's `email`/`phone` traits, and
/// `context.externalIds[] = {id, type}`. Alias's `previousId` is not among them.
pub fn from_message(m: &Message) -> Vec<IdentityRecord> {
    let mut out: Vec<IdentityRecord> = Vec::new();
    let mut push = |kind: &str, value: &str| {
        if let Some(id) = normalize(kind, value) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    };
    if let Some(u) = &m.user_id {
        push(USER_ID, u);
    }
    if let Some(a) = &m.anonymous_id {
        push(ANONYMOUS_ID, a);
    }
    if m.kind == MessageType::Identify {
        for (key, kind) in [("email", EMAIL), ("phone", PHONE)] {
            if let Some(v) = m.traits.get(key).and_then(text) {
                push(kind, &v);
            }
        }
    }
    if let Some(Value::Array(ids)) = m.context.get("externalIds") {
        for e in ids {
            if let (Some(id), Some(kind)) = (
                e.get("id").and_then(text),
                e.get("type").and_then(Value::as_str),
            ) {
                push(kind, &id);
            }
        }
    }
    sort_by_priority(&mut out);
    out
}

/// Sorts identities strongest first.
pub fn sort_by_priority(ids: &mut [IdentityRecord]) {
    ids.sort_by(|a, b| priority(&a.kind).cmp(&priority(&b.kind)));
}

/// The first kind whose count in `ids` exceeds its [`limit`], if any.
pub fn over_limit(ids: &[IdentityRecord]) -> Option<&str> {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in ids {
        let n = counts.entry(id.kind.as_str()).or_default();
        *n += 1;
        if *n > limit(&id.kind) {
            return Some(id.kind.as_str());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_phone_forms_normalise_to_e164() {
        for raw in [
            "0901234567",
            "84901234567",
            "+84901234567",
            "+84 90 123 4567",
            "0090-123-4567x",
        ] {
            let want = if raw.ends_with('x') {
                None
            } else {
                Some("+84901234567".to_string())
            };
            assert_eq!(normalize_phone(raw), want, "{raw}");
        }
        assert_eq!(
            normalize_phone("(028) 3822 1234").as_deref(),
            Some("+842838221234")
        );
        assert_eq!(
            normalize_phone("0084901234567").as_deref(),
            Some("+84901234567")
        );
        assert_eq!(
            normalize_phone("+1 415 555 0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(normalize_phone("12345"), None);
        assert_eq!(normalize_phone("090123"), None);
        assert_eq!(normalize_phone("call me"), None);
    }

    #[test]
    fn placeholder_values_are_blocked() {
        for v in [
            "null",
            "NULL",
            "undefined",
            "anonymous",
            "0",
            "0000",
            "-1",
            "",
            "  ",
            "0-0",
        ] {
            assert!(is_blocked(v), "{v:?}");
            assert!(normalize(USER_ID, v).is_none(), "{v:?}");
        }
        for v in ["42", "u-1", "10"] {
            assert!(!is_blocked(v), "{v:?}");
        }
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_email(" An@Example.COM ").as_deref(),
            Some("an@example.com")
        );
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b@c"), None);
    }

    #[test]
    fn user_id_outranks_email_which_outranks_the_rest() {
        let mut ids = vec![
            IdentityRecord {
                kind: "phone".into(),
                value: "+84901234567".into(),
            },
            IdentityRecord {
                kind: "anonymous_id".into(),
                value: "a".into(),
            },
            IdentityRecord {
                kind: "email".into(),
                value: "a@b.c".into(),
            },
            IdentityRecord {
                kind: "user_id".into(),
                value: "1".into(),
            },
        ];
        sort_by_priority(&mut ids);
        let kinds: Vec<_> = ids.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["user_id", "email", "anonymous_id", "phone"]);
    }

    #[test]
    fn one_user_id_and_five_of_anything_else_per_profile() {
        let id = |k: &str, v: usize| IdentityRecord {
            kind: k.into(),
            value: v.to_string(),
        };
        let five: Vec<_> = (0..5).map(|i| id("anonymous_id", i)).collect();
        assert_eq!(over_limit(&five), None);
        let mut six = five.clone();
        six.push(id("anonymous_id", 9));
        assert_eq!(over_limit(&six), Some("anonymous_id"));
        assert_eq!(
            over_limit(&[id("user_id", 1), id("user_id", 2)]),
            Some("user_id")
        );
    }
}
