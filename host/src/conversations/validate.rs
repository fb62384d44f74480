//! Checks what the visitor sent against what the flow expects, before the flow runs: a
//! flow only ever sees answers of the kind it asked for, already normalized (phone numbers
//! in E.164, email in lower case, a choice as its value, a rating as a number).

use crate::runtime::bindings::exports::flow::{ExpectedInput, InputKind, UserInput};

/// Longest pattern a flow may give in `validation`: patterns are compiled per answer.
const MAX_PATTERN_BYTES: usize = 256;

/// Compiled-pattern size cap: a hostile pattern cannot make the host build a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 64 * 1024;

/// Why an answer was refused; the reason picks the default re-prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not of the expected kind.
    Kind(InputKind),
    /// Failed the flow's own validator.
    Pattern,
}

/// The answer as the flow will see it, or why it was refused.
pub fn check(expect: &ExpectedInput, input: UserInput) -> Result<UserInput, Invalid> {
    let text = match &input {
        UserInput::Text(t) => Some(t.trim().to_string()),
        UserInput::Postback(p) => Some(p.clone()),
        _ => None,
    };
    let bad = || Invalid::Kind(expect.kind);
    let out = match expect.kind {
        InputKind::FreeText | InputKind::None => input,
        InputKind::File => match input {
            UserInput::Media(_) => input,
            _ => return Err(bad()),
        },
        InputKind::Number => {
            let t = text.ok_or_else(bad)?;
            // Vietnamese writes decimals with a comma; thousands separators are dropped.
            let cleaned: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            let cleaned = if cleaned.contains(',') && !cleaned.contains('.') {
                cleaned.replace(',', ".")
            } else {
                cleaned.replace(',', "")
            };
            let n: f64 = cleaned.parse().map_err(|_| bad())?;
            if !n.is_finite() {
                return Err(bad());
            }
            UserInput::Text(cleaned)
        }
        InputKind::Email => {
            let t = text.ok_or_else(bad)?;
            let e = crate::identity::normalize_email(&t).ok_or_else(bad)?;
            if !plausible_email(&e) {
                return Err(bad());
            }
            UserInput::Text(e)
        }
        InputKind::Phone => {
            let t = text.ok_or_else(bad)?;
            UserInput::Text(crate::identity::normalize_phone(&t).ok_or_else(bad)?)
        }
        InputKind::Date => {
            let t = text.ok_or_else(bad)?;
            UserInput::Text(parse_date(&t).ok_or_else(bad)?)
        }
        InputKind::Choice => {
            let t = text.ok_or_else(bad)?;
            UserInput::Postback(choice_value(expect, &t).ok_or_else(bad)?)
        }
        InputKind::Rating => match input {
            UserInput::Rating(r) if r <= 10 => UserInput::Rating(r),
            _ => {
                let t = text.ok_or_else(bad)?;
                let n: u8 = t.parse().map_err(|_| bad())?;
                if n > 10 {
                    return Err(bad());
                }
                UserInput::Rating(n)
            }
        },
    };
    if let (Some(pattern), UserInput::Text(t)) = (&expect.validation, &out) {
        if !matches_pattern(pattern, t) {
            return Err(Invalid::Pattern);
        }
    }
    Ok(out)
}

/// Whether `text` passes a flow's `validation`: a named validator (`email`, `phone`,
/// `digits`) or a regular expression. A pattern that does not compile refuses nothing
/// (the flow's bug must not lock the visitor out) and is logged.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern {
        "email" => plausible_email(text),
        "phone" => crate::identity::normalize_phone(text).is_some(),
        "digits" => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
        p if p.len() > MAX_PATTERN_BYTES => {
            tracing::warn!(
                len = p.len(),
                "flow validation pattern too long; not applied"
            );
            true
        }
        p => match regex::RegexBuilder::new(p)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
        {
            Ok(re) => re.is_match(text),
            Err(e) => {
                tracing::warn!(pattern = p, error = %e, "flow validation pattern does not compile; not applied");
                true
            }
        },
    }
}

/// `local@domain.tld` with no spaces.
fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.contains(char::is_whitespace)
}

