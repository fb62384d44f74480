//! Test plugin (journey-rule): opens a TCP connection with `std::net`, so the component
//! imports `wasi:sockets/*`, which no Weft world grants. The host must refuse the upload.

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct ForbiddenImport;

impl Guest for ForbiddenImport {
    fn describe() -> Manifest {
        Manifest {
            name: "test-forbidden-import".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        // Loopback discard port: never meant to run, only to pull in the import.
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Ok(vec![Command::Exit("connected".into())]),
            Err(e) => Err(PluginError::retryable(format!("connect failed: {e}"))),
        }
    }
}

weft_guest::export_journey_rule!(ForbiddenImport);
