//! `/api/v1/sessions/{id}/files/{path}`: a session's directory over HTTP.
//! Downloads (with ranges), listings, uploads and deletions, every path
//! opened beneath the session's directory handle by the workspace.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

use super::sessions::parse_session_id;
use super::{ApiQuery, AppState, rfc3339};
use crate::domain::SessionId;
use crate::error::{ApiError, ErrorBody};
use crate::workspace::{Access, EntryInfo, EntryKind, FileError, Workspace};

pub fn routes(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions/{session_id}/files", get(list_root))
        .route(
            "/api/v1/sessions/{session_id}/files/{*path}",
            get(download)
                .put(upload)
                .delete(remove)
                .layer(DefaultBodyLimit::max(max_upload_bytes)),
        )
}

/// A path inside a session's directory as a client names it: relative,
/// no `..`, no NUL. `.` and empty components are dropped; what is left is
/// only ever joined to the session's root and opened beneath its handle.
#[derive(Debug, Clone)]
pub struct SessionFilePath {
    shown: String,
    rel: PathBuf,
}

impl SessionFilePath {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        if raw.contains('\0') {
            return Err(ApiError::validation("path", "must not contain NUL"));
        }
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(ApiError::PathOutside(raw.to_owned()));
        }
        let mut rel = PathBuf::new();
        for component in Path::new(raw).components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(ApiError::PathOutside(raw.to_owned()));
                }
            }
        }
        Ok(Self {
            shown: raw.to_owned(),
            rel,
        })
    }

    /// The session's root itself.
    fn root() -> Self {
        Self {
            shown: String::new(),
            rel: PathBuf::new(),
        }
    }

    /// The path as the client gave it, for error details.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Where it lies beneath `workspace`'s root (absolute, not resolved:
    /// the kernel resolves it beneath the root's handle when it is opened).
    pub fn within(&self, workspace: &Workspace) -> PathBuf {
        workspace.root().join(&self.rel)
    }
}

/// `{session_id}` and `{*path}` of a files route. A session id that is not
/// a UUID is 404 like any unknown session; a path that does not decode to
/// UTF-8 is refused as a bad path.
pub struct FilesPath {
    session: SessionId,
    path: SessionFilePath,
}

impl<S: Send + Sync> FromRequestParts<S> for FilesPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::Path as UrlPath;
        let params =
            match UrlPath::<HashMap<String, String>>::from_request_parts(parts, state).await {
                Ok(UrlPath(params)) => params,
                Err(PathRejection::FailedToDeserializePathParams(e)) => {
                    return Err(match e.kind() {
                        axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key }
                            if key == "path" =>
                        {
                            ApiError::validation("path", "is not valid UTF-8 once percent-decoded")
                        }
                        _ => ApiError::SessionNotFound,
                    });
                }
                Err(other) => return Err(ApiError::Internal(other.body_text())),
            };
        let session = parse_session_id(params.get("session_id").map_or("", String::as_str))?;
        let path = match params.get("path") {
            Some(raw) => SessionFilePath::parse(raw)?,
            None => SessionFilePath::root(),
        };
        Ok(Self { session, path })
    }
}

/// A file's raw bytes, as uploaded and downloaded.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(pub Vec<u8>);

/// One entry of a directory listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` (shown as the link itself) or `other`
    /// (a FIFO, socket or device).
    #[schema(example = "file")]
    pub kind: &'static str,
    /// Bytes (for a symlink, of the link itself).
    pub size: u64,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub mtime: Option<DateTime<Utc>>,
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

impl From<EntryInfo> for FileEntry {
    fn from(e: EntryInfo) -> Self {
        Self {
            name: e.name,
            kind: match e.kind {
                EntryKind::File => "file",
                EntryKind::Dir => "dir",
                EntryKind::Symlink => "symlink",
                EntryKind::Other => "other",
            },
            size: e.size,
            mtime: e.modified.map(DateTime::<Utc>::from),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete a directory with everything in it.
    #[serde(default, deserialize_with = "bool_param")]
    #[param(value_type = Option<bool>)]
    pub recursive: bool,
}

fn bool_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(serde::de::Error::custom("must be true or false")),
    }
}

