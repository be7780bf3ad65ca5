//! One contract, three stores: the same test functions run against memory,
//! SQLite and PostgreSQL (a fresh database per test).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use claude_agent_http::config::EventRetention;
use claude_agent_http::config::{Settings, StorageKind};
use claude_agent_http::domain::{SessionId, UserId};
use claude_agent_http::options::SessionOptions;
use claude_agent_http::store::{
    self, Answering, Changed, DynStore, ForkPoint, LeaseOutcome, Limits, NewMessage, NewSession,
    PersonRequest, QueuedMessage, Renewal, RequestKind, SessionChange, SessionEvent, StoreError,
    Todo, TodoStatus, TurnEnded, TurnStatus, UsageTotals,
};
use serde_json::json;

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

struct Fixture {
    store: DynStore,
    _tmp: tempfile::TempDir,
}

async fn open(storage: StorageKind, ttl_secs: i64) -> Option<Fixture> {
    if storage == StorageKind::Postgresql && !helpers::pg_available().await {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut settings: Settings = helpers::test_settings(tmp.path(), storage);
    settings.session.ttl = ttl_secs;
    let store = store::open(&settings).await.expect("store opens");
    assert_eq!(store.kind(), storage);
    Some(Fixture { store, _tmp: tmp })
}

fn new_session(user: &str) -> NewSession {
    NewSession {
        user_id: UserId::parse(user).unwrap(),
        subdir: Some("proj".into()),
        cwd: format!("/data/{user}/proj"),
        metadata: json!({"k": [1, 2]}),
        options: SessionOptions::default(),
    }
}

fn msg(role: &str, text: &str) -> NewMessage {
    NewMessage {
        role: role.into(),
        content: json!([{"type": "text", "text": text}]),
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() { super::$name(StorageKind::Memory).await }
            #[tokio::test]
            async fn sqlite() { super::$name(StorageKind::Sqlite).await }
            #[tokio::test]
            async fn postgresql() { super::$name(StorageKind::Postgresql).await }
        })*
    };
}

contract!(
    create_get_list_delete,
    conversation_is_ordered_and_deleted_with_the_session,
    a_streamed_message_grows_in_place,
    usage_accumulates,
    one_turn_lease_at_a_time,
    expired_sessions_vanish_and_are_purged,
    limits_hold_under_concurrency,
    touch_moves_last_active,
    nul_bytes_round_trip,
    todos_are_replaced_whole_and_go_with_the_session,
    options_are_kept_and_change_only_between_turns,
    a_fork_copies_the_conversation_up_to_its_point,
    pages_walk_the_list_and_the_conversation_once,
    requests_are_answered_once_and_go_with_the_session,
    queued_messages_run_in_order_under_the_same_lease,
    the_event_log_numbers_keeps_and_prunes_turns,
    keys_are_stored_listed_and_revoked,
    daily_usage_outlives_its_sessions,
    turn_windows_count_concurrent_turns_once_each,
);

async fn create_get_list_delete(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let a = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let b = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    assert_eq!(a.user_id.as_str(), "alice");
    assert_eq!(a.subdir.as_deref(), Some("proj"));
    assert_eq!(a.metadata, json!({"k": [1, 2]}));
    assert_eq!(a.message_count, 0);
    assert!(!a.turn_running);

    let got = f.store.get(a.id).await.unwrap().unwrap();
    assert_eq!(got.id, a.id);
    assert_eq!(got.cwd, "/data/alice/proj");
    assert_eq!(
        got.created_at.timestamp_millis(),
        a.created_at.timestamp_millis()
    );

    let mut all = f.store.list(None).await.unwrap();
    all.sort_by_key(|id| id.0);
    let mut expected = vec![a.id, b.id];
    expected.sort_by_key(|id| id.0);
    assert_eq!(all, expected);
    let alice = UserId::parse("alice").unwrap();
    assert_eq!(f.store.list(Some(&alice)).await.unwrap(), vec![a.id]);
    assert_eq!(f.store.count_live().await.unwrap(), 2);

    assert!(f.store.delete(a.id).await.unwrap());
    assert!(!f.store.delete(a.id).await.unwrap());
    assert!(f.store.get(a.id).await.unwrap().is_none());
    assert!(f.store.get(SessionId::new()).await.unwrap().is_none());
    assert_eq!(f.store.list(None).await.unwrap(), vec![b.id]);
    f.store.ping().await.unwrap();
}

