//! Test plugin (chatbot-flow): misbehaves on request, so the host's limits on flow turns
//! can be tested from both sides. Started by the keyword `unruly`; then the visitor types:
//!
//! - `slots N`: keep N bytes of slots;
//! - `actions N`: answer with N reply actions;
//! - `spin`: never return (the deadline stops it);
//! - `panic`: panic;
//! - anything else: echo it.

use weft_guest::flow::{
    BotAction, ExpectedInput, FlowManifest, Guest, InputKind, PluginError, Session, TurnResult,
    TurnTrigger, UserInput,
};
use weft_guest::types::{ChannelKind, Content};

struct Unruly;

fn reply(t: String) -> BotAction {
    BotAction::Reply(vec![Content::Text(t)])
}

fn waiting(actions: Vec<BotAction>, slots: String) -> TurnResult {
    TurnResult {
        actions,
        expect: Some(ExpectedInput {
            kind: InputKind::FreeText,
            choices: vec![],
            validation: None,
            timeout_ms: None,
            reprompt: None,
        }),
        slots,
    }
}

impl Guest for Unruly {
    fn describe() -> FlowManifest {
        FlowManifest {
            name: "test-unruly-flow".into(),
            start_keywords: vec!["unruly".into()],
            start_events: vec![],
            channels: vec![ChannelKind::WebChat],
            session_timeout_ms: 0,
        }
    }

    fn turn(s: Session, t: TurnTrigger) -> Result<TurnResult, PluginError> {
        let text = match t {
            TurnTrigger::Input(UserInput::Text(t)) => t,
            _ => return Ok(waiting(vec![reply("ready".into())], s.slots)),
        };
        let n = |prefix: &str| -> Option<usize> { text.strip_prefix(prefix)?.trim().parse().ok() };
        if let Some(size) = n("slots ") {
            // A JSON object whose one string makes the whole `size` bytes long.
            let pad = "x".repeat(size.saturating_sub(8));
            return Ok(waiting(
                vec![reply(format!("kept {size}"))],
                format!("{{\"p\":\"{pad}\"}}"),
            ));
        }
        if let Some(count) = n("actions ") {
            let actions = (0..count).map(|i| reply(format!("#{i}"))).collect();
            return Ok(waiting(actions, s.slots));
        }
        match text.as_str() {
            "spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "panic" => panic!("test-unruly-flow: deliberate panic"),
            _ => Ok(waiting(vec![reply(format!("echo {text}"))], s.slots)),
        }
    }
}

weft_guest::export_chatbot_flow!(Unruly);
