//! Example personalizer: an A/B split of a hero banner.
//!
//! The host assigns each visitor to one variant of a placement's experiment (sticky: a
//! hash of the visitor and the experiment id) and passes the assignment in
//! `placement.experiment`. This plugin shows that variant's content from
//! `constraints.variants` and echoes the experiment id, so the host can record
//! `Experiment Viewed` and attribute conversions. Without an experiment it shows `control`.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all. A hero banner
//! has no items, so the candidate catalog is ignored. Allocation is a pointer bump
//! ([`weft_guest::bump_allocator!`]).

use weft_guest::json::{self, Map, Value};
use weft_guest::personalize::{Catalog, Decision, Guest, Placement, PluginError, Request};

weft_guest::bump_allocator!();

/// Hero content changes rarely and the assignment is sticky per visitor: one minute.
const TTL_MS: u32 = 60_000;
/// The variant shown when the placement runs no experiment.
const CONTROL: &str = "control";

struct AbHero;

impl Guest for AbHero {
    fn decide(req: Request, _catalog: Catalog) -> Result<Vec<Decision>, PluginError> {
        req.placements.iter().map(decide_one).collect()
    }
}

/// `constraints.variants`: an object mapping variant id → content object. Missing means no
/// variant has content; anything malformed fails the request, whichever variant is shown.
fn variants<'a>(
    placement: &str,
    constraints: &'a Map<String, Value>,
) -> Result<Option<&'a Map<String, Value>>, PluginError> {
    let variants = match constraints.get("variants") {
        None => return Ok(None),
        Some(Value::Object(variants)) => variants,
        Some(_) => {
            return Err(PluginError::invalid_input(format!(
                "placement {placement}: constraints.variants is not an object"
            )))
        }
    };
    if let Some((id, _)) = variants.iter().find(|(_, content)| !content.is_object()) {
        return Err(PluginError::invalid_input(format!(
            "placement {placement}: constraints.variants.{id} is not an object"
        )));
    }
    Ok(Some(variants))
}

fn decide_one(placement: &Placement) -> Result<Decision, PluginError> {
    let constraints = json::object_or_empty(&placement.constraints);
    let variants = variants(&placement.id, &constraints)?;
    let (variant_id, experiment_id, mut reason) = match &placement.experiment {
        Some(assignment) => (
            assignment.variant_id.as_str(),
            Some(assignment.experiment_id.clone()),
            format!(
                "experiment={} variant={}",
                assignment.experiment_id, assignment.variant_id
            ),
        ),
        None => (CONTROL, None, "no experiment".to_owned()),
    };
    let content = match variants.and_then(|v| v.get(variant_id)) {
        Some(content) => content.to_string(),
        None => {
            reason.push_str("; no content in constraints.variants");
            "{}".to_owned()
        }
    };
    Ok(Decision {
        placement_id: placement.id.clone(),
        variant_id: variant_id.to_owned(),
        experiment_id,
        content,
        items: Vec::new(),
        ttl_ms: TTL_MS,
        reason: Some(reason),
    })
}