async fn a_streamed_message_grows_in_place(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    f.store
        .append_messages(s.id, &[msg("user", "question")])
        .await
        .unwrap();
    let seq = f
        .store
        .save_message_at(s.id, None, &msg("assistant", "The\u{0} ans"))
        .await
        .unwrap();
    let again = f
        .store
        .save_message_at(s.id, Some(seq), &msg("assistant", "The answer.\u{0}"))
        .await
        .unwrap();
    assert_eq!(again, seq);
    f.store
        .append_messages(s.id, &[msg("user", "next")])
        .await
        .unwrap();
    let history = f.store.messages(s.id).await.unwrap();
    let texts: Vec<(&str, &str)> = history
        .iter()
        .map(|m| (m.role.as_str(), m.content[0]["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "question"),
            ("assistant", "The answer.\u{0}"),
            ("user", "next")
        ]
    );

    assert!(f.store.delete(s.id).await.unwrap());
    let gone = f
        .store
        .save_message_at(s.id, Some(seq), &msg("assistant", "late"))
        .await;
    assert!(matches!(gone, Err(store::StoreError::NotFound)), "{gone:?}");
    let gone = f
        .store
        .save_message_at(s.id, None, &msg("assistant", "late"))
        .await;
    assert!(matches!(gone, Err(store::StoreError::NotFound)), "{gone:?}");
}

async fn conversation_is_ordered_and_deleted_with_the_session(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    f.store
        .append_messages(s.id, &[msg("user", "one")])
        .await
        .unwrap();
    f.store
        .append_messages(s.id, &[msg("assistant", "two"), msg("user", "three")])
        .await
        .unwrap();
    let history = f.store.messages(s.id).await.unwrap();
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m.content[0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(history[1].role, "assistant");
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));

    // Another session's conversation is separate.
    let other = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    assert!(f.store.messages(other.id).await.unwrap().is_empty());

    f.store.delete(s.id).await.unwrap();
    assert!(f.store.messages(s.id).await.unwrap().is_empty());
    // Appending to a deleted session fails rather than leaving orphans.
    assert!(
        f.store
            .append_messages(s.id, &[msg("user", "late")])
            .await
            .is_err()
    );
}

async fn usage_accumulates(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let turn = UsageTotals {
        input_tokens: 100,
        output_tokens: 20,
        cache_creation_input_tokens: 5,
        cache_read_input_tokens: 7,
        cost_usd: 0.25,
    };
    f.store.record_usage(s.id, turn, 1).await.unwrap();
    f.store.record_usage(s.id, turn, 1).await.unwrap();
    let got = f.store.get(s.id).await.unwrap().unwrap();
    assert_eq!(got.message_count, 2);
    assert_eq!(got.usage.input_tokens, 200);
    assert_eq!(got.usage.output_tokens, 40);
    assert_eq!(got.usage.cache_creation_input_tokens, 10);
    assert_eq!(got.usage.cache_read_input_tokens, 14);
    assert!((got.usage.cost_usd - 0.5).abs() < 1e-9);
}

