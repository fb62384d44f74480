//! Test plugin (personalization): misbehaves as the page asks, through
//! `page.attributes.mode`:
//! - `spin`: loops forever (the deadline stops it);
//! - `sleep`: sleeps ten seconds in a WASI poll (the deadline stops that too);
//! - `panic`: panics;
//! - `oom`: grows memory without bound (the memory cap stops it);
//! - `error`: returns a typed `invalid-input` error;
//! - `bad-json`: returns content that is not JSON;
//! - `skip`: returns no decisions at all;
//! - anything else: one well-formed decision per placement (variant `ok`).

use std::hint::black_box;

use weft_guest::json::Value;
use weft_guest::personalize::{Catalog, Decision, Guest, PluginError, Request};

struct Unruly;

impl Guest for Unruly {
    fn decide(req: Request, _catalog: Catalog) -> Result<Vec<Decision>, PluginError> {
        let attributes: Value = weft_guest::json::parse(&req.page.attributes)?;
        let mode = attributes
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_string();
        match mode.as_str() {
            "spin" => {
                // `black_box` keeps the optimiser from proving the loop has no effect.
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                Err(PluginError::invalid_input("woke up after ten seconds"))
            }
            "panic" => panic!("unruly personalizer panics on purpose"),
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // 1 MiB at a time, touched so the pages are really committed.
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "error" => Err(PluginError::invalid_input("the page asked for an error")),
            "skip" => Ok(Vec::new()),
            _ => {
                let content = if mode == "bad-json" {
                    "{not json".to_string()
                } else {
                    format!("{{\"mode\":\"{mode}\"}}")
                };
                Ok(req
                    .placements
                    .iter()
                    .map(|p| Decision {
                        placement_id: p.id.clone(),
                        variant_id: "ok".into(),
                        experiment_id: None,
                        content: content.clone(),
                        items: vec![],
                        ttl_ms: 1_000,
                        reason: None,
                    })
                    .collect())
            }
        }
    }
}

weft_guest::export_personalization!(Unruly);
