//! Images and PDFs: attached to a chat message (inline or by path) and read
//! by the Read tool, as the blocks the model receives and the messages the
//! session stores; bad attachments refused with nothing stored.

use std::path::{Path, PathBuf};

use base64::Engine;
use claude_agent_http::config::{Settings, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;
use crate::on_every_backend;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().unwrap())
        .unwrap()
}

/// A PNG of `width` x `height` with varied pixels (so it does not
/// compress to nothing).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x.wrapping_mul(7) ^ y) as u8,
            (y.wrapping_mul(13)) as u8,
            (x ^ y.wrapping_mul(3)) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PDF of `pages` pages, page n saying "Page n".
pub fn pdf(pages: u32) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids = Vec::new();
    for n in 1..=pages {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 24.into()]),
                Operation::new("Td", vec![100.into(), 600.into()]),
                Operation::new("Tj", vec![Object::string_literal(format!("Page {n}"))]),
                Operation::new("ET", vec![]),
            ],
        };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => pages,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn pages_of(bytes: &[u8]) -> usize {
    lopdf::Document::load_mem(bytes).unwrap().get_pages().len()
}

async fn app_with(
    fake: &FakeAnthropic,
    storage: StorageKind,
    adjust: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let url = fake.url();
    spawn_app_with(storage, move |s| {
        point_at_fake(s, &url);
        adjust(s);
    })
    .await
}

async fn attachments_reach_the_model_and_are_stored(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = app_with(&fake, storage, |_| {}).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());
    let screenshot = png(64, 32);
    std::fs::create_dir_all(cwd.join("shots")).unwrap();
    std::fs::write(cwd.join("shots/login.png"), &screenshot).unwrap();
    let spec = pdf(2);

    fake.push(Reply::text("A login form and a two-page spec."));
    let response = app
        .chat_with(json!({
            "session_id": id,
            "message": "What do you see?",
            "attachments": [
                {"type": "image", "path": "shots/login.png"},
                {"type": "document", "media_type": "application/pdf", "data": b64(&spec), "title": "Spec"},
            ],
        }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let sent = fake.requests()[0].body["messages"][0]["content"].clone();
    assert_eq!(sent[0]["type"], "image", "{sent}");
    assert_eq!(sent[0]["source"]["type"], "base64");
    assert_eq!(sent[0]["source"]["media_type"], "image/png");
    assert_eq!(unb64(&sent[0]["source"]["data"]), screenshot);
    assert_eq!(sent[1]["type"], "document");
    assert_eq!(sent[1]["source"]["media_type"], "application/pdf");
    assert_eq!(sent[1]["title"], "Spec");
    assert_eq!(unb64(&sent[1]["source"]["data"]), spec);
    assert_eq!(sent[2]["text"], "What do you see?");

    let stored: Value = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &stored[0]["content"];
    assert_eq!(first[0]["type"], "image");
    assert_eq!(unb64(&first[0]["source"]["data"]), screenshot);
    assert_eq!(first[1]["type"], "document");
    assert_eq!(first[2]["text"], "What do you see?");

    // The next turn sends them again, as part of the history.
    fake.push(Reply::text("Still there."));
    assert_eq!(app.chat(id, "and now?").await.status(), StatusCode::OK);
    let again = &fake.requests()[1].body["messages"][0]["content"];
    assert_eq!(again[0]["type"], "image");
    app.stop().await;
}

on_every_backend!(
    attachments_round_trip,
    attachments_reach_the_model_and_are_stored
);

#[tokio::test]
async fn bad_attachments_are_refused_and_nothing_is_stored() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, StorageKind::Sqlite, |s| {
        s.api.max_attachments = 2;
        s.api.max_image_bytes = 4096;
    })
    .await
    .unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());
    let bob = app.new_session("bob").await;
    std::fs::write(
        Path::new(bob["cwd"].as_str().unwrap()).join("bob.png"),
        png(4, 4),
    )
    .unwrap();
    std::fs::write(cwd.join("notes.txt"), "plain text").unwrap();
    let small = b64(&png(4, 4));
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!([{"type": "image", "data": "@@not base64@@"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "media_type": "image/jpeg", "data": small}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "media_type": "image/bmp", "data": small}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "data": b64(b"just some text")}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "data": b64(&pdf(1))}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "document", "data": small}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "document", "data": b64(b"%PDF-1.4 and nothing else")}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "data": small, "path": "a.png"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "video", "data": small}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "path": "notes.txt"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "path": "missing.png"}]),
            StatusCode::NOT_FOUND,
            "file_not_found",
        ),
        (
            json!([{"type": "image", "path": "../bob/bob.png"}]),
            StatusCode::FORBIDDEN,
            "path_outside_session",
        ),
        (
            json!([{"type": "image", "path": "/etc/hostname"}]),
            StatusCode::FORBIDDEN,
            "path_outside_session",
        ),
        (
            json!([{"type": "image", "data": small}, {"type": "image", "data": small}, {"type": "image", "data": small}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"type": "image", "data": b64(&png(200, 200))}]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (attachments, status, code) in cases {
        for path in ["/api/v1/chat", "/api/v1/chat/stream"] {
            let response = app
                .client
                .post(app.url(path))
                .json(&json!({"session_id": id, "message": "look", "attachments": attachments}))
                .send()
                .await
                .unwrap();
            let body = assert_error(response, status, code).await;
            assert!(
                !body["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&app.root.display().to_string()),
                "{body}"
            );
        }
    }
    assert!(fake.requests().is_empty(), "nothing reached the model");
    let stored: Value = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored, json!([]));
    let session: Value = app.get_session(id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 0);
    app.stop().await;
}