async fn one_turn_lease_at_a_time(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let (one, two) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let lease = Duration::from_secs(30);
    assert_eq!(
        f.store.acquire_turn(s.id, one, lease).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(f.store.get(s.id).await.unwrap().unwrap().turn_running);
    assert_eq!(
        f.store.acquire_turn(s.id, two, lease).await.unwrap(),
        LeaseOutcome::Busy
    );
    assert_eq!(
        f.store.renew_turn(s.id, one, lease).await.unwrap(),
        Renewal::Held
    );
    assert_eq!(
        f.store.renew_turn(s.id, two, lease).await.unwrap(),
        Renewal::Lost
    );
    // An interrupt asked for anywhere reaches the holder at its next renewal.
    assert!(f.store.request_interrupt(s.id).await.unwrap());
    assert_eq!(
        f.store.renew_turn(s.id, one, lease).await.unwrap(),
        Renewal::InterruptRequested
    );
    // Releasing someone else's lease does nothing.
    f.store.release_turn(s.id, two).await.unwrap();
    assert_eq!(
        f.store.acquire_turn(s.id, two, lease).await.unwrap(),
        LeaseOutcome::Busy
    );
    f.store.release_turn(s.id, one).await.unwrap();
    assert!(!f.store.get(s.id).await.unwrap().unwrap().turn_running);
    assert!(
        !f.store.request_interrupt(s.id).await.unwrap(),
        "nothing to interrupt"
    );
    assert_eq!(
        f.store.acquire_turn(s.id, two, lease).await.unwrap(),
        LeaseOutcome::Acquired
    );
    f.store.release_turn(s.id, two).await.unwrap();

    // A holder that died without releasing loses the lease when it lapses.
    let short = Duration::from_millis(200);
    assert_eq!(
        f.store.acquire_turn(s.id, one, short).await.unwrap(),
        LeaseOutcome::Acquired
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.store.acquire_turn(s.id, two, lease).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        f.store
            .acquire_turn(SessionId::new(), one, lease)
            .await
            .unwrap(),
        LeaseOutcome::NotFound
    );

    // Many contenders at once: exactly one wins.
    f.store.release_turn(s.id, two).await.unwrap();
    let store: Arc<DynStore> = Arc::new(f.store.clone());
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .acquire_turn(s.id, uuid::Uuid::new_v4(), Duration::from_secs(30))
                .await
                .unwrap()
        })
    });
    let outcomes = futures::future::join_all(attempts).await;
    let won = outcomes
        .into_iter()
        .filter(|o| *o.as_ref().unwrap() == LeaseOutcome::Acquired)
        .count();
    assert_eq!(won, 1);
}

async fn expired_sessions_vanish_and_are_purged(storage: StorageKind) {
    let Some(f) = open(storage, 1).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    f.store
        .append_messages(s.id, &[msg("user", "hi")])
        .await
        .unwrap();
    assert!(f.store.get(s.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(f.store.get(s.id).await.unwrap().is_none());
    assert!(f.store.list(None).await.unwrap().is_empty());
    assert!(
        f.store.touch(s.id).await.unwrap().is_none(),
        "an expired session cannot be resumed"
    );
    assert_eq!(f.store.purge_expired().await.unwrap(), 1);
    assert!(f.store.messages(s.id).await.unwrap().is_empty());
    assert_eq!(f.store.purge_expired().await.unwrap(), 0);
}

async fn limits_hold_under_concurrency(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let limits = Limits {
        max_sessions: 5,
        max_sessions_per_user: 0,
    };
    let store = Arc::new(f.store.clone());
    let attempts = (0..12).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.create(new_session(&format!("u{i}")), limits).await })
    });
    let results = futures::future::join_all(attempts).await;
    let created = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(created, 5);
    assert_eq!(f.store.count_live().await.unwrap(), 5);
    let per_user = Limits {
        max_sessions: 0,
        max_sessions_per_user: 1,
    };
    f.store.create(new_session("solo"), per_user).await.unwrap();
    let err = f
        .store
        .create(new_session("solo"), per_user)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_sessions_per_user"), "{err}");
}

async fn touch_moves_last_active(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let touched = f.store.touch(s.id).await.unwrap().unwrap();
    assert!(touched.last_active_at > s.last_active_at);
    assert_eq!(
        touched.created_at.timestamp_millis(),
        s.created_at.timestamp_millis()
    );
    assert!(f.store.touch(SessionId::new()).await.unwrap().is_none());
}

/// U+0000 turns up in tool output, user messages, model text and metadata;
/// PostgreSQL's jsonb refuses it, yet every store must give it back as sent.
async fn nul_bytes_round_trip(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let metadata =
        json!({"k\u{0}ey": "v\u{0}al", "literal": "\\0 and \\ stay text", "n": [1, null]});
    let s = f
        .store
        .create(
            NewSession {
                metadata: metadata.clone(),
                ..new_session("alice")
            },
            Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata, metadata);
    assert_eq!(f.store.get(s.id).await.unwrap().unwrap().metadata, metadata);

    let conversation = [
        msg("user", "hi\u{0}there"),
        NewMessage {
            role: "assistant".into(),
            content: json!([
                {"type": "text", "text": "model\u{0}text"},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "printf '\\0'"}},
            ]),
        },
        NewMessage {
            role: "user".into(),
            content: json!([{"type": "tool_result", "tool_use_id": "t1", "content": "a\u{0}b\u{0}"}]),
        },
        // No NUL, but the characters an escaping scheme would use.
        msg("assistant", "\\0 is how C writes it; \\\\ is a backslash"),
    ];
    f.store.append_messages(s.id, &conversation).await.unwrap();
    let history = f.store.messages(s.id).await.unwrap();
    let got: Vec<_> = history.iter().map(|m| (&m.role, &m.content)).collect();
    let sent: Vec<_> = conversation.iter().map(|m| (&m.role, &m.content)).collect();
    assert_eq!(got, sent);
}

