//! CSAT (1–5) and NPS (0–10) surveys: asked in the conversation (a rating scale in the
//! widget, quick replies on other channels), answered there, stored under `srv/` for the
//! reports, and recorded as a `Survey Answered` event on the profile.
//!
//! Formulas: CSAT = share of answers that are 4 or 5; NPS = % promoters (9–10) −
//! % detractors (0–6); response rate = answers / surveys asked. A period counts the
//! surveys *asked* in it.

use serde::Serialize;
use serde_json::json;

use super::store::{self, PendingSurvey, Sender, SurveyKind, SurveyRecord};
use super::{as_map, ChatError, Txn};
use crate::runtime::bindings::types::{Choice, Choices, Content};
use crate::store::{Backend, BatchOp, Space, StoreError};

/// Surveys read per report: a year of a busy tenant's chats; beyond it the report says it
/// was truncated.
pub const MAX_SURVEYS_PER_REPORT: usize = 200_000;

/// The quick replies of a survey question.
fn choices(kind: SurveyKind) -> Vec<Choice> {
    kind.range()
        .map(|n| Choice {
            label: n.to_string(),
            value: format!("{}:{n}", kind.as_str()),
        })
        .collect()
}

/// Asks `kind` in the conversation.
pub(super) fn ask(txn: &mut Txn, kind: SurveyKind) -> Result<(), ChatError> {
    let vi = super::vietnamese(&txn.conv);
    let prompt = match (kind, vi) {
        (SurveyKind::Csat, true) => "Bạn hài lòng với cuộc trò chuyện này ở mức nào? (1 = rất không hài lòng, 5 = rất hài lòng)",
        (SurveyKind::Csat, false) => "How satisfied are you with this conversation? (1 = very unsatisfied, 5 = very satisfied)",
        (SurveyKind::Nps, true) => "Bạn có sẵn lòng giới thiệu chúng tôi cho bạn bè không? (0 = không bao giờ, 10 = chắc chắn)",
        (SurveyKind::Nps, false) => "How likely are you to recommend us to a friend? (0 = not at all, 10 = extremely likely)",
    };
    // The widget shows a rating scale (the `expect` frame); other channels get quick replies.
    let content = if txn.is_web() {
        vec![Content::Text(prompt.into())]
    } else {
        vec![Content::Choices(Choices {
            prompt: prompt.into(),
            options: choices(kind),
        })]
    };
    txn.message(Sender::System, None, content, None)?;
    let asked_at = txn.now;
    txn.conv.survey = Some(PendingSurvey { kind, asked_at });
    let rec = SurveyRecord {
        asked_at,
        conversation_id: txn.conv.id.clone(),
        channel: txn.conv.channel.clone(),
        score: None,
        answered_at: None,
    };
    txn.ops.push(BatchOp::put_json(
        store::survey_key(kind, asked_at, &txn.conv.id),
        &rec,
    )?);
    txn.frames
        .push(json!({"type": "expect", "kind": "rating", "scale": kind.as_str()}));
    Ok(())
}

/// Records an answer: the survey record, a thank-you, the event.
pub(super) fn answer(txn: &mut Txn, s: PendingSurvey, score: u8) -> Result<(), ChatError> {
    txn.conv.survey = None;
    let rec = SurveyRecord {
        asked_at: s.asked_at,
        conversation_id: txn.conv.id.clone(),
        channel: txn.conv.channel.clone(),
        score: Some(score),
        answered_at: Some(txn.now),
    };
    txn.ops.push(BatchOp::put_json(
        store::survey_key(s.kind, s.asked_at, &txn.conv.id),
        &rec,
    )?);
    let thanks = if super::vietnamese(&txn.conv) {
        "Cảm ơn bạn đã đánh giá!"
    } else {
        "Thank you for your feedback!"
    };
    txn.message(
        Sender::System,
        None,
        vec![Content::Text(thanks.into())],
        None,
    )?;
    let agent = txn.conv.agent.clone();
    txn.track(
        "Survey Answered",
        as_map(json!({
            "survey": s.kind.as_str(),
            "score": score,
            "conversation_id": txn.conv.id,
            "channel": txn.conv.channel,
            "agent": agent,
        })),
    );
    Ok(())
}

/// A CSAT or NPS report over surveys asked in `[from, to)`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `csat` or `nps`.
    pub survey: &'static str,
    /// Period start, Unix ms (inclusive).
    pub from: i64,
    /// Period end, Unix ms (exclusive).
    pub to: i64,
    /// Surveys asked.
    pub asked: u64,
    /// Surveys answered.
    pub answered: u64,
    /// answered / asked, 0 to 1 (0 when none were asked).
    pub response_rate: f64,
    /// Answers per score.
    pub distribution: Vec<u64>,
    /// CSAT: % of answers 4–5. NPS: % promoters − % detractors. None without answers.
    pub score: Option<f64>,
    /// NPS only: promoters (9–10), passives (7–8), detractors (0–6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<serde_json::Value>,
    /// Whether more surveys existed than one report reads.
    pub truncated: bool,
}

/// Computes the report from the stored surveys.
pub fn report(
    b: &dyn Backend,
    sp: &Space,
    kind: SurveyKind,
    from: i64,
    to: i64,
) -> Result<Report, StoreError> {
    let prefix = format!("srv/{}/", kind.as_str());
    let start = format!("{prefix}{:016x}", from.max(0));
    let end = format!("{prefix}{:016x}", to.max(0));
    let mut asked = 0u64;
    let mut dist = [0u64; 11];
    let mut truncated = false;
    // Newest first from `to`, stopping at `from`.
    let entries = b.scan_prefix_rev_before(
        sp,
        prefix.as_bytes(),
        end.as_bytes(),
        MAX_SURVEYS_PER_REPORT + 1,
    )?;
    for (k, v) in entries {
        if k.as_slice() < start.as_bytes() {
            break;
        }
        if asked as usize == MAX_SURVEYS_PER_REPORT {
            truncated = true;
            break;
        }
        asked += 1;
        if let Ok(r) = serde_json::from_slice::<SurveyRecord>(&v) {
            if let Some(s) = r.score {
                dist[usize::from(s.min(10))] += 1;
            }
        }
    }
    let range = kind.range();
    let distribution: Vec<u64> = range.clone().map(|s| dist[usize::from(s)]).collect();
    let answered: u64 = distribution.iter().sum();
    let pct = |n: u64| 100.0 * n as f64 / answered as f64;
    let (score, segments) = match kind {
        SurveyKind::Csat => ((answered > 0).then(|| round1(pct(dist[4] + dist[5]))), None),
        SurveyKind::Nps => {
            let promoters = dist[9] + dist[10];
            let passives = dist[7] + dist[8];
            let detractors: u64 = dist[..=6].iter().sum();
            (
                (answered > 0).then(|| round1(pct(promoters) - pct(detractors))),
                Some(
                    json!({"promoters": promoters, "passives": passives, "detractors": detractors}),
                ),
            )
        }
    };
    Ok(Report {
        survey: kind.as_str(),
        from,
        to,
        asked,
        answered,
        response_rate: if asked == 0 {
            0.0
        } else {
            (answered as f64 / asked as f64 * 1000.0).round() / 1000.0
        },
        distribution,
        score,
        segments,
        truncated,
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
