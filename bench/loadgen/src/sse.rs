//! Incremental Server-Sent Events framing: feed chunks, get the `type` field
//! of each complete frame's JSON `data`.

use serde_json::Value;

#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// Appends a chunk and returns the `type` of every frame it completed
    /// (frames without JSON data, such as keep-alive comments, are skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut types = Vec::new();
        while let Some((end, sep)) = frame_end(&self.buf) {
            let frame: Vec<u8> = self.buf.drain(..end + sep).collect();
            if let Some(kind) = frame_type(&frame[..end]) {
                types.push(kind);
            }
        }
        types
    }
}

/// Where the first complete frame ends, and the separator's length.
fn frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn frame_type(frame: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?;
    let data: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    if data.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_str(&data).ok()?;
    value.get("type")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks() {
        let mut f = Frames::default();
        assert!(f.push(b"event: ping\ndata: {\"type\":\"pi").is_empty());
        assert_eq!(
            f.push(
                b"ng\"}\n\n: keep-alive\n\nid: 1\ndata: {\"type\":\"text_delta\"}\n\ndata: {\"ty"
            ),
            vec!["ping", "text_delta"]
        );
        assert_eq!(f.push(b"pe\":\"done\"}\r\n\r\n"), vec!["done"]);
    }
}
