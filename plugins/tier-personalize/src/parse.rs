//! Minimal readers for the two JSON texts this plugin looks into: the profile traits and a
//! placement's constraints. They take only what the decision needs, borrowing strings
//! from the text, and skip the rest without building a tree.
//!
//! Their results equal reading the text into a `serde_json::Value` first: a text that is
//! malformed or not an object counts as `{}`, and of a key given twice the last one wins.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Visitor methods answering `$value` for every number, boolean and `null`, so a visitor
/// accepts any JSON value where it expects one kind.
macro_rules! other_scalars_are {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// Any JSON value, kept only when it is a string: borrowed from the text unless it has
/// escapes.
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrOrSkip;

        impl<'de> Visitor<'de> for StrOrSkip {
            type Value = MaybeStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(s.to_owned()))))
            }
            other_scalars_are!(MaybeStr(None));
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| MaybeStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| MaybeStr(None))
            }
        }

        deserializer.deserialize_any(StrOrSkip)
    }
}

/// The `tier` trait when it is a string; `None` when it is missing or anything else, or
/// when the traits are malformed or not an object.
pub fn tier_trait(traits: &str) -> Option<Cow<'_, str>> {
    struct TierTrait;

    impl<'de> Visitor<'de> for TierTrait {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut tier = None;
            while let Some(MaybeStr(key)) = map.next_key()? {
                if key.as_deref() == Some("tier") {
                    tier = map.next_value::<MaybeStr>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(tier)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(traits);
    deserializer
        .deserialize_map(TierTrait)
        .and_then(|tier| deserializer.end().map(|()| tier))
        .unwrap_or(None)
}

/// An `audience_banners` entry that won: the first, in list order, for an audience the
/// visitor is in.
#[derive(Debug)]
pub struct AudienceBanner<'a> {
    pub audience: Cow<'a, str>,
    pub variant: Cow<'a, str>,
    /// The entry's `content` object, as written.
    pub content: Option<&'a RawValue>,
}

/// Why `audience_banners` is invalid; see [`BannerProblem::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BannerProblem {
    NotAnArray,
    /// Entry `index` is not an object.
    NotAnObject(usize),
    /// Entry `index` has no string `audience`.
    NoAudience(usize),
    /// Entry `index` has no string `variant`.
    NoVariant(usize),
    /// Entry `index` has a `content` that is not an object.
    ContentNotAnObject(usize),
}

impl BannerProblem {
    /// The problem in words, to follow `constraints.audience_banners`.
    pub fn describe(self) -> String {
        match self {
            BannerProblem::NotAnArray => " is not an array".to_owned(),
            BannerProblem::NotAnObject(i) => format!("[{i}] is not an object"),
            BannerProblem::NoAudience(i) => format!("[{i}] has no string `audience`"),
            BannerProblem::NoVariant(i) => format!("[{i}] has no string `variant`"),
            BannerProblem::ContentNotAnObject(i) => {
                format!("[{i}] has a `content` that is not an object")
            }
        }
    }
}

/// What a placement's constraints hold for this plugin.
#[derive(Debug)]
pub struct Constraints<'a> {
    /// The strings of `exclude` (other elements, and an `exclude` that is not an array,
    /// are ignored).
    pub exclude: Vec<Cow<'a, str>>,
    /// `audience_banners`, when present: the first entry whose audience the visitor is
    /// in, after checking every entry.
    pub banner: Result<Option<AudienceBanner<'a>>, BannerProblem>,
}

impl Default for Constraints<'_> {
    /// The constraints of `{}`.
    fn default() -> Self {
        Constraints {
            exclude: Vec::new(),
            banner: Ok(None),
        }
    }
}

impl<'a> Constraints<'a> {
    /// Reads `text` for a visitor in `audiences`.
    pub fn read(text: &'a str, audiences: &[String]) -> Constraints<'a> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        deserializer
            .deserialize_map(ConstraintsVisitor { audiences })
            .and_then(|c| deserializer.end().map(|()| c))
            .unwrap_or_default()
    }
}

