//! `/health` notices when the runtime's blocking threads are all taken, as a
//! flood of stuck file operations would leave them.

use claude_agent_http::config::StorageKind;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const BLOCKING_THREADS: usize = 4;

#[test]
fn health_is_unhealthy_while_every_blocking_thread_is_stuck() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = spawn_app(StorageKind::Sqlite).await.unwrap();
        assert_eq!(app.health().await.status(), StatusCode::OK);

        // Every blocking thread waits on its own release.
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut releases = Vec::new();
        let mut holders = Vec::new();
        for _ in 0..BLOCKING_THREADS {
            let (release, stuck) = std::sync::mpsc::channel::<()>();
            let started_tx = started_tx.clone();
            releases.push(release);
            holders.push(tokio::task::spawn_blocking(move || {
                let _ = started_tx.send(());
                let _ = stuck.recv();
            }));
        }
        for _ in 0..BLOCKING_THREADS {
            started.recv().await.unwrap();
        }

        let response = app.health().await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert!(
            body["error"].as_str().unwrap().contains("blocking thread"),
            "{body}"
        );

        for release in releases {
            release.send(()).unwrap();
        }
        for holder in holders {
            holder.await.unwrap();
        }
        assert_eq!(app.health().await.status(), StatusCode::OK);
        app.stop().await;
    });
}