/// The tool_result blocks in the last request the fake received.
fn last_results(fake: &FakeAnthropic) -> Vec<Value> {
    let requests = fake.requests();
    let messages = requests.last().unwrap().body["messages"]
        .as_array()
        .unwrap()
        .clone();
    messages
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .collect()
}

#[tokio::test]
async fn read_shows_images_and_pdf_pages_to_the_model() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, StorageKind::Sqlite, |_| {}).await.unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());
    let small = png(80, 40);
    std::fs::write(cwd.join("small.png"), &small).unwrap();
    std::fs::write(cwd.join("wide.png"), png(3200, 800)).unwrap();
    std::fs::write(cwd.join("short.pdf"), pdf(3)).unwrap();
    std::fs::write(cwd.join("long.pdf"), pdf(12)).unwrap();
    std::fs::write(cwd.join("broken.pdf"), b"%PDF-1.7\nnot really").unwrap();

    fake.push(Reply::tool_use("Read", json!({"file_path": "small.png"})));
    fake.push(Reply::tool_use("Read", json!({"file_path": "wide.png"})));
    fake.push(Reply::tool_use("Read", json!({"file_path": "short.pdf"})));
    fake.push(Reply::tool_use("Read", json!({"file_path": "long.pdf"})));
    fake.push(Reply::tool_use(
        "Read",
        json!({"file_path": "long.pdf", "pages": "4-6"}),
    ));
    fake.push(Reply::tool_use("Read", json!({"file_path": "broken.pdf"})));
    fake.push(Reply::text("Seen them all."));
    let response = app.chat(id, "look at the files").await;
    assert_eq!(response.status(), StatusCode::OK);

    let results = last_results(&fake);
    assert_eq!(results.len(), 6);
    // An image small enough goes as it is.
    let blocks = results[0]["content"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "text");
    assert!(
        blocks[0]["text"].as_str().unwrap().contains("80x40"),
        "{blocks:?}"
    );
    assert_eq!(blocks[1]["type"], "image");
    assert_eq!(blocks[1]["source"]["media_type"], "image/png");
    assert_eq!(unb64(&blocks[1]["source"]["data"]), small);
    // A large one is scaled down.
    let blocks = results[1]["content"].as_array().unwrap();
    assert!(
        blocks[0]["text"]
            .as_str()
            .unwrap()
            .contains("scaled down to 1568x392"),
        "{blocks:?}"
    );
    let sent = unb64(&blocks[1]["source"]["data"]);
    assert_eq!(blocks[1]["source"]["media_type"], "image/jpeg");
    let decoded = image::load_from_memory(&sent).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (1568, 392));
    // A short PDF whole; a long one only with pages.
    let blocks = results[2]["content"].as_array().unwrap();
    assert_eq!(blocks[1]["type"], "document");
    assert_eq!(pages_of(&unb64(&blocks[1]["source"]["data"])), 3);
    assert_eq!(results[3]["is_error"], true);
    assert!(
        results[3]["content"].as_str().unwrap().contains("12 pages"),
        "{}",
        results[3]
    );
    let blocks = results[4]["content"].as_array().unwrap();
    assert!(
        blocks[0]["text"]
            .as_str()
            .unwrap()
            .contains("pages 4-6 of 12"),
        "{blocks:?}"
    );
    let part = unb64(&blocks[1]["source"]["data"]);
    assert_eq!(pages_of(&part), 3);
    let text = String::from_utf8_lossy(&part).into_owned();
    assert!(
        text.contains("Page 4") && text.contains("Page 6") && !text.contains("Page 7"),
        "the right pages"
    );
    // A file that only starts like a PDF is an error result, not a block
    // the API would refuse along with the whole request.
    assert_eq!(results[5]["is_error"], true, "{}", results[5]);
    assert!(
        results[5]["content"]
            .as_str()
            .unwrap()
            .contains("cannot be read as a PDF")
    );
    app.stop().await;
}

#[tokio::test]
async fn chat_bodies_have_room_for_attachments_and_no_more() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, StorageKind::Memory, |s| {
        s.api.max_body_bytes = 1024;
        s.api.max_attachments_bytes = 3072;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    let mut image = png(8, 8);
    // Zero bytes after IEND keep it a valid PNG of 8x8, 2 KiB in all.
    image.resize(2048, 0);
    fake.push(Reply::text("a tiny image"));
    let fits = app
        .chat_with(json!({"session_id": id, "message": "see", "attachments": [{"type": "image", "data": b64(&image)}]}))
        .await;
    assert_eq!(
        fits.status(),
        StatusCode::OK,
        "over max_body_bytes, within the attachments' room"
    );
    let limit = 1024 + 4096;
    let over = app
        .chat_with(json!({"session_id": id, "message": "x".repeat(limit)}))
        .await;
    let body = assert_error(over, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&limit.to_string()),
        "{body}"
    );
    app.stop().await;
}
