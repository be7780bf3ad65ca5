//! API keys scoped to users, quotas and rate limits, and closed CORS, over
//! HTTP on every backend; two instances sharing PostgreSQL share keys and
//! quotas; the `keys` subcommands manage the same keys.

use std::path::Path;
use std::time::Duration;

use claude_agent_http::config::{AuthMode, Secret, Settings, StorageKind};
use claude_agent_http::domain::UserId;
use claude_agent_http::store::{self, DynStore};
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;
use crate::on_every_backend;

const ADMIN: &str = "admin-key-for-tests-0123456789abcdef";

fn with_admin(settings: &mut Settings) {
    settings.api.api_keys = vec![Secret::new(ADMIN)];
}

impl TestApp {
    /// A request sent with `key` as a bearer token (none when `None`).
    fn as_key(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Makes a user key for `user` with the admin key; returns the whole key.
    async fn user_key(&self, user: &str) -> String {
        let response = self
            .as_key(Method::POST, "/api/v1/keys", Some(ADMIN))
            .json(&json!({"user_id": user, "name": format!("{user}'s app")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["key"].as_str().unwrap().to_owned()
    }

    async fn session_as(&self, key: &str, user: &str) -> String {
        let response = self
            .as_key(Method::POST, "/api/v1/sessions", Some(key))
            .json(&json!({"user_id": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["session_id"].as_str().unwrap().to_owned()
    }

    async fn ids_listed(&self, key: &str, user: Option<&str>) -> Vec<String> {
        let mut request = self.as_key(Method::GET, "/api/v1/sessions", Some(key));
        if let Some(user) = user {
            request = request.query(&[("user_id", user)]);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

/// Waits (up to 10 s) until the app requires a key: one made outside it
/// (the store, the command line) takes effect within a second.
async fn wait_until_keys_are_required(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.list_sessions(None).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            return assert_refused(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a stored key did not turn authentication on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An error the auth layer answers: status, code, and the challenge header.
async fn assert_refused(response: reqwest::Response, status: StatusCode, code: &str) {
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_error(response, status, code).await;
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{code}: {challenge:?}"
    );
}

/// The app over a store the test keeps a handle on (to plant keys).
async fn app_with_store(
    storage: StorageKind,
    adjust: impl FnOnce(&mut Settings),
) -> Option<(TestApp, DynStore)> {
    if storage == StorageKind::Postgresql && !pg_available().await {
        return None;
    }
    let tmp = test_dir();
    let mut settings = test_settings(tmp.path(), storage);
    adjust(&mut settings);
    let store = store::open(&settings).await.unwrap();
    let root = tmp.path().to_path_buf();
    let app = start_with_store(settings, store.clone(), root, Some(tmp)).await;
    Some((app, store))
}

/// A key for `user` already past its expiry, stored directly.
async fn expired_key(store: &DynStore, user: &str) -> String {
    let issued = claude_agent_http::auth::issue(
        UserId::parse(user).unwrap(),
        None,
        Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
    );
    store.insert_key(&issued.record).await.unwrap();
    issued.key
}

/// Every endpoint, once per way of being refused, and what each key reaches.
async fn keys_reach_only_their_user(storage: StorageKind) {
    let Some((app, store)) = app_with_store(storage, with_admin).await else {
        return;
    };
    let alice = app.user_key("alice").await;
    let bob = app.user_key("bob").await;
    let expired = expired_key(&store, "alice").await;
    let revoked = app.user_key("alice").await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let response = app
        .as_key(
            Method::DELETE,
            &format!("/api/v1/keys/{revoked_id}"),
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let mine = app.session_as(&alice, "alice").await;
    let theirs = app.session_as(&bob, "bob").await;
    let admins = app.session_as(ADMIN, "carol").await;

    let chat = json!({"session_id": mine, "message": "hi"});
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/sessions".into(),
            Some(json!({"user_id": "alice"})),
        ),
        (Method::GET, "/api/v1/sessions".into(), None),
        (Method::GET, format!("/api/v1/sessions/{mine}"), None),
        (Method::DELETE, format!("/api/v1/sessions/{mine}"), None),
        (
            Method::POST,
            format!("/api/v1/sessions/{mine}/resume"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{mine}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/sessions/{mine}/compact"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/sessions/{mine}/interrupt"),
            None,
        ),
        (Method::POST, "/api/v1/chat".into(), Some(chat.clone())),
        (Method::POST, "/api/v1/chat/stream".into(), Some(chat)),
        (Method::GET, "/api/v1/skills?user_id=alice".into(), None),
        (Method::GET, "/api/v1/commands?user_id=alice".into(), None),
        (Method::GET, "/api/v1/usage".into(), None),
        (Method::GET, "/api/v1/keys".into(), None),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({"user_id": "alice"})),
        ),
        (Method::DELETE, format!("/api/v1/keys/{revoked_id}"), None),
        (Method::GET, "/no/such/route".into(), None),
    ];
    let flipped = if alice.ends_with('0') { '1' } else { '0' };
    let bad = format!("{}{flipped}", &alice[..alice.len() - 1]);
    for (method, path, body) in &endpoints {
        for key in [
            None,
            Some("not-a-key"),
            Some(bad.as_str()),
            Some(expired.as_str()),
            Some(revoked.as_str()),
        ] {
            let mut request = app.as_key(method.clone(), path, key);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {key:?}"
            );
            assert_refused(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    // x-api-key works as well as a bearer token; a refused key says why.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{mine}")))
        .header("x-api-key", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .as_key(Method::GET, "/api/v1/sessions", Some(&expired))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let response = app
        .as_key(Method::GET, "/api/v1/sessions", Some(&revoked))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );

    // Another user's session answers as if it did not exist, on every route.
    for (method, path) in [
        (Method::GET, format!("/api/v1/sessions/{theirs}")),
        (Method::DELETE, format!("/api/v1/sessions/{theirs}")),
        (Method::POST, format!("/api/v1/sessions/{theirs}/resume")),
        (Method::GET, format!("/api/v1/sessions/{theirs}/messages")),
        (Method::POST, format!("/api/v1/sessions/{theirs}/compact")),
        (Method::POST, format!("/api/v1/sessions/{theirs}/interrupt")),
        (
            Method::GET,
            format!("/api/v1/sessions/{}", theirs.to_uppercase()),
        ),
    ] {
        let response = app
            .as_key(method.clone(), &path, Some(&alice))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "session_not_found").await;
    }
    for path in ["/api/v1/chat", "/api/v1/chat/stream"] {
        let response = app
            .as_key(Method::POST, path, Some(&alice))
            .json(&json!({"session_id": theirs, "message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "session_not_found").await;
    }
    for path in ["/api/v1/skills?user_id=bob", "/api/v1/commands?user_id=bob"] {
        let response = app
            .as_key(Method::GET, path, Some(&alice))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app
        .as_key(Method::GET, "/api/v1/skills?user_id=alice", Some(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Making something for another user is forbidden, and makes nothing.
    let response = app
        .as_key(Method::POST, "/api/v1/sessions", Some(&alice))
        .json(&json!({"user_id": "bob"}))
        .send()
        .await
        .unwrap();
    assert_refused(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        app.ids_listed(ADMIN, Some("bob")).await,
        vec![theirs.clone()]
    );

    // Lists show a user key its own sessions only, however it asks.
    assert_eq!(app.ids_listed(&alice, None).await, vec![mine.clone()]);
    assert_eq!(
        app.ids_listed(&alice, Some("alice")).await,
        vec![mine.clone()]
    );
    assert!(app.ids_listed(&alice, Some("bob")).await.is_empty());
    assert!(app.ids_listed(&alice, Some("carol")).await.is_empty());
    assert_eq!(app.ids_listed(&bob, None).await, vec![theirs.clone()]);
    let all = app.ids_listed(ADMIN, None).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.contains(&admins));

    // Keys are for admins: a user key is forbidden, a listing shows no secret.
    for (method, path, body) in [
        (Method::GET, "/api/v1/keys".to_owned(), None),
        (
            Method::POST,
            "/api/v1/keys".to_owned(),
            Some(json!({"user_id": "alice"})),
        ),
        (Method::DELETE, format!("/api/v1/keys/{revoked_id}"), None),
    ] {
        let mut request = app.as_key(method, &path, Some(&alice));
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_refused(
            request.send().await.unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let response = app
        .as_key(Method::GET, "/api/v1/keys?user_id=alice", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let listed = response.text().await.unwrap();
    let secret = alice.rsplit('_').next().unwrap();
    assert!(!listed.contains(secret), "{listed}");
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let statuses: Vec<&str> = listed
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"active")
            && statuses.contains(&"expired")
            && statuses.contains(&"revoked")
    );
    let response = app
        .as_key(Method::DELETE, "/api/v1/keys/0123456789ab", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "key_not_found").await;
    for body in [
        json!({"user_id": "a/b"}),
        json!({"user_id": "alice", "expires": "soon"}),
        json!({"user_id": "alice", "name": ""}),
    ] {
        let response = app
            .as_key(Method::POST, "/api/v1/keys", Some(ADMIN))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let response = app
        .as_key(Method::GET, "/api/v1/keys", Some(ADMIN))
        .send()
        .await
        .unwrap();
    let keys: Vec<Value> = response.json().await.unwrap();
    assert_eq!(keys.len(), 4, "refused requests made no key: {keys:?}");

    // An admin reaches every user's sessions; a user key its own.
    let response = app
        .as_key(
            Method::GET,
            &format!("/api/v1/sessions/{theirs}"),
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .as_key(
            Method::DELETE,
            &format!("/api/v1/sessions/{mine}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .as_key(
            Method::GET,
            &format!("/api/v1/sessions/{theirs}"),
            Some(&bob),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Open endpoints stay open; /health tells strangers its status only.
    for path in ["/", "/openapi.json", "/docs/"] {
        let response = app.as_key(Method::GET, path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let response = app
        .as_key(Method::GET, "/health", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": "healthy"}));
    let response = app
        .as_key(Method::GET, "/health", Some("wrong"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": "healthy"}));
    let response = app
        .as_key(Method::GET, "/health", Some(ADMIN))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["active_sessions"].is_u64(), "{body}");
}
on_every_backend!(keys_reach_only_their_user, keys_reach_only_their_user);

/// A user key made with the store alone (no admin key configured) turns
/// authentication on; `api.auth: none` keeps it off; `api_key` without
/// any key refuses everyone.
async fn a_stored_key_turns_authentication_on(storage: StorageKind) {
    let Some((app, store)) = app_with_store(storage, |_| {}).await else {
        return;
    };
    // No key anywhere: exactly as without authentication.
    let open = app.new_session_id("alice").await;
    assert_eq!(app.ids_listed("ignored", None).await, vec![open.clone()]);
    let issued = claude_agent_http::auth::issue(UserId::parse("alice").unwrap(), None, None);
    store.insert_key(&issued.record).await.unwrap();
    wait_until_keys_are_required(&app).await;
    assert_eq!(app.ids_listed(&issued.key, None).await, vec![open]);

    let Some(off) = spawn_app_with(storage, |s| {
        with_admin(s);
        s.api.auth = Some(AuthMode::None);
    })
    .await
    else {
        return;
    };
    off.new_session_id("bob").await;
    let Some(on) = spawn_app_with(storage, |s| s.api.auth = Some(AuthMode::ApiKey)).await else {
        return;
    };
    assert_refused(
        on.list_sessions(None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}
on_every_backend!(
    a_stored_key_turns_authentication_on,
    a_stored_key_turns_authentication_on
);

/// Two instances on one PostgreSQL database: a key made on one works on the
/// other and its revocation too; the turn rate and the daily token quota
/// are counted once for both.
#[tokio::test]
async fn two_instances_share_keys_rates_and_quotas() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let db = fresh_db_name();
    let instance = |minute: u64, tokens: u64| {
        let tmp = test_dir();
        let mut settings = test_settings(tmp.path(), StorageKind::Postgresql);
        use_postgres(&mut settings, &db);
        point_at_fake(&mut settings, &fake.url());
        with_admin(&mut settings);
        settings.quotas.turns_per_minute = minute;
        settings.quotas.per_user_daily_tokens = tokens;
        (settings, tmp)
    };
    let (settings, tmp) = instance(2, 0);
    let one = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;
    let (mut settings, tmp) = instance(2, 0);
    settings.user.base_dir = one.settings.user.base_dir.clone();
    let two = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;

    // The rate is counted per clock minute: start early in one, so the
    // three turns below fall in the same window.
    let second = chrono::Timelike::second(&chrono::Utc::now());
    if second > 40 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
    let alice = one.user_key("alice").await;
    let session = two.session_as(&alice, "alice").await;
    let chat = |app: &TestApp, key: &str| {
        app.as_key(Method::POST, "/api/v1/chat", Some(key))
            .json(&json!({"session_id": session, "message": "hi"}))
            .send()
    };
    fake.push(Reply::text("one"));
    assert_eq!(chat(&one, &alice).await.unwrap().status(), StatusCode::OK);
    fake.push(Reply::text("two"));
    assert_eq!(chat(&two, &alice).await.unwrap().status(), StatusCode::OK);
    let third = chat(&one, &alice).await.unwrap();
    let retry = third
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    // Another key has its own rate; the admin's works on alice's session.
    fake.push(Reply::text("three"));
    assert_eq!(chat(&two, ADMIN).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        fake.requests().len(),
        3,
        "the refused turn made no model call"
    );

    // Usage per user and day, seen from either instance, by its owner only.
    let today = chrono::Utc::now().date_naive().to_string();
    let usage = |app: &TestApp, key: &str, query: &str| {
        app.as_key(Method::GET, &format!("/api/v1/usage{query}"), Some(key))
            .send()
    };
    let response = usage(&two, &alice, "").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let days: Vec<Value> = response.json().await.unwrap();
    assert_eq!(days.len(), 1, "{days:?}");
    assert_eq!(days[0]["user_id"], "alice");
    assert_eq!(days[0]["day"], today);
    assert_eq!(days[0]["turns"], 3);
    let spent = days[0]["tokens"].as_u64().unwrap();
    assert!(spent > 0, "{days:?}");
    let bob = two.user_key("bob").await;
    let days: Vec<Value> = usage(&one, &bob, "?user_id=alice")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(days.is_empty(), "{days:?}");
    let days: Vec<Value> = usage(
        &one,
        ADMIN,
        &format!("?user_id=alice&from={today}&to={today}"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(days.len(), 1);
    let response = usage(&one, ADMIN, "?from=yesterday").await.unwrap();
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // Revoked on one instance, refused on the other.
    let id = bob.split('_').nth(1).unwrap();
    let response = two
        .as_key(Method::DELETE, &format!("/api/v1/keys/{id}"), Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = one
        .as_key(Method::GET, "/api/v1/sessions", Some(&bob))
        .send()
        .await
        .unwrap();
    assert_refused(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // A third instance whose daily token quota alice's spending has reached.
    let (mut settings, tmp) = instance(0, spent);
    settings.user.base_dir = one.settings.user.base_dir.clone();
    let three = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;
    let response = chat(&three, &alice).await.unwrap();
    let retry = response
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body = assert_error(response, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("per_user_daily_tokens"),
        "{body}"
    );
    assert!(
        retry.is_some_and(|s| (1..=86_400).contains(&s)),
        "{retry:?}"
    );
    let response = three
        .as_key(Method::POST, "/api/v1/chat/stream", Some(&alice))
        .json(&json!({"session_id": session, "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    assert_eq!(fake.requests().len(), 3);
}

/// A daily dollar quota on one instance, on every backend.
async fn a_daily_dollar_quota_stops_the_next_turn(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let Some(app) = spawn_app_with(storage, move |s| {
        point_at_fake(s, &url);
        s.quotas.per_user_daily_usd = 0.000_001;
    })
    .await
    else {
        return;
    };
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("first"));
    assert_eq!(app.chat(&id, "hi").await.status(), StatusCode::OK);
    // A new session does not reset the user's day.
    let other = app.new_session_id("alice").await;
    app.delete_session(&id).await;
    let body = assert_error(
        app.chat(&other, "again").await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("per_user_daily_usd"),
        "{body}"
    );
    // Another user is not held back by alice's spending.
    let bob = app.new_session_id("bob").await;
    fake.push(Reply::text("bob's"));
    assert_eq!(app.chat(&bob, "hi").await.status(), StatusCode::OK);
    assert_eq!(fake.requests().len(), 2);
}
on_every_backend!(
    a_daily_dollar_quota_stops_the_next_turn,
    a_daily_dollar_quota_stops_the_next_turn
);

/// A web page of another origin gets no CORS permission by default; a listed
/// origin does, with the key headers allowed.
#[tokio::test]
async fn cross_origin_requests_are_refused_unless_the_origin_is_listed() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/v1/chat"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type, authorization",
            )
            .send()
    };
    let response = preflight(&app, "http://evil.example").await.unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let response = app
        .client
        .get(app.url("/api/v1/sessions"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let listed = spawn_app_with(StorageKind::Memory, |s| {
        s.api.cors_origins = vec!["http://app.example".into()];
    })
    .await
    .unwrap();
    let response = preflight(&listed, "http://app.example").await.unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-api-key"),
        "{allowed}"
    );
    let response = preflight(&listed, "http://evil.example").await.unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// `keys create`, `list` and `revoke` on the command line, against the
/// SQLite file a running instance uses.
#[tokio::test]
async fn the_keys_subcommands_manage_the_keys_an_instance_accepts() {
    let app = spawn_app(StorageKind::Sqlite).await.unwrap();
    let db = app.settings.session.sqlite_path.clone();
    let created = keys_command(
        &db,
        &[
            "create",
            "--user",
            "alice",
            "--name",
            "ci",
            "--expires",
            "30d",
        ],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("cah_"), "{key}");
    let id = key.split('_').nth(1).unwrap().to_owned();
    assert!(String::from_utf8_lossy(&created.stderr).contains(&id));

    let listed = keys_command(&db, &["list", "--user", "alice"]).await;
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("active") && listed.contains("ci"),
        "{listed}"
    );
    assert!(!listed.contains(key.rsplit('_').next().unwrap()));

    // The instance now needs a key, and takes this one.
    wait_until_keys_are_required(&app).await;
    app.session_as(&key, "alice").await;

    for bad in [
        &["create", "--user", "../etc"][..],
        &["create", "--user", "alice", "--expires", "forever"],
        &["revoke", "nosuchkey"],
    ] {
        let output = keys_command(&db, bad).await;
        assert!(!output.status.success(), "{bad:?}");
        assert!(output.stdout.is_empty(), "{bad:?}");
    }
    let usage = keys_command(&db, &["create"]).await;
    assert_eq!(
        usage.status.code(),
        Some(2),
        "clap refuses a missing --user"
    );

    let revoked = keys_command(&db, &["revoke", &id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let response = app
        .as_key(Method::GET, "/api/v1/sessions", Some(&key))
        .send()
        .await
        .unwrap();
    assert_refused(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let listed = keys_command(&db, &["list"]).await;
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("revoked"), "{listed}");

    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-agent-http"))
        .args(["keys", "--help"])
        .output()
        .await
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("create") && help.contains("revoke"), "{help}");
}

async fn keys_command(db: &Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-agent-http"))
            .arg("keys")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(db.parent().unwrap())
            .env("CLAUDE_AGENT_SESSION_STORAGE", "sqlite")
            .env("CLAUDE_AGENT_SESSION_SQLITE_PATH", db)
            .output(),
    )
    .await
    .expect("keys command within 60 s")
    .unwrap()
}

/// The binary with an admin key, listening on every interface: no warning
/// about running without authentication, one audit line per mutating
/// request naming the key id, and the key itself in no log line.
#[tokio::test]
async fn mutating_requests_are_audited_by_key_id_and_keys_quiet_the_warning() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let root = test_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-agent-http"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.path())
        .current_dir(root.path())
        .env("CLAUDE_AGENT_API_HOST", "0.0.0.0")
        .env("CLAUDE_AGENT_API_PORT", "0")
        .env("CLAUDE_AGENT_API_KEYS", format!("other-admin-key,{ADMIN}"))
        .env("CLAUDE_AGENT_SESSION_STORAGE", "memory")
        .env("CLAUDE_AGENT_USER_BASE_DIR", root.path().join("users"))
        .env("CLAUDE_AGENT_TOOLS_SANDBOX", "off")
        .env("CLAUDE_AGENT_LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log: Vec<String> = Vec::new();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line.clone());
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "listening" {
                assert_eq!(event["auth"], "api_key", "{event}");
                return event["port"].as_u64().unwrap();
            }
        }
        panic!("the service exited before listening: {log:?}");
    })
    .await
    .expect("the service listens within 30 s");
    assert!(
        !log.iter().any(|l| l.contains("LISTENING BEYOND LOOPBACK")),
        "{log:?}"
    );

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/sessions");
    let response = client
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let session: Value = response.json().await.unwrap();
    let refused = client
        .post(&url)
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let audits = tokio::time::timeout(Duration::from_secs(30), async {
        let mut audits = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line.clone());
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["target"] == "audit" {
                audits.push(event);
                if audits.len() == 2 {
                    return audits;
                }
            }
        }
        panic!("the service exited: {log:?}");
    })
    .await
    .expect("two audit lines within 30 s");
    let _ = child.kill().await;
    assert_eq!(audits[0]["key_id"], "admin-2", "{:?}", audits[0]);
    assert_eq!(audits[0]["user"], "alice");
    assert_eq!(audits[0]["action"], "POST /api/v1/sessions");
    assert_eq!(audits[0]["session_id"], session["session_id"]);
    assert_eq!(audits[0]["status"], 201);
    assert_eq!(audits[1]["key_id"], "-");
    assert_eq!(audits[1]["status"], 401);
    assert!(!log.iter().any(|l| l.contains(ADMIN)), "{log:?}");
}

/// The command line as Docker and scripts call it: `healthcheck` (also
/// against a service whose `/health` shows strangers its status only),
/// `--config`/`-c` before or after the command, usage errors exiting 2.
#[tokio::test]
async fn the_command_line_keeps_its_existing_commands() {
    let app = spawn_app_with(StorageKind::Memory, with_admin)
        .await
        .unwrap();
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let dir = test_dir();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("api:\n  host: 127.0.0.1\n  port: {port}\n"),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-agent-http"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .output()
    };
    let config = config.display().to_string();
    for args in [
        vec![
            "healthcheck".to_owned(),
            "--config".to_owned(),
            config.clone(),
        ],
        vec!["-c".to_owned(), config.clone(), "healthcheck".to_owned()],
    ] {
        let output = run(args.clone()).await.unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "healthy");
    }
    let missing = run(vec![
        "--config".into(),
        "/no/such.yaml".into(),
        "healthcheck".into(),
    ])
    .await
    .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let unknown = run(vec!["bogus".into()]).await.unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    let help = run(vec!["--help".into()]).await.unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for command in ["serve", "healthcheck", "keys"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(
        !help.contains("sandbox-exec"),
        "the internal helper stays out of the help"
    );
    let version = run(vec!["--version".into()]).await.unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("claude-agent-http {}", env!("CARGO_PKG_VERSION"))
    );
}
