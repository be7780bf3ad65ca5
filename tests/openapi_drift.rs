//! The committed `docs/openapi.json` is the API's published contract: it must
//! match what the binary serves. Regenerate with `UPDATE_OPENAPI=1 cargo test
//! --test openapi_drift` after an intended API change.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    let generated = claude_agent_http::api::openapi()
        .to_pretty_json()
        .expect("OpenAPI document serialises");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{generated}\n")).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).expect("docs/openapi.json exists");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test openapi_drift` and commit it"
    );
}