weft_guest::export_personalization!(AbHero);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::personalize::{ExperimentAssignment, PageContext, PlacementKind};

    const VARIANTS: &str = r#"{"variants":{
        "control":{"headline":"Bộ sưu tập mới","image":"https://cdn.example.vn/hero-a.jpg"},
        "sale":{"headline":"Giảm 20% hôm nay","image":"https://cdn.example.vn/hero-b.jpg"}
    }}"#;

    fn placement(constraints: &str, assignment: Option<(&str, &str)>) -> Placement {
        Placement {
            id: "hero".into(),
            kind: PlacementKind::Banner,
            max_items: 0,
            constraints: constraints.into(),
            experiment: assignment.map(|(experiment, variant)| ExperimentAssignment {
                experiment_id: experiment.into(),
                variant_id: variant.into(),
            }),
        }
    }

    fn request(placements: Vec<Placement>) -> Request {
        Request {
            request_id: "r1".into(),
            profile: None,
            page: PageContext {
                url: None,
                path: Some("/".into()),
                referrer: None,
                title: None,
                page_type: Some("home".into()),
                locale: None,
                device_type: None,
                campaign: "{}".into(),
                attributes: "{}".into(),
            },
            placements,
            recent_events: vec![],
            now: 0,
        }
    }

    fn candidates() -> Catalog {
        let mut c = Catalog::new();
        c.push("sku-1", 0.9, Some("ao-dai"), &[]);
        c
    }

    fn decide(req: Request) -> Result<Vec<Decision>, PluginError> {
        AbHero::decide(req, candidates())
    }

    fn decide_single(p: Placement) -> Decision {
        decide(request(vec![p])).unwrap().remove(0)
    }

    fn content(d: &Decision) -> Value {
        json::parse(&d.content).unwrap()
    }

    #[test]
    fn assigned_variant_shows_its_content_and_echoes_the_experiment() {
        let d = decide_single(placement(VARIANTS, Some(("hero-q4", "sale"))));
        assert_eq!(d.placement_id, "hero");
        assert_eq!(d.variant_id, "sale");
        assert_eq!(d.experiment_id.as_deref(), Some("hero-q4"));
        assert_eq!(content(&d)["headline"], "Giảm 20% hôm nay");
        assert_eq!(d.reason.as_deref(), Some("experiment=hero-q4 variant=sale"));
        assert!(d.items.is_empty(), "a hero banner has no items");
        assert_eq!(d.ttl_ms, TTL_MS);
    }

    #[test]
    fn assigned_variant_without_content_gets_empty_object_and_reason_says_so() {
        let d = decide_single(placement(VARIANTS, Some(("hero-q4", "teal"))));
        assert_eq!(d.variant_id, "teal");
        assert_eq!(d.experiment_id.as_deref(), Some("hero-q4"));
        assert_eq!(d.content, "{}");
        assert_eq!(
            d.reason.as_deref(),
            Some("experiment=hero-q4 variant=teal; no content in constraints.variants")
        );
    }

    #[test]
    fn no_experiment_shows_control_without_experiment_id() {
        let d = decide_single(placement(VARIANTS, None));
        assert_eq!(d.variant_id, "control");
        assert_eq!(d.experiment_id, None);
        assert_eq!(content(&d)["headline"], "Bộ sưu tập mới");
        assert_eq!(d.reason.as_deref(), Some("no experiment"));
        assert_eq!(d.ttl_ms, TTL_MS);
    }

    #[test]
    fn no_experiment_and_no_variants_gives_control_with_empty_content() {
        for constraints in ["{}", "", r#"{"variants":{"sale":{}}}"#] {
            let d = decide_single(placement(constraints, None));
            assert_eq!(d.variant_id, "control", "{constraints}");
            assert_eq!(d.content, "{}", "{constraints}");
            assert_eq!(
                d.reason.as_deref(),
                Some("no experiment; no content in constraints.variants"),
                "{constraints}"
            );
        }
    }

    #[test]
    fn each_placement_follows_its_own_assignment() {
        let out = decide(request(vec![
            placement(VARIANTS, Some(("hero-q4", "control"))),
            placement(VARIANTS, None),
        ]))
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].experiment_id.as_deref(), Some("hero-q4"));
        assert_eq!(out[1].experiment_id, None);
    }

    #[test]
    fn malformed_variants_are_invalid_input_naming_the_problem() {
        for (constraints, problem) in [
            (
                r#"{"variants":["control"]}"#,
                "placement hero: constraints.variants is not an object",
            ),
            (
                r#"{"variants":{"control":{},"sale":"Giảm 20%"}}"#,
                "placement hero: constraints.variants.sale is not an object",
            ),
        ] {
            let err = decide(request(vec![placement(constraints, None)])).unwrap_err();
            assert_eq!(
                err,
                PluginError::InvalidInput(problem.into()),
                "{constraints}"
            );
        }
    }
}
