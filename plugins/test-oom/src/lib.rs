//! Test plugin (journey-rule): `step` allocates and touches 1 MiB chunks until memory
//! runs out.

use std::hint::black_box;

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct Oom;

const CHUNK: usize = 1 << 20;

impl Guest for Oom {
    fn describe() -> Manifest {
        Manifest {
            name: "test-oom".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            // Write every byte so each chunk is really resident, then keep it alive.
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.resize(CHUNK, 0xa5u8);
            chunk[kept.len() % CHUNK] = kept.len() as u8;
            kept.push(black_box(chunk));
        }
    }
}

weft_guest::export_journey_rule!(Oom);