/// The workspace of a live session.
async fn session_workspace(state: &AppState, id: SessionId) -> Result<Workspace, ApiError> {
    let session = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    state.agent.workspace(&session).await
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("file task: {e}")))?
}

/// A workspace error as the client is told it: about the path it gave,
/// never the server's absolute path.
pub(super) fn file_error(path: &SessionFilePath, err: FileError) -> ApiError {
    let shown = path.shown().to_owned();
    match err {
        FileError::Escape(_) => ApiError::PathOutside(shown),
        FileError::NotFound(_) => ApiError::FileNotFound(shown),
        FileError::NotEmpty(_) => ApiError::DirectoryNotEmpty(shown),
        FileError::IsDirectory(_) => ApiError::validation("path", "is a directory, not a file"),
        FileError::NotRegular(_) => ApiError::validation(
            "path",
            "is not a regular file or directory (a FIFO, socket or device)",
        ),
        FileError::TooLarge { .. } => ApiError::validation("path", "is too large"),
        FileError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotADirectory => {
                ApiError::validation("path", "a component on the way is a file, not a directory")
            }
            std::io::ErrorKind::InvalidFilename => ApiError::validation(
                "path",
                "a component is too long for the file system (at most 255 bytes)",
            ),
            std::io::ErrorKind::PermissionDenied => ApiError::PathOutside(shown),
            _ => ApiError::Internal(format!("file access: {source}")),
        },
    }
}

/// List the session's directory
///
/// The entries of the session's working directory, sorted by name.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/files", tag = "files",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "The directory's entries", body = Vec<FileEntry>),
        (status = 404, description = "Unknown session (session_not_found)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_root(
    State(state): State<AppState>,
    FilesPath { session, path }: FilesPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_inner(state, session, path, headers).await
}

