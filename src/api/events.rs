//! `/api/v1/sessions/{id}/events`: a session's frames replayed from the
//! store and followed live, on any instance; `/turns/{turn_id}`: a turn's
//! status and, once it ended, its result.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;
use uuid::Uuid;

use super::chat::{sse, sse_event};
use super::frames::StreamFrame;
use super::sessions::parse_session_id;
use super::{ApiQuery, AppState, SessionPath};
use crate::agent::events::TurnReport;
use crate::domain::SessionId;
use crate::error::{ApiError, ErrorBody};
use crate::store::{DynStore, SessionEvent};

/// Frames read from the store at once.
const BATCH: u32 = 500;
/// How often a viewer looks for new frames without being told (a notice
/// lost with a dropped PostgreSQL connection, say).
const POLL_EVERY: Duration = Duration::from_secs(1);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions/{session_id}/events", get(session_events))
        .route(
            "/api/v1/sessions/{session_id}/turns/{turn_id}",
            get(session_turn),
        )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay the frames after this event id (0: from the oldest kept). A
    /// `Last-Event-ID` header, as a reconnecting EventSource sends, wins.
    pub after: Option<u64>,
    /// Keep following the session's next turns instead of ending with the
    /// running one (default false).
    pub follow: Option<bool>,
}

/// Replay and follow a session's frames
///
/// Server-Sent Events, the same frames as `/api/v1/chat/stream` (`StreamFrame`)
/// with the same `id:`s: the session's stored frames after `Last-Event-ID`
/// (or `?after=`), then the running turn's frames as they are stored (within
/// about 200 ms), ending after the turn does; with `follow=true` the stream
/// goes on with the following turns. Works on every instance sharing the
/// store, while a turn runs and after; any number of viewers. Keep-alive
/// comments every 15 s. Frames older than `session.event_retention` are gone.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/events", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Replay the frames after this id"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "text/event-stream: `id: <n>` and `data: <StreamFrame>` per stored frame", content_type = "text/event-stream", body = StreamFrame),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "after or Last-Event-ID is not a whole number", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(session_id = %id))]
pub async fn session_events(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::validation("Last-Event-ID", "must be an event id (a whole number)")
            })?,
        None => query.after.unwrap_or(0),
    };
    // Listening before the first read: nothing stored in between is missed.
    let viewer = Viewer {
        notices: state.store.event_notices(),
        store: state.store.clone(),
        session: id,
        last: after,
        follow: query.follow.unwrap_or(false),
        ended: false,
    };
    state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    Ok(sse(frames(viewer)))
}

/// One client reading a session's log.
struct Viewer {
    store: DynStore,
    session: SessionId,
    notices: broadcast::Receiver<SessionId>,
    /// The id of the last frame sent.
    last: u64,
    follow: bool,
    ended: bool,
}

impl Viewer {
    /// The next frames to send, waiting for them; `None` once the turn
    /// followed has ended (or the session is gone).
    async fn next(&mut self) -> Option<Vec<SessionEvent>> {
        while !self.ended {
            if let Some(events) = self.read().await {
                return Some(events);
            }
            match self.store.get(self.session).await {
                Ok(None) => self.ended = true,
                Ok(Some(session)) if !session.turn_running && !self.follow => {
                    // A turn stores its last frames before it frees the
                    // session: what is stored now is all there is.
                    self.ended = true;
                    return self.read().await;
                }
                Ok(Some(_)) => self.wait().await,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the session for its events");
                    self.wait().await;
                }
            }
        }
        None
    }

    /// Stored frames after the last one sent, if any.
    async fn read(&mut self) -> Option<Vec<SessionEvent>> {
        match self
            .store
            .events_after(self.session, self.last, BATCH)
            .await
        {
            Ok(events) => {
                self.last = events.last()?.id;
                Some(events)
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the session's events");
                None
            }
        }
    }

    /// Until the session has new frames, or a poll is due.
    async fn wait(&mut self) {
        let notified = async {
            loop {
                match self.notices.recv().await {
                    Ok(id) if id == self.session => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(POLL_EVERY, notified).await;
    }
}

fn frames(viewer: Viewer) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(viewer, |mut viewer| async move {
        viewer.next().await.map(|events| (events, viewer))
    })
    .flat_map(|events| {
        futures::stream::iter(
            events
                .into_iter()
                .map(|event| Ok(sse_event(event.id, &event.frame))),
        )
    })
}

/// A turn's status and result
///
/// `running` while it runs; then `completed`, `interrupted` or `failed` with
/// `result`, the body the synchronous `/api/v1/chat` answered (and
/// `status_code`, its HTTP status); `abandoned` when its instance stopped
/// without finishing it. Readable from every instance sharing the store.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/turns/{turn_id}", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("turn_id" = String, Path, description = "Turn UUID, as `/chat` with `async` answered"),
    ),
    responses(
        (status = 200, description = "The turn", body = TurnReport),
        (status = 404, description = "Unknown session (session_not_found) or turn (turn_not_found)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn session_turn(
    State(state): State<AppState>,
    Path((session, turn)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_session_id(&session)?;
    let turn = Uuid::parse_str(&turn).map_err(|_| ApiError::TurnNotFound)?;
    let session = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let record = state
        .store
        .turn(id, turn)
        .await?
        .ok_or(ApiError::TurnNotFound)?;
    Ok(Json(TurnReport::new(id, record, session.turn_running)))
}
