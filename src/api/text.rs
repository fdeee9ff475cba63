//! What text a request may carry: user ids, client ids, display names and chat messages are
//! plain text (they reach logs, webhooks and the picture).

use crate::queue::PlatformEvent;

/// A user id or display name: 1–[`MAX_NAME_LEN`] characters, none of them a control
/// character or a bidirectional override (which would make a log line or a webhook read
/// differently from what it holds).
pub fn is_plain_text(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_NAME_LEN
        && !s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// Unicode's explicit direction controls (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Longest chat message, in characters.
pub const MAX_CHAT_LEN: usize = 4000;
/// Longest user id or display name.
pub const MAX_NAME_LEN: usize = 128;

/// User ids and display names are plain text of at most [`MAX_NAME_LEN`] characters without
/// control characters (a newline in a name would forge a log line).
pub fn check_event_text(ev: &PlatformEvent) -> Result<(), String> {
    if let Some(bad) = ev.user_ids().into_iter().find(|u| !is_plain_text(u)) {
        return Err(format!(
            "user id {bad:?} must be 1-{MAX_NAME_LEN} characters without control characters"
        ));
    }
    let name = match ev {
        PlatformEvent::ParticipantJoined { name, .. } | PlatformEvent::ChatMessage { name, .. } => {
            name.as_deref()
        }
        _ => None,
    };
    if name.is_some_and(|n| !is_plain_text(n)) {
        return Err(format!(
            "name must be 1-{MAX_NAME_LEN} characters without control characters"
        ));
    }
    if let PlatformEvent::ChatMessage { text, .. } = ev {
        let n = text.chars().count();
        if n == 0 || n > MAX_CHAT_LEN || text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(format!(
                "text must be 1-{MAX_CHAT_LEN} characters without control characters other than \
                 line breaks"
            ));
        }
    }
    Ok(())
}