/// Download a file, or list a directory
///
/// A file comes with a content type guessed from its name, `ETag`,
/// `Last-Modified` and `Accept-Ranges: bytes`; a single `Range: bytes=a-b`
/// answers 206 with that part, one starting past the end 416. A directory
/// answers a JSON listing. Paths are relative to the session's directory;
/// `..`, absolute paths and symlinks leading out are refused.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/files/{path}", tag = "files",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("path" = String, Path, description = "File or directory, relative to the session's directory"),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=start-end`, `bytes=start-` or `bytes=-suffix`"),
    ),
    responses(
        (status = 200, description = "The file's bytes, or for a directory its listing (application/json)",
            content(
                (FileBytes = "application/octet-stream"),
                (Vec<FileEntry> = "application/json"),
            )),
        (status = 206, description = "The requested range of the file", content_type = "application/octet-stream", body = FileBytes),
        (status = 304, description = "If-None-Match matched the file's ETag"),
        (status = 403, description = "The path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown session, or nothing at this path (file_not_found)", body = ErrorBody),
        (status = 416, description = "The range starts past the end (range_not_satisfiable)", body = ErrorBody),
        (status = 422, description = "NUL in the path, or not a file or directory (FIFO, device)", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    FilesPath { session, path }: FilesPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_inner(state, session, path, headers).await
}

enum Found {
    File {
        file: std::fs::File,
        len: u64,
        modified: Option<SystemTime>,
    },
    Dir(Vec<FileEntry>),
}

async fn download_inner(
    state: AppState,
    session: SessionId,
    path: SessionFilePath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let workspace = session_workspace(&state, session).await?;
    let wanted = path.clone();
    let found = blocking(move || {
        let abs = wanted.within(&workspace);
        match workspace.open_file(&abs, Access::Read) {
            Ok(opened) => {
                let modified = opened.file.metadata().ok().and_then(|m| m.modified().ok());
                Ok(Found::File {
                    file: opened.file,
                    len: opened.len,
                    modified,
                })
            }
            Err(FileError::IsDirectory(_)) => workspace
                .list_entries(&abs)
                .map(|entries| Found::Dir(entries.into_iter().map(FileEntry::from).collect()))
                .map_err(|e| file_error(&wanted, e)),
            Err(e) => Err(file_error(&wanted, e)),
        }
    })
    .await?;
    match found {
        Found::Dir(entries) => Ok(Json(entries).into_response()),
        Found::File {
            file,
            len,
            modified,
        } => serve_file(&path, file, len, modified, &headers),
    }
}

/// A weak validator from the file's size and modification time.
fn etag(len: u64, modified: Option<SystemTime>) -> String {
    let nanos = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("W/\"{len:x}-{nanos:x}\"")
}

fn serve_file(
    path: &SessionFilePath,
    mut file: std::fs::File,
    len: u64,
    modified: Option<SystemTime>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let tag = etag(len, modified);
    let mut out = HeaderMap::new();
    let mime = mime_guess::from_path(path.shown()).first_or_octet_stream();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.essence_str())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A user's HTML or SVG must not run as the API's own origin.
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&tag) {
        out.insert(header::ETAG, value);
    }
    if let Some(modified) = modified
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified))
    {
        out.insert(header::LAST_MODIFIED, value);
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, count) = match range {
        None | Some(RangeAsked::Ignored) => (StatusCode::OK, 0, len),
        Some(RangeAsked::Unsatisfiable) => {
            let mut response = ApiError::RangeNotSatisfiable(len).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        Some(RangeAsked::Part { start, end }) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                out.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    file.seek(SeekFrom::Start(start)).map_err(|e| {
        file_error(
            path,
            FileError::Io {
                path: String::new(),
                source: e,
            },
        )
    })?;
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), count);
    Ok((status, out, Body::from_stream(ReaderStream::new(reader))).into_response())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// Not a single byte range this server serves: the whole file is sent,
    /// as RFC 9110 allows.
    Ignored,
    Unsatisfiable,
    /// Inclusive bounds, both inside the file.
    Part {
        start: u64,
        end: u64,
    },
}

/// Reads a `Range` header against a file of `len` bytes.
fn parse_range(value: &str, len: u64) -> RangeAsked {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsked::Ignored;
    };
    if spec.contains(',') {
        return RangeAsked::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsked::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last `suffix` bytes.
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeAsked::Ignored;
        };
        if suffix == 0 || len == 0 {
            return RangeAsked::Unsatisfiable;
        }
        return RangeAsked::Part {
            start: len.saturating_sub(suffix),
            end: len - 1,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeAsked::Ignored;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return RangeAsked::Ignored,
        }
    };
    if start >= len {
        return RangeAsked::Unsatisfiable;
    }
    RangeAsked::Part {
        start,
        end: end.min(len - 1),
    }
}

