//! Builds the application from settings (store, router, middleware, background
//! sweeps), binds its listener and runs it until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::agent::anthropic::{AnthropicClient, AnthropicConfig};
use crate::agent::model::ModelClient;
use crate::agent::turn::Agent;
use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::mcp::McpHub;
use crate::metrics;
use crate::sandbox::Sandbox;
use crate::serve::{ConnectionLimits, Server};
use crate::skills::{self, SkillSource};
use crate::store::{self, DynStore};
use crate::tools::agent::AgentTools;
use crate::tools::web_fetch::WebTools;
use crate::tools::{BuiltinTools, ToolPolicy, ToolRegistry};

/// After the turns have ended at shutdown, how long their connections get to
/// send what is left before they are dropped.
const CONNECTION_DRAIN: Duration = Duration::from_secs(1);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    state: AppState,
}

impl Application {
    /// Opens the store (running migrations) and binds `api.host:api.port`
    /// (port 0 picks a free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.session.storage == crate::config::StorageKind::Sqlite {
            // A command running as the service's user may have removed the
            // service's access to its own database; it would not start.
            let db = &settings.session.sqlite_path;
            for path in db.parent().into_iter().chain([db.as_path()]) {
                crate::workspace::restore_owner_access(path);
            }
        }
        let store = store::open(&settings).await?;
        Self::build_with_store(settings, store).await
    }

    pub async fn build_with_store(settings: Settings, store: DynStore) -> anyhow::Result<Self> {
        metrics::install();
        // Every write, the agent's included, goes through the tracker /health reads.
        let store = store::WriteTracked::wrap(store);
        let addr = format!("{}:{}", settings.api.host, settings.api.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let port = listener.local_addr()?.port();
        let settings = Arc::new(settings);
        let skills = Arc::new(SkillSource::new(
            skills::home_dir(),
            settings.defaults.setting_sources.clone(),
            settings.plugins.clone(),
        ));
        let sandbox = Sandbox::from_settings(&settings).await?;
        let project_servers = settings.mcp.project_servers == crate::config::ProjectServers::Allow
            && settings
                .defaults
                .setting_sources
                .contains(&crate::skills::SettingSource::Project);
        let mcp = Arc::new(
            McpHub::from_config(&settings.mcp_servers, &settings.plugins)
                .with_session_servers(sandbox.clone(), project_servers),
        );
        let user_ids = sandbox.user_ids();
        let model = model_client(&settings)?;
        let policy = tool_policy(&settings)?.with_hook_sandbox(sandbox.clone());
        let tools = ToolRegistry::with_builtin_tools(
            BuiltinTools::with_sandbox(sandbox, settings.tools.max_file_bytes)
                .with_todos(store.clone())
                .with_questions(),
        )
        .with_source(Arc::new(WebTools::new(&settings, model.clone())))
        .with_source(Arc::new(AgentTools::new(&settings)))
        .with_source(skills.clone())
        .with_source(mcp.clone());
        let agent = Arc::new(
            Agent::new(
                store.clone(),
                settings.clone(),
                model,
                Arc::new(tools),
                policy,
            )
            .with_user_ids(user_ids),
        );
        let auth = Arc::new(Authenticator::new(&settings.api));
        let state = AppState {
            auth,
            settings,
            store,
            agent,
            skills,
            mcp,
            started: Instant::now(),
        };
        let router = with_middleware(api::router(state.clone()), &state.settings);
        Ok(Self {
            listener,
            port,
            router,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or SIGINT, letting in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, letting in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_expired(self.state.clone()));
        let limits = ConnectionLimits::from_settings(&self.state.settings.api);
        let auth = match self.state.auth.required(self.state.store.as_ref()).await {
            Ok(true) => {
                if matches!(
                    self.state.auth.any_key(self.state.store.as_ref()).await,
                    Ok(false)
                ) {
                    tracing::warn!(
                        "api.auth is api_key but no key exists: every request but /health and the docs is refused until CLAUDE_AGENT_API_KEYS is set or `claude-agent-http keys create` makes one"
                    );
                }
                "api_key"
            }
            Ok(false) => {
                warn_unless_loopback(&self.listener);
                "none"
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot tell whether API keys exist yet");
                "unknown"
            }
        };
        let address = self
            .listener
            .local_addr()
            .map_or_else(|_| format!("port {}", self.port), |a| a.to_string());
        tracing::info!(
            %address,
            port = self.port,
            storage = self.state.store.kind().as_str(),
            auth,
            max_connections = limits.max_connections,
            "listening"
        );
        let server = Server::start(self.listener, self.router, limits);
        shutdown.await;
        server.close();
        // The grace runs while connections drain, not after: a request
        // waiting on a turn only ends when the turn does.
        let grace = Duration::from_secs(self.state.settings.api.shutdown_grace_secs);
        let turns = self.state.agent.shutdown(grace);
        tokio::pin!(turns);
        let all_closed = tokio::select! {
            () = server.closed() => true,
            () = &mut turns => false,
        };
        if all_closed {
            turns.await;
        } else {
            // Cancelled turns' last frames and answers still have to go out.
            let _ = tokio::time::timeout(CONNECTION_DRAIN, server.closed()).await;
        }
        server.abandon().await;
        sweeper.abort();
        self.state.mcp.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Without authentication whoever reaches the port can read every session
/// and run commands in every user's directory, so listening beyond loopback
/// that way must be a choice someone sees.
fn warn_unless_loopback(listener: &TcpListener) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    if !addr.ip().is_loopback() {
        tracing::warn!(
            address = %addr,
            "LISTENING BEYOND LOOPBACK WITHOUT AUTHENTICATION: anyone who can reach this port can read every session and run commands as this service's user; set an admin key (CLAUDE_AGENT_API_KEYS), or api.host (CLAUDE_AGENT_API_HOST) to 127.0.0.1, or keep the port behind a firewall or an authenticating gateway (api.auth: none)"
        );
    }
}

/// The model client, or `None` when no key or token is configured: the
/// service still serves sessions and answers chat with 503.
fn model_client(settings: &Settings) -> anyhow::Result<Option<Arc<dyn ModelClient>>> {
    let anthropic = &settings.anthropic;
    if !anthropic.is_configured() {
        tracing::warn!(
            "neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN is set; chat answers 503 until one is"
        );
        return Ok(None);
    }
    let client = AnthropicClient::new(AnthropicConfig {
        base_url: anthropic.base_url.clone(),
        api_key: anthropic.api_key.secret(),
        auth_token: anthropic.auth_token.secret(),
        max_retries: anthropic.max_retries,
        connect_timeout: Duration::from_secs(anthropic.connect_timeout_secs),
        request_timeout: Duration::from_secs(anthropic.request_timeout_secs),
    })
    .map_err(|e| anyhow::anyhow!("model client: {e}"))?;
    Ok(Some(Arc::new(client)))
}

fn tool_policy(settings: &Settings) -> anyhow::Result<ToolPolicy> {
    // Settings::validate has already checked the mode.
    ToolPolicy::from_config(&settings.defaults, settings.user.claude_home())
        .map_err(|e| anyhow::anyhow!("defaults.permission_mode: {e}"))
}

fn with_middleware(router: Router, settings: &Settings) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            // The route template, not the raw path, keeps span fields low-cardinality.
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!(
                "request",
                method = %request.method(),
                route,
                request_id,
            )
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    let router = router
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(DefaultBodyLimit::max(settings.api.max_body_bytes));
    // Outside authentication: a browser's preflight carries no key.
    let router = match cors(&settings.api.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Cross-origin access for the listed origins only; `None` (no CORS headers
/// at all, so browsers refuse other origins' pages) when none are listed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        // Named, not `*`: a wildcard does not cover `Authorization`.
        .allow_headers([
            CONTENT_TYPE,
            AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([REQUEST_ID, RETRY_AFTER]);
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(layer.allow_origin(AllowOrigin::list(list)))
}

/// Deletes expired sessions periodically, so idle rows do not pile up.
async fn sweep_expired(state: AppState) {
    let Some(ttl) = state.settings.session_ttl() else {
        return;
    };
    let every = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match state.store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "expired sessions deleted"),
            Err(err) => tracing::warn!(error = %err, "expiry sweep failed"),
        }
        state.agent.reap_background().await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