fn todo(content: &str, status: TodoStatus) -> Todo {
    Todo {
        content: content.into(),
        status,
        active_form: format!("Doing: {content}"),
    }
}

async fn todos_are_replaced_whole_and_go_with_the_session(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let a = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let b = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    assert!(a.todos.is_empty());
    assert!(f.store.get(a.id).await.unwrap().unwrap().todos.is_empty());

    let plan = vec![
        todo("Write the parser", TodoStatus::Completed),
        todo("Run the tests \u{0} (with a NUL) ✓", TodoStatus::InProgress),
        todo("Ship \\0", TodoStatus::Pending),
    ];
    f.store.set_todos(a.id, &plan).await.unwrap();
    assert_eq!(f.store.get(a.id).await.unwrap().unwrap().todos, plan);
    assert!(
        f.store.get(b.id).await.unwrap().unwrap().todos.is_empty(),
        "another session's list is its own"
    );
    let shorter = vec![todo("Only this", TodoStatus::Pending)];
    f.store.set_todos(a.id, &shorter).await.unwrap();
    assert_eq!(f.store.get(a.id).await.unwrap().unwrap().todos, shorter);
    // Other writes to the session leave the list alone.
    f.store
        .record_usage(a.id, UsageTotals::default(), 1)
        .await
        .unwrap();
    assert_eq!(f.store.touch(a.id).await.unwrap().unwrap().todos, shorter);
    f.store.set_todos(a.id, &[]).await.unwrap();
    assert!(f.store.get(a.id).await.unwrap().unwrap().todos.is_empty());

    assert!(matches!(
        f.store.set_todos(SessionId::new(), &plan).await,
        Err(StoreError::NotFound)
    ));
    assert!(f.store.delete(a.id).await.unwrap());
    assert!(matches!(
        f.store.set_todos(a.id, &plan).await,
        Err(StoreError::NotFound)
    ));
}

async fn options_are_kept_and_change_only_between_turns(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let options: SessionOptions = serde_json::from_value(json!({
        "model": "claude-haiku-4-5",
        "system_prompt": {"append": "Keep\u{0}it short."},
        "disallowed_tools": ["Bash"], "max_turns": 3
    }))
    .unwrap();
    let s = f
        .store
        .create(
            NewSession {
                options: options.clone(),
                ..new_session("alice")
            },
            Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(s.options, options);
    assert_eq!(f.store.get(s.id).await.unwrap().unwrap().options, options);

    let holder = uuid::Uuid::new_v4();
    let lease = Duration::from_secs(30);
    assert_eq!(
        f.store.acquire_turn(s.id, holder, lease).await.unwrap(),
        LeaseOutcome::Acquired
    );
    let change = SessionChange {
        options: Some(SessionOptions::default()),
        metadata: Some(json!({"stage": "two"})),
    };
    assert_eq!(
        f.store.change(s.id, change.clone()).await.unwrap(),
        Changed::Busy
    );
    let unchanged = f.store.get(s.id).await.unwrap().unwrap();
    assert_eq!(unchanged.options, options);
    assert_eq!(unchanged.metadata, json!({"k": [1, 2]}));

    f.store.release_turn(s.id, holder).await.unwrap();
    let Changed::Done(changed) = f.store.change(s.id, change).await.unwrap() else {
        panic!("an idle session changes");
    };
    assert_eq!(changed.options, SessionOptions::default());
    assert_eq!(changed.metadata, json!({"stage": "two"}));
    // Only metadata: the options stay.
    let only_metadata = SessionChange {
        options: None,
        metadata: Some(json!({"stage": "three"})),
    };
    let Changed::Done(changed) = f.store.change(s.id, only_metadata).await.unwrap() else {
        panic!("an idle session changes");
    };
    assert_eq!(changed.options, SessionOptions::default());
    assert_eq!(changed.metadata, json!({"stage": "three"}));

    f.store.delete(s.id).await.unwrap();
    assert_eq!(
        f.store
            .change(s.id, SessionChange::default())
            .await
            .unwrap(),
        Changed::NotFound
    );
}

async fn a_fork_copies_the_conversation_up_to_its_point(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let source = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let conversation = [
        msg("user", "one"),
        msg("assistant", "two\u{0}"),
        msg("user", "three"),
        msg("assistant", "four"),
    ];
    f.store
        .append_messages(source.id, &conversation)
        .await
        .unwrap();
    let todos = [todo("Write the tests", TodoStatus::InProgress)];
    let point = ForkPoint {
        source: source.id,
        up_to_seq: Some(2),
        message_count: 1,
    };
    let fork = f
        .store
        .fork(point, new_session("alice"), &todos, Limits::default())
        .await
        .unwrap();
    assert_ne!(fork.id, source.id);
    assert_eq!(fork.todos, todos);
    assert_eq!(fork.message_count, 1);
    let copied = f.store.messages(fork.id).await.unwrap();
    let original = f.store.messages(source.id).await.unwrap();
    assert_eq!(copied.len(), 2);
    assert_eq!(copied[..], original[..2]);

    // Each goes on alone.
    f.store
        .append_messages(fork.id, &[msg("user", "fork only")])
        .await
        .unwrap();
    assert_eq!(f.store.messages(source.id).await.unwrap(), original);
    assert_eq!(f.store.messages(fork.id).await.unwrap()[2].seq, 3);

    // Limits hold for forks too, and nothing is left behind.
    let limits = Limits {
        max_sessions: 2,
        max_sessions_per_user: 0,
    };
    let point = ForkPoint {
        up_to_seq: None,
        ..point
    };
    let refused = f
        .store
        .fork(point, new_session("alice"), &[], limits)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::LimitReached(_)),
        "{refused:?}"
    );
    assert_eq!(f.store.count_live().await.unwrap(), 2);

    f.store.delete(source.id).await.unwrap();
    let gone = f
        .store
        .fork(point, new_session("alice"), &[], Limits::default())
        .await
        .unwrap_err();
    assert!(matches!(gone, StoreError::NotFound), "{gone:?}");
    assert_eq!(f.store.messages(fork.id).await.unwrap().len(), 3);
}

