//! Click tracking for every channel: when the server has a `public_url`, links in a message
//! are rewritten to `<public_url>/v1/c/<tenant>/<token>` before the adapter sees them. The
//! token names the send intent and the link's position, signed with a key derived from the
//! server's secret, so a visitor cannot forge clicks or walk other tenants' links. A click
//! records `clicked` (with the original URL) in the delivery log and redirects there.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::runtime::bindings::types::{ButtonAction, Content};

/// Links tracked per message: a message with more is unusual; the rest stay as they are.
pub const MAX_LINKS: usize = 20;

/// Signs and checks click links.
#[derive(Clone)]
pub struct LinkSigner {
    base: String,
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// A signer for links under `public_url`.
    pub fn new(public_url: &str, key: [u8; 32]) -> LinkSigner {
        LinkSigner {
            base: public_url.trim_end_matches('/').to_string(),
            key,
        }
    }

    fn mac(&self, tenant: &str, intent: &str, n: usize) -> String {
        let mut m = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(format!("{tenant}\n{intent}\n{n}").as_bytes());
        // 16 bytes: forging one link takes 2^128 tries.
        m.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The tracked URL of link `n` of `intent`.
    pub fn url(&self, tenant: &str, intent: &str, n: usize) -> String {
        let hex: String = intent.bytes().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}/v1/c/{tenant}/{hex}.{n}.{}",
            self.base,
            self.mac(tenant, intent, n)
        )
    }

    /// The (intent, link number) a token names, if its signature holds for `tenant`.
    pub fn check(&self, tenant: &str, token: &str) -> Option<(String, usize)> {
        let mut parts = token.splitn(3, '.');
        let (hex, n, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let intent = String::from_utf8(bytes?).ok()?;
        let n: usize = n.parse().ok()?;
        use subtle::ConstantTimeEq;
        let ok: bool = self
            .mac(tenant, &intent, n)
            .as_bytes()
            .ct_eq(mac.as_bytes())
            .into();
        ok.then_some((intent, n))
    }
}

impl super::Deliveries {
    /// A click on a tracked link of `tenant`: records `clicked` and returns the URL to
    /// redirect to; `None` for a token that does not verify or a link that is gone.
    pub async fn click(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<String>, crate::store::StoreError> {
        let Some((intent, n)) = self.links.as_ref().and_then(|s| s.check(tenant, token)) else {
            return Ok(None);
        };
        let me = self
            .me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| {
                crate::store::StoreError::Backend("the delivery service has stopped".into())
            })?;
        let tenant_owned = tenant.to_string();
        let (url, events) = tokio::task::spawn_blocking(move || {
            let b = me.db.backend().as_ref();
            let sp = crate::store::Space::tenant(&tenant_owned);
            let lock = me.log_lock(&tenant_owned);
            let _held = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(mut rec) = super::log::get(b, &sp, &intent)? else {
                return Ok((None, false));
            };
            let Some(url) = rec.delivery.links.get(n).cloned() else {
                return Ok((None, false));
            };
            let mut out = super::Attempt {
                ops: Vec::new(),
                events: false,
            };
            let now = me.clock.now_ms();
            me.apply_status(
                b,
                &mut rec,
                crate::messaging::outbox::OutboxStatus::Clicked,
                now,
                Some(url.clone()),
                &mut out,
            )?;
            out.ops.push(super::log::put_op(&rec)?);
            b.apply_batch(&sp, &out.ops)?;
            Ok::<_, crate::store::StoreError>((Some(url), out.events))
        })
        .await
        .map_err(|e| crate::store::StoreError::Backend(Box::new(e)))??;
        if events {
            self.ingest.processor().wake(tenant);
        }
        Ok(url)
    }
}

/// Rewrites the links in `content` (URLs in text, URL buttons) to tracked ones; returns the
/// original URLs in link order.
pub fn rewrite(
    content: &mut [Content],
    signer: &LinkSigner,
    tenant: &str,
    intent: &str,
) -> Vec<String> {
    let mut links = Vec::new();
    let track = |url: &str, links: &mut Vec<String>| -> Option<String> {
        if links.len() >= MAX_LINKS {
            return None;
        }
        links.push(url.to_string());
        Some(signer.url(tenant, intent, links.len() - 1))
    };
    for c in content.iter_mut() {
        match c {
            Content::Text(t) => *t = rewrite_text(t, &mut |u| track(u, &mut links)),
            Content::Card(card) => {
                for b in &mut card.buttons {
                    if let ButtonAction::Url(u) = &mut b.action {
                        if let Some(t) = track(u, &mut links) {
                            *u = t;
                        }
                    }
                }
            }
            Content::Carousel(cards) => {
                for card in cards {
                    for b in &mut card.buttons {
                        if let ButtonAction::Url(u) = &mut b.action {
                            if let Some(t) = track(u, &mut links) {
                                *u = t;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    links
}

/// `text` with every `http(s)://…` URL (up to whitespace, trailing punctuation excluded)
/// replaced by what `track` returns for it.
fn rewrite_text(text: &str, track: &mut dyn FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', '!', '?', ')', ';', ':']);
        match track(url) {
            Some(t) => out.push_str(&t),
            None => out.push_str(url),
        }
        rest = &tail[url.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::types::{Button, Card};

    #[test]
    fn links_in_text_and_buttons_are_tracked_and_tokens_verify() {
        let s = LinkSigner::new("https://weft.example.vn/", [3; 32]);
        let mut content = vec![
            Content::Text("Xem giỏ: https://shop.vn/cart?c=1. Hoặc http://shop.vn/sale!".into()),
            Content::Card(Card {
                title: "Áo".into(),
                subtitle: None,
                image_url: None,
                buttons: vec![Button {
                    label: "Mua".into(),
                    action: ButtonAction::Url("https://shop.vn/p/7".into()),
                }],
            }),
        ];
        let links = rewrite(&mut content, &s, "t_1", "ji_1:remind:reminder");
        assert_eq!(
            links,
            [
                "https://shop.vn/cart?c=1",
                "http://shop.vn/sale",
                "https://shop.vn/p/7"
            ]
        );
        let Content::Text(t) = &content[0] else {
            panic!()
        };
        assert!(
            t.starts_with("Xem giỏ: https://weft.example.vn/v1/c/t_1/"),
            "{t}"
        );
        assert!(
            t.contains(". Hoặc https://weft.example.vn/v1/c/t_1/") && t.ends_with('!'),
            "{t}"
        );
        let Content::Card(card) = &content[1] else {
            panic!()
        };
        let ButtonAction::Url(u) = &card.buttons[0].action else {
            panic!()
        };
        let token = u.rsplit('/').next().unwrap();
        assert_eq!(
            s.check("t_1", token),
            Some(("ji_1:remind:reminder".into(), 2))
        );
        assert_eq!(s.check("t_2", token), None, "another tenant's link");
        let last = if token.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &token[..token.len() - 1]);
        assert_eq!(s.check("t_1", &forged), None);
        assert_eq!(s.check("t_1", "zz.1.00"), None);
    }
}
