//! The personalization catalog as it crosses into a plugin (`weft:plugin/personalize`'s
//! `catalog`): every string in one text, entries and tags as numbers pointing into it, so
//! the catalog lowers into the guest in four copies however many items it holds (wasmtime
//! copies a list of numbers in one go, but stores a list of records field by field and
//! calls the guest's allocator once per string). The host builds it once per settings
//! change; in JSON (a call file, an invocation record) it reads as a list of
//! [`Candidate`]s.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::bindings::exports::personalize::Catalog;

/// Numbers per entry in `Catalog::entries`: id start and length, category start and
/// length, first tag and tag count.
pub const ENTRY_WORDS: usize = 6;

/// The category length of an entry without a category.
pub const NO_CATEGORY: u32 = u32::MAX;

/// One catalog item as JSON shows it and as [`CatalogBuilder::push`] takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Item id.
    pub id: String,
    /// Base score; higher ranks first.
    #[serde(default)]
    pub score: f32,
    /// The item's category, if any.
    #[serde(default)]
    pub category: Option<String>,
    /// Tags such as `tier:gold` or `sale`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Why a catalog could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// Offsets are 32-bit: the text cannot pass 4 GiB (the settings cap is 60 KiB).
    #[error("the catalog's strings exceed 4 GiB")]
    TooLarge,
}

/// Builds a [`Catalog`] entry by entry.
#[derive(Debug)]
pub struct CatalogBuilder {
    catalog: Catalog,
}

impl Default for CatalogBuilder {
    fn default() -> Self {
        CatalogBuilder::new()
    }
}

impl CatalogBuilder {
    /// An empty catalog.
    pub fn new() -> CatalogBuilder {
        CatalogBuilder {
            catalog: Catalog {
                text: String::new(),
                entries: Vec::new(),
                scores: Vec::new(),
                tags: Vec::new(),
            },
        }
    }

    /// Appends one entry.
    pub fn push(
        &mut self,
        id: &str,
        score: f32,
        category: Option<&str>,
        tags: &[impl AsRef<str>],
    ) -> Result<&mut Self, CatalogError> {
        let c = &mut self.catalog;
        let first_tag = u32::try_from(c.tags.len() / 2).map_err(|_| CatalogError::TooLarge)?;
        let tag_count = u32::try_from(tags.len()).map_err(|_| CatalogError::TooLarge)?;
        let (id_start, id_len) = append(&mut c.text, id)?;
        let (cat_start, cat_len) = match category {
            Some(s) => append(&mut c.text, s)?,
            None => (0, NO_CATEGORY),
        };
        for t in tags {
            let (start, len) = append(&mut c.text, t.as_ref())?;
            c.tags.extend([start, len]);
        }
        c.entries
            .extend([id_start, id_len, cat_start, cat_len, first_tag, tag_count]);
        c.scores.push(score);
        Ok(self)
    }

    /// The catalog.
    pub fn build(self) -> Catalog {
        self.catalog
    }
}

/// Appends `s` to `text`, returning its start and length.
fn append(text: &mut String, s: &str) -> Result<(u32, u32), CatalogError> {
    let start = u32::try_from(text.len()).map_err(|_| CatalogError::TooLarge)?;
    let len = u32::try_from(s.len()).map_err(|_| CatalogError::TooLarge)?;
    // The end must be addressable too, and a length of u32::MAX means "no category".
    match start.checked_add(len) {
        Some(end) if end < u32::MAX => {}
        _ => return Err(CatalogError::TooLarge),
    }
    text.push_str(s);
    Ok((start, len))
}

/// The text at `start` of `len` bytes; empty when out of range.
fn text(catalog: &Catalog, start: u32, len: u32) -> &str {
    let start = start as usize;
    catalog
        .text
        .get(start..start.saturating_add(len as usize))
        .unwrap_or("")
}

/// The catalog's entries as candidates, in order (a malformed entry reads as empty).
pub fn candidates(catalog: &Catalog) -> impl Iterator<Item = Candidate> + '_ {
    catalog
        .entries
        .chunks_exact(ENTRY_WORDS)
        .enumerate()
        .map(move |(i, e)| {
            let first = e[4] as usize * 2;
            let tags = catalog
                .tags
                .get(first..first.saturating_add(e[5] as usize * 2))
                .unwrap_or(&[]);
            Candidate {
                id: text(catalog, e[0], e[1]).to_string(),
                score: catalog.scores.get(i).copied().unwrap_or(0.0),
                category: (e[3] != NO_CATEGORY).then(|| text(catalog, e[2], e[3]).to_string()),
                tags: tags
                    .chunks_exact(2)
                    .map(|t| text(catalog, t[0], t[1]).to_string())
                    .collect(),
            }
        })
}

/// Builds a catalog from candidates.
pub fn from_candidates<C: std::borrow::Borrow<Candidate>>(
    list: impl IntoIterator<Item = C>,
) -> Result<Catalog, CatalogError> {
    let mut b = CatalogBuilder::new();
    for c in list {
        let c = c.borrow();
        b.push(&c.id, c.score, c.category.as_deref(), &c.tags)?;
    }
    Ok(b.build())
}

/// Serde for a shared catalog as a JSON list of candidates
/// (`#[serde(with = "catalog::as_candidates")]`).
pub mod as_candidates {
    use super::*;

    /// Writes the catalog as a list of candidates.
    pub fn serialize<S: Serializer>(c: &Arc<Catalog>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(candidates(c))
    }

    /// Reads a list of candidates into a catalog.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Catalog>, D::Error> {
        let list = Vec::<Candidate>::deserialize(d)?;
        from_candidates(&list)
            .map(Arc::new)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_round_trips_through_its_candidate_json() {
        let json = serde_json::json!([
            {"id": "sku-1", "score": 0.5, "category": "áo dài", "tags": ["tier:gold", "sale"]},
            {"id": "sku-2", "score": 0.0, "category": null, "tags": []},
            {"id": "sku-3", "score": 1.5, "category": "", "tags": ["new"]},
        ]);
        #[derive(Serialize, Deserialize)]
        struct W(#[serde(with = "as_candidates")] Arc<Catalog>);
        let w: W = serde_json::from_value(json.clone()).unwrap();
        let c = &w.0;
        assert_eq!(c.entries.len(), 3 * ENTRY_WORDS);
        assert_eq!(c.scores, [0.5, 0.0, 1.5]);
        assert_eq!(c.tags.len(), 3 * 2);
        assert_eq!(text(c, c.entries[0], c.entries[1]), "sku-1");
        assert_eq!(text(c, c.entries[2], c.entries[3]), "áo dài");
        assert_eq!(c.entries[6 + 3], NO_CATEGORY);
        assert_eq!(
            c.entries[12 + 3],
            0,
            "an empty category is not a missing one"
        );
        assert_eq!((c.entries[12 + 4], c.entries[12 + 5]), (2, 1));
        assert_eq!(text(c, c.tags[4], c.tags[5]), "new");
        assert_eq!(serde_json::to_value(&w).unwrap(), json);
    }

    #[test]
    fn out_of_range_numbers_read_as_empty_strings() {
        let mut c = CatalogBuilder::new();
        c.push("a", 1.0, None, &["t"]).unwrap();
        let mut c = c.build();
        c.entries[0] = 1;
        c.entries[1] = 99;
        c.entries[5] = 7;
        let got: Vec<Candidate> = candidates(&c).collect();
        assert_eq!(got[0].id, "");
        assert!(got[0].tags.is_empty());
    }
}