async fn pages_walk_the_list_and_the_conversation_once(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let mut ids = Vec::new();
    for user in ["alice", "bob", "alice", "alice", "bob"] {
        let s = f
            .store
            .create(new_session(user), Limits::default())
            .await
            .unwrap();
        ids.push(s.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = f.store.list_page(None, after, Some(2)).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().copied();
        seen.extend(page.into_iter().map(|k| k.id));
    }
    assert_eq!(seen, f.store.list(None).await.unwrap());
    seen.sort_by_key(|id| id.0);
    ids.sort_by_key(|id| id.0);
    assert_eq!(seen, ids);
    let alice = UserId::parse("alice").unwrap();
    let first = f
        .store
        .list_page(Some(&alice), None, Some(2))
        .await
        .unwrap();
    let rest = f
        .store
        .list_page(Some(&alice), first.last().copied(), None)
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len()), (2, 1));

    let s = ids[0];
    let conversation: Vec<NewMessage> = (1..=5).map(|i| msg("user", &i.to_string())).collect();
    f.store.append_messages(s, &conversation).await.unwrap();
    let page = f.store.messages_after(s, 1, Some(2)).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
    let tail = f.store.messages_after(s, 3, None).await.unwrap();
    assert_eq!(tail.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
}

fn person_request(kind: RequestKind, input: serde_json::Value) -> PersonRequest {
    PersonRequest {
        id: uuid::Uuid::new_v4(),
        kind,
        tool_use_id: "toolu_1".into(),
        tool_name: "Bash".into(),
        tool_input: input,
        reason: "the ask rule `Bash(echo *)`".into(),
        created_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3),
        answer: None,
    }
}