struct ConstraintsVisitor<'s> {
    audiences: &'s [String],
}

impl<'de> Visitor<'de> for ConstraintsVisitor<'_> {
    type Value = Constraints<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut constraints = Constraints::default();
        while let Some(MaybeStr(key)) = map.next_key()? {
            match key.as_deref() {
                Some("exclude") => constraints.exclude = map.next_value::<Exclude>()?.0,
                Some("audience_banners") => {
                    constraints.banner = map.next_value_seed(Banners {
                        audiences: self.audiences,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(constraints)
    }
}

/// The strings of an `exclude` array; nothing for anything but an array.
struct Exclude<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Exclude<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings;

        impl<'de> Visitor<'de> for Strings {
            type Value = Exclude<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut ids = Vec::new();
                while let Some(MaybeStr(id)) = seq.next_element()? {
                    ids.extend(id);
                }
                Ok(Exclude(ids))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Exclude(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Exclude(Vec::new()))
            }
            other_scalars_are!(Exclude(Vec::new()));
        }

        deserializer.deserialize_any(Strings)
    }
}

/// Reads `audience_banners`: checks every entry in order, stopping at the first problem,
/// and picks the first entry for one of `audiences`.
struct Banners<'s> {
    audiences: &'s [String],
}

impl<'de> DeserializeSeed<'de> for Banners<'_> {
    type Value = Result<Option<AudienceBanner<'de>>, BannerProblem>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Banners<'_> {
    type Value = Result<Option<AudienceBanner<'de>>, BannerProblem>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut chosen = None;
        let mut index = 0;
        while let Some(entry) = seq.next_element::<Entry>()? {
            let banner = match entry.check(index) {
                Ok(banner) => banner,
                Err(problem) => {
                    IgnoredAny.visit_seq(seq)?;
                    return Ok(Err(problem));
                }
            };
            if chosen.is_none() && self.audiences.iter().any(|a| *a == banner.audience) {
                chosen = Some(banner);
            }
            index += 1;
        }
        Ok(Ok(chosen))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Err(BannerProblem::NotAnArray))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(BannerProblem::NotAnArray))
    }
    other_scalars_are!(Err(BannerProblem::NotAnArray));
}

/// One `audience_banners` entry as written, before checking.
enum Entry<'a> {
    NotAnObject,
    Object {
        audience: Option<Cow<'a, str>>,
        variant: Option<Cow<'a, str>>,
        content: Option<&'a RawValue>,
    },
}

impl<'a> Entry<'a> {
    /// The banner, or the entry's first problem in the documented order.
    fn check(self, index: usize) -> Result<AudienceBanner<'a>, BannerProblem> {
        let Entry::Object {
            audience,
            variant,
            content,
        } = self
        else {
            return Err(BannerProblem::NotAnObject(index));
        };
        let audience = audience.ok_or(BannerProblem::NoAudience(index))?;
        let variant = variant.ok_or(BannerProblem::NoVariant(index))?;
        // A raw value starts at its first character: `{` only for an object.
        if content.is_some_and(|c| !c.get().starts_with('{')) {
            return Err(BannerProblem::ContentNotAnObject(index));
        }
        Ok(AudienceBanner {
            audience,
            variant,
            content,
        })
    }
}

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = Entry<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut audience, mut variant, mut content) = (None, None, None);
                while let Some(MaybeStr(key)) = map.next_key()? {
                    match key.as_deref() {
                        Some("audience") => audience = map.next_value::<MaybeStr>()?.0,
                        Some("variant") => variant = map.next_value::<MaybeStr>()?.0,
                        Some("content") => content = Some(map.next_value::<&RawValue>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Entry::Object {
                    audience,
                    variant,
                    content,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Entry::NotAnObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Entry::NotAnObject)
            }
            other_scalars_are!(Entry::NotAnObject);
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}
