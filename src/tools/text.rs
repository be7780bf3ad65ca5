//! Text shaping shared by the tools: cutting long output so a tool result
//! stays within what is useful to send back to the model.

/// Most characters a tool result carries; beyond this the middle is cut.
pub(crate) const MAX_OUTPUT_CHARS: usize = 30_000;

/// Keeps the first and last halves of `text` when it has more than `max`
/// characters; the start (what ran) and the end (how it ended) of a long
/// output matter most.
pub(crate) fn truncate_middle(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let head_chars = max / 2;
    let tail_chars = max - head_chars;
    let head_end = text
        .char_indices()
        .nth(head_chars)
        .map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(total - tail_chars)
        .map_or(text.len(), |(i, _)| i);
    join_cut(&text[..head_end], total - max, &text[tail_start..])
}

/// The marker left where characters were removed.
pub(crate) fn join_cut(head: &str, cut: usize, tail: &str) -> String {
    format!("{head}\n\n... [{cut} characters truncated] ...\n\n{tail}")
}

/// Cuts one line to `max` characters, saying so.
pub(crate) fn truncate_line(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        None => line.to_owned(),
        Some((end, _)) => format!("{}... [line truncated]", &line[..end]),
    }
}

/// Whether the start of a file looks binary: a NUL byte, or bytes that are
/// not UTF-8 (an incomplete character cut by the sample's end is fine).
pub(crate) fn looks_binary(sample: &[u8]) -> bool {
    if sample.contains(&0) {
        return true;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => false,
        Err(e) => e.error_len().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(truncate_middle("hello", 10), "hello");
    }

    #[test]
    fn long_text_keeps_both_ends() {
        let text = format!("{}{}{}", "a".repeat(10), "b".repeat(100), "c".repeat(10));
        let out = truncate_middle(&text, 20);
        assert!(out.starts_with(&"a".repeat(10)), "{out}");
        assert!(out.ends_with(&"c".repeat(10)), "{out}");
        assert!(out.contains("[100 characters truncated]"), "{out}");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "é".repeat(50);
        let out = truncate_middle(&text, 10);
        assert!(out.contains("[40 characters truncated]"));
        assert_eq!(truncate_line("ééé", 2), "éé... [line truncated]");
    }

    #[test]
    fn binary_detection() {
        assert!(looks_binary(b"abc\0def"));
        assert!(looks_binary(&[0xff, 0xfe, b'a']));
        assert!(!looks_binary("héllo".as_bytes()));
        // An é cut in half at the end of the sample is still text.
        assert!(!looks_binary(&"hé".as_bytes()[..2]));
    }
}
