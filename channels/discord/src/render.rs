//! Replies as Discord shows them: agent and system text escaped so it reads exactly as typed,
//! bot Markdown kept (Discord speaks the same light Markdown), split at Discord's 2,000
//! characters, and buttons as message components.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_channel::{Button, Outbound, TextFormat, markup};

/// Longest message content Discord takes.
pub const MAX_CHARS: usize = 2000;
/// Longest `custom_id` of a component.
pub const MAX_CUSTOM_ID: usize = 100;
/// Longest button label.
const MAX_LABEL: usize = 80;
/// Discord's limits: five buttons a row, five rows.
const PER_ROW: usize = 5;
const MAX_ROWS: usize = 5;
/// Longest `nonce`.
const MAX_NONCE: usize = 25;

/// Characters Discord's Markdown gives a meaning to.
const SPECIAL: &[char] = &[
    '\\', '*', '_', '~', '`', '|', '>', '#', '-', '[', ']', '(', ')', '<', ':',
];

/// Text shown literally: every Markdown character escaped. Escaping can lengthen the text, so
/// plain text is split before it is escaped, with room for the escapes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The reply's text as messages of at most [`MAX_CHARS`].
pub fn parts(outbound: &Outbound) -> Vec<String> {
    if outbound.text.trim().is_empty() {
        return vec![];
    }
    match outbound.format {
        TextFormat::Markdown => markup::split(&outbound.text, MAX_CHARS)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        TextFormat::Plain => {
            // Worst case every character doubles; split at half so each escaped part fits,
            // then merge back neighbours while they fit.
            let mut out: Vec<String> = Vec::new();
            for piece in markup::split(&outbound.text, MAX_CHARS / 2) {
                let escaped = escape(piece);
                match out.last_mut() {
                    Some(last)
                        if last.encode_utf16().count() + 1 + escaped.encode_utf16().count()
                            <= MAX_CHARS =>
                    {
                        last.push('\n');
                        last.push_str(&escaped);
                    }
                    _ => out.push(escaped),
                }
            }
            out
        }
    }
}

/// Buttons as action rows; `ids` are their `custom_id`s.
pub fn components(buttons: &[Button], ids: &[String]) -> Value {
    let rows: Vec<Value> = buttons
        .iter()
        .zip(ids)
        .take(PER_ROW * MAX_ROWS)
        .collect::<Vec<_>>()
        .chunks(PER_ROW)
        .map(|row| {
            json!({"type": 1, "components": row.iter().map(|(b, id)| json!({
                "type": 2, "style": 2,
                "label": b.label.chars().take(MAX_LABEL).collect::<String>(),
                "custom_id": id,
            })).collect::<Vec<_>>()})
        })
        .collect();
    json!(rows)
}

/// The `nonce` of part `part` of an outbound message: the same on every retry, so Discord
/// (with `enforce_nonce`) creates the message once.
pub fn nonce(outbound_id: &str, part: usize) -> String {
    hex::encode(Sha256::digest(format!("{outbound_id}/{part}").as_bytes()))[..MAX_NONCE].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_channel::OutboundAuthor;

    fn outbound(text: &str, format: TextFormat) -> Outbound {
        Outbound {
            id: "o1".into(),
            author: OutboundAuthor::Agent("Ana".into()),
            text: text.into(),
            buttons: vec![],
            in_reply_to: None,
            format,
            attachments: vec![],
        }
    }

    #[test]
    fn agent_text_is_escaped_and_every_part_fits() {
        assert_eq!(escape("*hi* <@1> 1-2"), "\\*hi\\* \\<@1\\> 1\\-2");
        let long = "a*b_c ".repeat(900);
        let parts = parts(&outbound(&long, TextFormat::Plain));
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= MAX_CHARS));
        let joined: String = parts.join(" ");
        assert_eq!(joined.matches("\\*").count(), 900);
    }

    #[test]
    fn markdown_passes_and_buttons_fill_rows_of_five() {
        assert_eq!(
            parts(&outbound("**Returns**", TextFormat::Markdown)),
            ["**Returns**"]
        );
        let buttons: Vec<Button> = (0..7)
            .map(|i| Button {
                label: format!("b{i}"),
                payload: format!("p{i}"),
            })
            .collect();
        let ids: Vec<String> = buttons.iter().map(|b| b.payload.clone()).collect();
        let rows = components(&buttons, &ids);
        assert_eq!(rows.as_array().unwrap().len(), 2);
        assert_eq!(rows[0]["components"].as_array().unwrap().len(), 5);
        assert_eq!(rows[1]["components"][1]["custom_id"], "p6");
        assert_eq!(nonce("o1", 0).len(), 25);
        assert_ne!(nonce("o1", 0), nonce("o1", 1));
    }
}