async fn requests_are_answered_once_and_go_with_the_session(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let other = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let holder = uuid::Uuid::new_v4();
    f.store.acquire_turn(s.id, holder, lease).await.unwrap();
    let asked = person_request(
        RequestKind::Permission,
        json!({"command": "echo \u{0} nul \\0"}),
    );
    f.store.add_request(s.id, &asked).await.unwrap();
    let question = person_request(RequestKind::Question, json!({"questions": []}));
    f.store.add_request(s.id, &question).await.unwrap();
    assert_eq!(
        f.store.get(s.id).await.unwrap().unwrap().waiting_on,
        Some(RequestKind::Permission)
    );
    assert_eq!(
        f.store
            .pending_requests(s.id, RequestKind::Permission)
            .await
            .unwrap(),
        vec![asked.clone()]
    );
    assert!(
        f.store.request(other.id, asked.id).await.unwrap().is_none(),
        "another session cannot see it"
    );
    assert_eq!(
        f.store
            .answer_request(other.id, asked.id, &json!({"decision": "allow"}))
            .await
            .unwrap(),
        Answering::NotFound
    );
    let allow = json!({"decision": "allow", "message": "ok \u{0}"});
    assert_eq!(
        f.store
            .answer_request(s.id, asked.id, &allow)
            .await
            .unwrap(),
        Answering::Answered
    );
    assert_eq!(
        f.store
            .answer_request(s.id, asked.id, &json!({"decision": "deny"}))
            .await
            .unwrap(),
        Answering::AlreadyAnswered(allow.clone()),
        "the first answer wins"
    );
    assert_eq!(
        f.store
            .request(s.id, asked.id)
            .await
            .unwrap()
            .unwrap()
            .answer,
        Some(allow)
    );
    assert!(
        f.store
            .pending_requests(s.id, RequestKind::Permission)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store.get(s.id).await.unwrap().unwrap().waiting_on,
        Some(RequestKind::Question)
    );

    f.store.add_allow_rule(s.id, "Bash(ls)").await.unwrap();
    f.store.add_allow_rule(s.id, "Bash(ls)").await.unwrap();
    f.store.add_allow_rule(s.id, "WebFetch").await.unwrap();
    assert_eq!(
        f.store.allow_rules(s.id).await.unwrap().len(),
        2,
        "a rule is kept once"
    );
    assert!(f.store.allow_rules(other.id).await.unwrap().is_empty());

    assert!(f.store.delete(s.id).await.unwrap());
    assert!(f.store.request(s.id, question.id).await.unwrap().is_none());
    assert!(f.store.allow_rules(s.id).await.unwrap().is_empty());
    assert!(matches!(
        f.store.add_request(s.id, &asked).await,
        Err(StoreError::NotFound)
    ));
}

