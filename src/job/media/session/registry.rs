//! The running sessions of this process, by what sets a composite apart ([`Key`]): a job
//! of a room joins the session registered for it or registers its own; the messages a session
//! takes from its members ([`Msg`]).

use super::member::{journal_chat, Member};
use crate::job::spec::{JobCommand, RecordingSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What sets a composite apart: jobs that agree on these share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) room: String,
    pub(super) conf: String,
    pub(super) preset: String,
    pub(super) watermark: Option<PathBuf>,
    pub(super) page_layer: bool,
}

impl Key {
    pub(super) fn of(spec: &RecordingSpec) -> Key {
        Key {
            room: spec.room_id.clone(),
            conf: spec.conf_num.clone(),
            preset: spec.preset.name.clone(),
            watermark: spec.watermark.clone(),
            page_layer: spec.page_layer || spec.page.is_some(),
        }
    }
}

pub(super) enum Msg {
    /// A job joining; told on `ack` once its outputs run (dropped: start a session of its own).
    Join(Box<Member>, oneshot::Sender<()>),
    Command(u64, JobCommand),
}

/// The running sessions of this process.
pub(super) static SESSIONS: LazyLock<Mutex<HashMap<Key, mpsc::UnboundedSender<Msg>>>> =
    LazyLock::new(Default::default);
pub(super) static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

pub(super) fn sessions() -> std::sync::MutexGuard<'static, HashMap<Key, mpsc::UnboundedSender<Msg>>>
{
    SESSIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes `key`'s session from the registry if it is still `tx`'s.
pub(super) fn unregister(key: &Key, tx: &mpsc::UnboundedSender<Msg>) {
    let mut s = sessions();
    if s.get(key).is_some_and(|t| t.same_channel(tx)) {
        s.remove(key);
    }
}

/// Whether jobs of one room share a composite: yes unless `ROOMCAST_SHARED_COMPOSITE` is
/// `0`, `false` or `off` (then every job builds its own, as separate processes would).
pub fn sharing() -> bool {
    static ON: LazyLock<bool> = LazyLock::new(|| {
        !matches!(
            std::env::var("ROOMCAST_SHARED_COMPOSITE").as_deref(),
            Ok("0" | "false" | "off")
        )
    });
    *ON
}

/// Journals the chat messages waiting for the session's members (the rest of what waits is
/// for a session that is ending: joins start sessions of their own).
pub(super) fn journal_late_chat(rx: &mut mpsc::UnboundedReceiver<Msg>, members: &[Member]) {
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Command(id, JobCommand::Chat(line)) = msg {
            if let Some(m) = members.iter().find(|m| m.id == id) {
                journal_chat(m.journal.as_deref(), &line);
            }
        }
    }
}