/// `YYYY-MM-DD`, `DD/MM/YYYY` or `DD-MM-YYYY` (day first, as written in Vietnam) →
/// `YYYY-MM-DD`.
fn parse_date(t: &str) -> Option<String> {
    use chrono::NaiveDate;
    ["%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(t, f).ok())
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// The value of the choice `t` names: its value, its label (any case), or its number
/// (`1` for the first).
fn choice_value(expect: &ExpectedInput, t: &str) -> Option<String> {
    let folded = fold(t);
    if let Some(c) = expect
        .choices
        .iter()
        .find(|c| c.value == t || fold(&c.label) == folded)
    {
        return Some(c.value.clone());
    }
    let n: usize = t.parse().ok()?;
    expect
        .choices
        .get(n.checked_sub(1)?)
        .map(|c| c.value.clone())
}

/// Lower case without Vietnamese diacritics, spaces squeezed: `Giao Hàng` → `giao hang`.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let base = match c {
            'à' | 'á' | 'ả' | 'ã' | 'ạ' | 'ă' | 'ằ' | 'ắ' | 'ẳ' | 'ẵ' | 'ặ' | 'â' | 'ầ' | 'ấ'
            | 'ẩ' | 'ẫ' | 'ậ' => 'a',
            'è' | 'é' | 'ẻ' | 'ẽ' | 'ẹ' | 'ê' | 'ề' | 'ế' | 'ể' | 'ễ' | 'ệ' => {
                'e'
            }
            'ì' | 'í' | 'ỉ' | 'ĩ' | 'ị' => 'i',
            'ò' | 'ó' | 'ỏ' | 'õ' | 'ọ' | 'ô' | 'ồ' | 'ố' | 'ổ' | 'ỗ' | 'ộ' | 'ơ' | 'ờ' | 'ớ'
            | 'ở' | 'ỡ' | 'ợ' => 'o',
            'ù' | 'ú' | 'ủ' | 'ũ' | 'ụ' | 'ư' | 'ừ' | 'ứ' | 'ử' | 'ữ' | 'ự' => {
                'u'
            }
            'ỳ' | 'ý' | 'ỷ' | 'ỹ' | 'ỵ' => 'y',
            'đ' => 'd',
            c if c.is_whitespace() => ' ',
            c => c,
        };
        if base == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(base);
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::types::Choice;

    fn expect(kind: InputKind) -> ExpectedInput {
        ExpectedInput {
            kind,
            choices: vec![
                Choice {
                    label: "Giao hàng".into(),
                    value: "topic:shipping".into(),
                },
                Choice {
                    label: "Đổi trả".into(),
                    value: "topic:returns".into(),
                },
            ],
            validation: None,
            timeout_ms: None,
            reprompt: None,
        }
    }

    fn text(t: &str) -> UserInput {
        UserInput::Text(t.into())
    }

    #[test]
    fn phone_answers_reach_the_flow_in_e164() {
        let e = expect(InputKind::Phone);
        assert!(
            matches!(check(&e, text("0901 234 567")), Ok(UserInput::Text(t)) if t == "+84901234567")
        );
        assert!(matches!(
            check(&e, text("call me")),
            Err(Invalid::Kind(InputKind::Phone))
        ));
    }

    #[test]
    fn choices_are_picked_by_value_label_or_number() {
        let e = expect(InputKind::Choice);
        for t in ["topic:returns", "đổi TRẢ", "doi tra", "2"] {
            assert!(
                matches!(check(&e, text(t)), Ok(UserInput::Postback(v)) if v == "topic:returns"),
                "{t}"
            );
        }
        assert!(check(&e, text("3")).is_err());
        assert!(check(&e, text("something else")).is_err());
    }

    #[test]
    fn numbers_dates_emails_and_ratings_are_normalized() {
        assert!(
            matches!(check(&expect(InputKind::Number), text("1,5")), Ok(UserInput::Text(t)) if t == "1.5")
        );
        assert!(check(&expect(InputKind::Number), text("abc")).is_err());
        assert!(
            matches!(check(&expect(InputKind::Date), text("24/12/2026")), Ok(UserInput::Text(t)) if t == "2026-12-24")
        );
        assert!(
            matches!(check(&expect(InputKind::Email), text(" An@Example.VN ")), Ok(UserInput::Text(t)) if t == "an@example.vn")
        );
        assert!(check(&expect(InputKind::Email), text("an@")).is_err());
        assert!(matches!(
            check(&expect(InputKind::Rating), text("4")),
            Ok(UserInput::Rating(4))
        ));
        assert!(check(&expect(InputKind::Rating), UserInput::Rating(11)).is_err());
    }

    #[test]
    fn flow_patterns_apply_and_broken_ones_refuse_nothing() {
        let mut e = expect(InputKind::FreeText);
        e.validation = Some("^ORD-[0-9]{4}$".into());
        assert!(check(&e, text("ORD-1234")).is_ok());
        assert!(matches!(check(&e, text("1234")), Err(Invalid::Pattern)));
        e.validation = Some("([".into());
        assert!(check(&e, text("anything")).is_ok());
    }

    #[test]
    fn fold_removes_vietnamese_diacritics() {
        assert_eq!(fold("  Tôi muốn  GẶP nhân viên "), "toi muon gap nhan vien");
        assert_eq!(fold("Đổi trả"), "doi tra");
    }
}