async fn queued_messages_run_in_order_under_the_same_lease(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let queued = |text: &str| QueuedMessage {
        message: text.into(),
        timeout: Duration::from_secs(90),
    };
    assert_eq!(
        f.store
            .enqueue_message(s.id, &queued("idle"))
            .await
            .unwrap(),
        None,
        "nothing to queue behind"
    );
    let holder = uuid::Uuid::new_v4();
    let lease = Duration::from_secs(30);
    f.store.acquire_turn(s.id, holder, lease).await.unwrap();
    assert_eq!(
        f.store
            .enqueue_message(s.id, &queued("one \u{0}"))
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        f.store.enqueue_message(s.id, &queued("two")).await.unwrap(),
        Some(2)
    );
    assert_eq!(f.store.get(s.id).await.unwrap().unwrap().queued, 2);
    // Another holder takes nothing.
    assert_eq!(
        f.store
            .next_queued_or_release(s.id, uuid::Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store.next_queued_or_release(s.id, holder).await.unwrap(),
        Some(queued("one \u{0}"))
    );
    assert!(
        f.store.get(s.id).await.unwrap().unwrap().turn_running,
        "the lease is kept for the queued message"
    );
    assert_eq!(
        f.store.next_queued_or_release(s.id, holder).await.unwrap(),
        Some(queued("two"))
    );
    assert_eq!(
        f.store.next_queued_or_release(s.id, holder).await.unwrap(),
        None
    );
    let session = f.store.get(s.id).await.unwrap().unwrap();
    assert!(!session.turn_running && session.queued == 0);

    // Queueing racing the end of the turn: every message is either taken
    // by the holder or refused (and started by its sender instead).
    for _ in 0..20 {
        let holder = uuid::Uuid::new_v4();
        f.store.acquire_turn(s.id, holder, lease).await.unwrap();
        let racing = queued("racing");
        let (queued_one, released) = tokio::join!(
            f.store.enqueue_message(s.id, &racing),
            f.store.next_queued_or_release(s.id, holder),
        );
        match (queued_one.unwrap(), released.unwrap()) {
            (Some(_), Some(_)) => {
                assert_eq!(
                    f.store.next_queued_or_release(s.id, holder).await.unwrap(),
                    None
                );
            }
            (Some(_), None) => panic!("a message was queued behind a released turn"),
            (None, Some(_)) => panic!("a message was taken that was never queued"),
            (None, None) => {}
        }
        assert_eq!(f.store.get(s.id).await.unwrap().unwrap().queued, 0);
    }
}

fn frames(ids: std::ops::RangeInclusive<u64>) -> Vec<SessionEvent> {
    ids.map(|id| SessionEvent {
        id,
        frame: Arc::from(format!(r#"{{"type":"text_delta","text":"{id}\u0000"}}"#)),
    })
    .collect()
}

fn ended(last_event_id: u64) -> TurnEnded {
    TurnEnded {
        status: TurnStatus::Completed,
        status_code: 200,
        result: json!({"text": "done"}),
        last_event_id,
    }
}

async fn the_event_log_numbers_keeps_and_prunes_turns(storage: StorageKind) {
    let Some(f) = open(storage, 3600).await else {
        return;
    };
    let s = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let other = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    let keep_two = EventRetention {
        turns: 2,
        max_age_secs: 0,
    };
    let mut notices = f.store.event_notices();

    let first = uuid::Uuid::new_v4();
    assert_eq!(f.store.begin_turn(s.id, first).await.unwrap(), 0);
    let running = f.store.turn(s.id, first).await.unwrap().unwrap();
    assert_eq!(running.status, TurnStatus::Running);
    assert_eq!(running.result, None);
    f.store
        .append_events(s.id, first, &frames(1..=3))
        .await
        .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let id = notices.recv().await.unwrap();
            if id == s.id {
                return id;
            }
        }
    })
    .await
    .expect("a notice for the session");
    assert_eq!(notice, s.id);
    f.store
        .append_events(s.id, first, &frames(4..=5))
        .await
        .unwrap();
    assert_eq!(
        f.store.events_after(s.id, 0, 100).await.unwrap(),
        frames(1..=5)
    );
    assert_eq!(
        f.store.events_after(s.id, 3, 1).await.unwrap(),
        frames(4..=4)
    );
    assert!(
        f.store
            .events_after(other.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    f.store
        .finish_turn(s.id, first, &[], &ended(5), &keep_two)
        .await
        .unwrap();
    let done = f.store.turn(s.id, first).await.unwrap().unwrap();
    assert_eq!(done.status, TurnStatus::Completed);
    assert_eq!(done.status_code, Some(200));
    assert_eq!(done.result, Some(json!({"text": "done"})));
    assert_eq!((done.after_event_id, done.last_event_id), (0, 5));
    assert!(done.finished_at.is_some());

    // Ids go on from the previous turn's last; a third turn drops the first.
    let second = uuid::Uuid::new_v4();
    assert_eq!(f.store.begin_turn(s.id, second).await.unwrap(), 5);
    f.store
        .append_events(s.id, second, &frames(6..=6))
        .await
        .unwrap();
    f.store
        .finish_turn(s.id, second, &frames(7..=7), &ended(7), &keep_two)
        .await
        .unwrap();
    let third = uuid::Uuid::new_v4();
    assert_eq!(f.store.begin_turn(s.id, third).await.unwrap(), 7);
    f.store
        .finish_turn(s.id, third, &frames(8..=8), &ended(8), &keep_two)
        .await
        .unwrap();
    assert_eq!(
        f.store.events_after(s.id, 0, 100).await.unwrap(),
        frames(6..=8)
    );
    assert!(f.store.turn(s.id, first).await.unwrap().is_none());
    assert!(f.store.turn(s.id, second).await.unwrap().is_some());

    // An age limit prunes frames but never the newest turn's id.
    let by_age = EventRetention {
        turns: 20,
        max_age_secs: 1,
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fourth = uuid::Uuid::new_v4();
    assert_eq!(f.store.begin_turn(s.id, fourth).await.unwrap(), 8);
    f.store
        .finish_turn(s.id, fourth, &[], &ended(8), &by_age)
        .await
        .unwrap();
    assert!(f.store.events_after(s.id, 0, 100).await.unwrap().is_empty());
    assert_eq!(
        f.store
            .begin_turn(s.id, uuid::Uuid::new_v4())
            .await
            .unwrap(),
        8
    );

    // Everything goes with the session.
    assert!(f.store.delete(s.id).await.unwrap());
    assert!(f.store.turn(s.id, second).await.unwrap().is_none());
    assert!(f.store.events_after(s.id, 0, 100).await.unwrap().is_empty());
    assert!(matches!(
        f.store.begin_turn(s.id, uuid::Uuid::new_v4()).await,
        Err(StoreError::NotFound)
    ));
}

async fn keys_are_stored_listed_and_revoked(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    assert!(!f.store.has_keys().await.unwrap());
    let alice = UserId::parse("alice").unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::days(30);
    let first = claude_agent_http::auth::issue(alice.clone(), Some("ci".into()), Some(expires));
    let second = claude_agent_http::auth::issue(UserId::parse("bob").unwrap(), None, None);
    f.store.insert_key(&first.record).await.unwrap();
    f.store.insert_key(&second.record).await.unwrap();
    assert!(f.store.has_keys().await.unwrap());

    let stored = f.store.key(&first.record.id).await.unwrap().unwrap();
    assert_eq!(stored.user_id, alice);
    assert_eq!(stored.name.as_deref(), Some("ci"));
    assert_eq!(stored.secret_hash, first.record.secret_hash);
    assert_eq!(
        stored.expires_at.map(|t| t.timestamp_millis()),
        Some(expires.timestamp_millis())
    );
    assert!(stored.revoked_at.is_none());
    assert!(f.store.key("000000000000").await.unwrap().is_none());

    let all = f.store.list_keys(None).await.unwrap();
    assert_eq!(all.len(), 2);
    let only = f.store.list_keys(Some(&alice)).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, first.record.id);

    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert!(f.store.revoke_key(&first.record.id, at).await.unwrap());
    // A second revocation keeps the first time.
    assert!(
        f.store
            .revoke_key(&first.record.id, chrono::Utc::now())
            .await
            .unwrap()
    );
    let revoked = f.store.key(&first.record.id).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    assert!(!f.store.revoke_key("000000000000", at).await.unwrap());
    // The same id twice is refused, not overwritten.
    assert!(f.store.insert_key(&first.record).await.is_err());
}

async fn daily_usage_outlives_its_sessions(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let one = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let two = f
        .store
        .create(new_session("alice"), Limits::default())
        .await
        .unwrap();
    let bob = f
        .store
        .create(new_session("bob"), Limits::default())
        .await
        .unwrap();
    let usage = UsageTotals {
        input_tokens: 10,
        output_tokens: 5,
        cache_creation_input_tokens: 2,
        cache_read_input_tokens: 1,
        cost_usd: 0.25,
    };
    f.store.record_usage(one.id, usage, 1).await.unwrap();
    f.store.record_usage(two.id, usage, 1).await.unwrap();
    f.store.record_usage(bob.id, usage, 0).await.unwrap();
    f.store.delete(one.id).await.unwrap();

    let today = chrono::Utc::now().date_naive();
    let days = f.store.usage_by_day(None, today, today).await.unwrap();
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!(days[0].user_id.as_str(), "alice");
    assert_eq!(days[0].day, today);
    assert_eq!(days[0].turns, 2);
    assert_eq!(days[0].usage.input_tokens, 20);
    assert_eq!(days[0].usage.cache_read_input_tokens, 2);
    assert!((days[0].usage.cost_usd - 0.5).abs() < 1e-9);
    assert_eq!(days[1].user_id.as_str(), "bob");
    let alice = UserId::parse("alice").unwrap();
    let only = f
        .store
        .usage_by_day(Some(&alice), today, today)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let yesterday = today - chrono::Duration::days(1);
    assert!(
        f.store
            .usage_by_day(None, yesterday, yesterday)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn turn_windows_count_concurrent_turns_once_each(storage: StorageKind) {
    let Some(f) = open(storage, 0).await else {
        return;
    };
    let window = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let counts =
        futures::future::join_all((0..8).map(|_| f.store.count_turn("key:abc", window))).await;
    let mut counts: Vec<u64> = counts.into_iter().map(Result::unwrap).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=8).collect::<Vec<u64>>());
    assert_eq!(f.store.count_turn("key:other", window).await.unwrap(), 1);
    // A new window starts from one, and the old one is gone.
    let next = window + chrono::Duration::minutes(1);
    assert_eq!(f.store.count_turn("key:abc", next).await.unwrap(), 1);
    assert_eq!(f.store.count_turn("key:abc", window).await.unwrap(), 1);
}
