//! The assistant message of one model call, kept in the store while it
//! streams, so a crash loses at most the last moments of text a client saw.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::history;
use super::wire::{ContentBlock, Message};
use crate::domain::SessionId;
use crate::store::{DynStore, StoreError};

/// Writes are coalesced to at most one per this interval: a store round
/// trip per delta would cost more than the text is worth.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The streamed text so far, saved in the background as one assistant
/// message; [`Draft::finish`] overwrites it with the call's final message.
pub(super) struct Draft {
    text: watch::Sender<String>,
    finish: oneshot::Sender<Message>,
    writer: JoinHandle<Result<(), StoreError>>,
}

impl Draft {
    pub(super) fn start(store: DynStore, session: SessionId) -> Self {
        let (text, text_rx) = watch::channel(String::new());
        let (finish, finish_rx) = oneshot::channel();
        let writer = tokio::spawn(write(store, session, text_rx, finish_rx));
        Self {
            text,
            finish,
            writer,
        }
    }

    /// A draft kept in memory only, for a subagent's calls: its messages
    /// are not part of the session's history.
    pub(super) fn detached() -> Self {
        let (text, _) = watch::channel(String::new());
        let (finish, _) = oneshot::channel();
        Self {
            text,
            finish,
            writer: tokio::spawn(async { Ok(()) }),
        }
    }

    pub(super) fn push(&self, delta: &str) {
        self.text.send_modify(|text| text.push_str(delta));
    }

    pub(super) fn text(&self) -> String {
        self.text.borrow().clone()
    }

    /// Saves `message` in the draft's place (appended if no draft was saved)
    /// once any write in flight has landed.
    pub(super) async fn finish(self, message: Message) -> Result<(), StoreError> {
        // The writer only stops on its own after a panic; its join says so.
        let _ = self.finish.send(message);
        self.writer
            .await
            .map_err(|e| StoreError::Internal(format!("draft writer: {e}")))?
    }
}

async fn write(
    store: DynStore,
    session: SessionId,
    mut text: watch::Receiver<String>,
    mut finish: oneshot::Receiver<Message>,
) -> Result<(), StoreError> {
    let mut seq = None;
    // The first save waits one interval too: an answer that streams in
    // less than that costs no write beyond its final one.
    let mut next_save = Instant::now() + SAVE_EVERY;
    loop {
        // New text, then the rest of the interval since the last save.
        tokio::select! {
            biased;
            message = &mut finish => return save_final(&store, session, seq, message).await,
            changed = text.changed() => {
                if changed.is_err() {
                    return save_final(&store, session, seq, finish.await).await;
                }
            }
        }
        tokio::select! {
            biased;
            message = &mut finish => return save_final(&store, session, seq, message).await,
            () = tokio::time::sleep_until(next_save) => {}
        }
        let snapshot = text.borrow_and_update().clone();
        // The Messages API refuses whitespace-only text blocks.
        if snapshot.trim().is_empty() {
            continue;
        }
        let draft = Message::assistant(vec![ContentBlock::Text { text: snapshot }]);
        match store
            .save_message_at(session, seq, &history::to_stored(&draft))
            .await
        {
            Ok(saved) => seq = Some(saved),
            Err(err) => tracing::warn!(error = %err, "could not save the streamed text so far"),
        }
        next_save = Instant::now() + SAVE_EVERY;
    }
}

/// Dropped without a final message, the draft stays as saved, as it would
/// after a crash.
async fn save_final(
    store: &DynStore,
    session: SessionId,
    seq: Option<i64>,
    message: Result<Message, oneshot::error::RecvError>,
) -> Result<(), StoreError> {
    let Ok(message) = message else { return Ok(()) };
    store
        .save_message_at(session, seq, &history::to_stored(&message))
        .await
        .map(|_| ())
}