/// Upload a file
///
/// Writes the raw request body to the path (any content type), creating
/// missing parent directories: 201 when the file is new, 200 when it
/// replaced one. Bodies over `api.max_upload_bytes` are refused with 413
/// before anything is written. The agent's next tool call sees the file;
/// Edit and Write treat it as changed since the agent last read it.
#[utoipa::path(
    put, path = "/api/v1/sessions/{session_id}/files/{path}", tag = "files",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("path" = String, Path, description = "File to write, relative to the session's directory"),
    ),
    request_body(content = FileBytes, content_type = "application/octet-stream", description = "The file's bytes, as they are"),
    responses(
        (status = 200, description = "An existing file was replaced", body = FileEntry),
        (status = 201, description = "The file was created", body = FileEntry),
        (status = 403, description = "The path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown session", body = ErrorBody),
        (status = 413, description = "Body over api.max_upload_bytes (payload_too_large)", body = ErrorBody),
        (status = 422, description = "NUL in the path, a directory there, or a file on the way", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    FilesPath { session, path }: FilesPath,
    request: Request,
) -> Result<(StatusCode, Json<FileEntry>), ApiError> {
    let limit = state.settings.api.max_upload_bytes;
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::validation("body", rejection.body_text())
            }
        })?;
    let workspace = session_workspace(&state, session).await?;
    blocking(move || {
        let abs = path.within(&workspace);
        let Some(name) = abs.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Err(ApiError::validation("path", "must name a file"));
        };
        if let Some(parent) = abs.parent() {
            workspace
                .create_dirs(parent)
                .map_err(|e| file_error(&path, e))?;
        }
        let (mut file, created) = match workspace.open_file(&abs, Access::CreateNew) {
            Ok(opened) => (opened.file, true),
            Err(FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let opened = workspace
                    .open_file(&abs, Access::Write)
                    .map_err(|e| file_error(&path, e))?;
                (opened.file, false)
            }
            Err(e) => return Err(file_error(&path, e)),
        };
        let written = file
            .set_len(0)
            .and_then(|()| file.write_all(&body))
            .and_then(|()| file.flush());
        if let Err(source) = written {
            return Err(file_error(
                &path,
                FileError::Io {
                    path: String::new(),
                    source,
                },
            ));
        }
        let modified = file.metadata().ok().and_then(|m| m.modified().ok());
        let entry = FileEntry {
            name,
            kind: "file",
            size: body.len() as u64,
            mtime: modified.map(DateTime::<Utc>::from),
        };
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(entry)))
    })
    .await
}

/// Delete a file or directory
///
/// Removes a file, a symlink (not what it points at) or an empty
/// directory; a directory with entries needs `?recursive=true`.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{session_id}/files/{path}", tag = "files",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("path" = String, Path, description = "What to delete, relative to the session's directory"),
        DeleteQuery,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown session, or nothing at this path (file_not_found)", body = ErrorBody),
        (status = 409, description = "A directory that is not empty, without recursive=true (directory_not_empty)", body = ErrorBody),
        (status = 422, description = "NUL in the path, or a bad recursive value", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    FilesPath { session, path }: FilesPath,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let workspace = session_workspace(&state, session).await?;
    blocking(move || {
        let abs = path.within(&workspace);
        if abs == workspace.root() {
            return Err(ApiError::validation(
                "path",
                "must name something inside the session's directory, not the directory itself",
            ));
        }
        workspace
            .remove(&abs, query.recursive)
            .map_err(|e| file_error(&path, e))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let part = |start, end| RangeAsked::Part { start, end };
        assert_eq!(parse_range("bytes=0-3", 10), part(0, 3));
        assert_eq!(parse_range("bytes=4-", 10), part(4, 9));
        assert_eq!(parse_range("bytes=-3", 10), part(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), part(0, 9));
        assert_eq!(parse_range("bytes=5-100", 10), part(5, 9));
        assert_eq!(parse_range("bytes=10-", 10), RangeAsked::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), RangeAsked::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), RangeAsked::Ignored);
        assert_eq!(parse_range("items=0-1", 10), RangeAsked::Ignored);
        assert_eq!(parse_range("bytes=5-2", 10), RangeAsked::Ignored);
    }

    #[test]
    fn paths_stay_relative_and_inside() {
        let ok = SessionFilePath::parse("a/./b//c.txt").unwrap();
        assert_eq!(ok.rel, PathBuf::from("a/b/c.txt"));
        for outside in ["../x", "a/../../x", "/etc/passwd", "a/.."] {
            assert!(
                matches!(
                    SessionFilePath::parse(outside),
                    Err(ApiError::PathOutside(_))
                ),
                "{outside}"
            );
        }
        assert!(matches!(
            SessionFilePath::parse("a\0b"),
            Err(ApiError::Validation { .. })
        ));
    }
}
