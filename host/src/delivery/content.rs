//! Degrading channel-neutral content to what one channel can show, before the adapter sees
//! it: unsupported kinds become text (a card becomes its title, subtitle and links; choices
//! a numbered list), text is cut to the channel's length, and templates go only to channels
//! that take them: ZNS gets only its template; WhatsApp gets the template next to the
//! free-form content (its adapter picks one by the care window); others never see one.

use crate::runtime::bindings::exports::adapter::ChannelCapabilities;
use crate::runtime::bindings::types::{ButtonAction, Card, ChannelKind, Content};

/// The kind name of a content item, as `channel-capabilities.content-kinds` lists them.
pub fn kind(c: &Content) -> &'static str {
    match c {
        Content::Text(_) => "text",
        Content::Image(_) => "image",
        Content::Video(_) => "video",
        Content::Audio(_) => "audio",
        Content::File(_) => "file",
        Content::Location(_) => "location",
        Content::Card(_) => "card",
        Content::Carousel(_) => "carousel",
        Content::Choices(_) => "choices",
        Content::Template(_) => "template",
        Content::Raw(_) => "raw",
    }
}

/// `content` as `caps` can show it on `channel`. Empty when nothing is left to send.
pub fn degrade(
    content: &[Content],
    caps: &ChannelCapabilities,
    channel: ChannelKind,
) -> Vec<Content> {
    if channel == ChannelKind::ZaloZns {
        return content
            .iter()
            .filter(|c| matches!(c, Content::Template(_)))
            .cloned()
            .collect();
    }
    let templates = channel == ChannelKind::Whatsapp;
    let supports =
        |k: &str| (k != "template" || templates) && caps.content_kinds.iter().any(|s| s == k);
    let max = usize::try_from(caps.max_text_len)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut out = Vec::new();
    for c in content {
        let k = kind(c);
        let item = if supports(k) {
            Some(c.clone())
        } else {
            match c {
                // A template is an alternative for template-only channels, not text.
                Content::Template(_) | Content::Raw(_) => None,
                Content::Image(m) | Content::Video(m) | Content::Audio(m) | Content::File(m) => {
                    Some(Content::Text(match &m.caption {
                        Some(cap) => format!("{cap}\n{}", m.url),
                        None => m.url.clone(),
                    }))
                }
                Content::Location(g) => Some(Content::Text(format!(
                    "{}https://maps.google.com/?q={},{}",
                    g.address
                        .as_deref()
                        .map(|a| format!("{a}\n"))
                        .unwrap_or_default(),
                    g.latitude,
                    g.longitude
                ))),
                Content::Card(card) => Some(Content::Text(card_text(card))),
                Content::Carousel(cards) => Some(Content::Text(
                    cards.iter().map(card_text).collect::<Vec<_>>().join("\n\n"),
                )),
                Content::Choices(ch) => {
                    let mut t = ch.prompt.clone();
                    for (i, o) in ch.options.iter().enumerate() {
                        t.push_str(&format!("\n{}. {}", i + 1, o.label));
                    }
                    Some(Content::Text(t))
                }
                Content::Text(t) => Some(Content::Text(t.clone())),
            }
        };
        // Text must fit even where the channel takes no text at all (a template channel).
        match item {
            Some(Content::Text(t)) if supports("text") => out.push(Content::Text(cut(&t, max))),
            Some(Content::Text(_)) => {}
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A card as plain text: title, subtitle, image and each button's label and target.
fn card_text(card: &Card) -> String {
    let mut t = card.title.clone();
    if let Some(s) = &card.subtitle {
        t.push('\n');
        t.push_str(s);
    }
    if let Some(img) = &card.image_url {
        t.push('\n');
        t.push_str(img);
    }
    for b in &card.buttons {
        let target = match &b.action {
            ButtonAction::Url(u) => format!(": {u}"),
            ButtonAction::Phone(p) => format!(": {p}"),
            ButtonAction::Postback(_) | ButtonAction::Say(_) => String::new(),
        };
        t.push_str(&format!("\n{}{target}", b.label));
    }
    t
}

/// At most `max` characters of `text` (never splitting a character).
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::exports::adapter::StatusGranularity;
    use crate::runtime::bindings::types::{
        Button, ChannelKind, Choice, Choices, Media, TemplateRef,
    };

    fn caps(kinds: &[&str], max: u32) -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Sms,
            max_text_len: max,
            max_buttons: 0,
            max_button_label: 0,
            content_kinds: kinds.iter().map(|s| s.to_string()).collect(),
            window: None,
            status: StatusGranularity::PerMessage,
            max_send_per_sec: None,
            extra_channels: vec![],
        }
    }

    fn card() -> Content {
        Content::Card(Card {
            title: "Áo dài".into(),
            subtitle: Some("850.000đ".into()),
            image_url: None,
            buttons: vec![Button {
                label: "Mua".into(),
                action: ButtonAction::Url("https://shop.vn/c".into()),
            }],
        })
    }

    fn template() -> Content {
        Content::Template(TemplateRef {
            id: "t1".into(),
            language: None,
            params: "{}".into(),
        })
    }

    #[test]
    fn text_channel_gets_cards_choices_and_media_as_text_without_templates() {
        let out = degrade(
            &[
                card(),
                Content::Choices(Choices {
                    prompt: "Chọn".into(),
                    options: vec![
                        Choice {
                            label: "A".into(),
                            value: "a".into(),
                        },
                        Choice {
                            label: "B".into(),
                            value: "b".into(),
                        },
                    ],
                }),
                Content::Image(Media {
                    url: "https://i/1.png".into(),
                    mime: None,
                    caption: None,
                    filename: None,
                }),
                template(),
            ],
            &caps(&["text"], 1600),
            ChannelKind::Sms,
        );
        let texts: Vec<String> = out
            .iter()
            .map(|c| match c {
                Content::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                "Áo dài\n850.000đ\nMua: https://shop.vn/c",
                "Chọn\n1. A\n2. B",
                "https://i/1.png"
            ]
        );
    }

    #[test]
    fn template_channel_keeps_only_templates_and_text_is_cut_by_characters() {
        let both = [Content::Text("xin chào".into()), template()];
        let zns = degrade(
            &both,
            &caps(&["text", "template"], 100),
            ChannelKind::ZaloZns,
        );
        assert_eq!(zns.len(), 1);
        assert!(matches!(zns[0], Content::Template(_)));
        let oa = degrade(
            &both,
            &caps(&["text", "template"], 100),
            ChannelKind::ZaloOa,
        );
        assert_eq!(oa.len(), 1, "no template on a session channel: {oa:?}");
        assert!(matches!(oa[0], Content::Text(_)));
        let wa = degrade(
            &both,
            &caps(&["text", "template"], 100),
            ChannelKind::Whatsapp,
        );
        assert_eq!(wa.len(), 2, "WhatsApp's adapter picks by the window");
        let out = degrade(
            &[Content::Text("xin chào".into())],
            &caps(&["text"], 6),
            ChannelKind::Sms,
        );
        assert!(matches!(&out[0], Content::Text(t) if t == "xin ch"));
        assert!(degrade(&[template()], &caps(&["text"], 10), ChannelKind::Sms).is_empty());
    }
}
