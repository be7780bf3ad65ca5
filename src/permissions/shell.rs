//! Shell commands as permission rules see them: split into the simple
//! commands they run (quote-aware), with wrappers, assignments and
//! redirections taken apart, and Claude Code's `Bash(...)` patterns.

/// Commands longer than this are never approved by an allow rule: nobody
/// reviews a rule against ten thousand characters of shell.
pub const MAX_ALLOWED_COMMAND_CHARS: usize = 10_000;

/// How deep command substitutions, `bash -c` and `eval` are followed.
const MAX_DEPTH: usize = 8;

/// Variables an allow rule looks past (`NO_COLOR=1 npm test` is still
/// `npm test`): they change how a program prints or builds, never which
/// program runs or what it loads.
const SAFE_ENV: &[&str] = &[
    "CI",
    "CLICOLOR",
    "COLUMNS",
    "DEBUG",
    "FORCE_COLOR",
    "GOARCH",
    "GOOS",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_COLLATE",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LINES",
    "NODE_ENV",
    "NO_COLOR",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "TERM",
    "TZ",
];

/// Programs that run another command a prefix rule must not cover: a rule
/// `Bash(watch *)` would otherwise approve whatever `watch` is given.
const EXEC_WRAPPERS: &[&str] = &["watch", "setsid", "ionice", "flock"];

/// Shells whose `-c` argument is a command line of its own.
const SHELLS: &[&str] = &["bash", "sh", "zsh", "dash", "ksh"];

/// Words that open or close a compound command; what follows `then` or
/// `do` is the command that runs.
const OPENING_WORDS: &[&str] = &[
    "!", "if", "then", "elif", "else", "do", "while", "until", "{",
];
const CLOSING_WORDS: &[&str] = &["fi", "done", "esac", "}"];

/// A command line taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedCommand {
    /// Every simple command, those inside `$(...)`, backticks, `bash -c`
    /// and `eval` included, in the order they appear.
    pub parts: Vec<Part>,
    /// Files read through `<` redirections, as written (quotes removed).
    pub reads: Vec<String>,
    /// Files written through `>`, `>>`, `&>` and similar redirections.
    pub writes: Vec<String>,
    /// False when a quote, substitution or here-document is left open:
    /// such a command never counts as approved.
    pub complete: bool,
    pub too_long: bool,
}

/// One simple command: its words as written (quotes kept), without the
/// redirections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    words: Vec<String>,
}

impl Part {
    /// The command as one line, words separated by single spaces.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The forms a deny or ask rule is tried against: as written, then
    /// past every leading assignment and every wrapper, one at a time.
    pub fn deny_forms(&self) -> Vec<String> {
        self.forms(false).0
    }

    /// The forms an allow rule is tried against (only safe assignments and
    /// plain wrappers are looked past), and whether the command runs
    /// another program in a way only an exact rule may approve.
    pub fn allow_forms(&self) -> (Vec<String>, bool) {
        self.forms(true)
    }

    fn forms(&self, for_allow: bool) -> (Vec<String>, bool) {
        let mut forms = Vec::new();
        let words = peel(&self.words, for_allow, |w| {
            forms.push(w.join(" "));
            // `\rm`, `'rm'` and `/bin/rm` run rm too; a deny rule sees that.
            if !for_allow && let Some(first) = w.first() {
                let bare = unquote(first);
                let program = bare.rsplit('/').next().unwrap_or(&bare);
                if program != first && !program.is_empty() {
                    let mut plain = vec![program.to_owned()];
                    plain.extend(w[1..].iter().cloned());
                    forms.push(plain.join(" "));
                }
            }
        });
        let restricted = runs_other_program(words);
        forms.dedup();
        (forms, restricted)
    }
}

/// Takes `command` apart.
pub fn parse(command: &str) -> ParsedCommand {
    let mut out = ParsedCommand {
        complete: true,
        too_long: command.chars().count() > MAX_ALLOWED_COMMAND_CHARS,
        ..ParsedCommand::default()
    };
    scan(command, 0, &mut out);
    out
}

/// What a redirection's next word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Read,
    Write,
    /// `>&` / `<&`: a file descriptor, or (`>&file`) a file written.
    Duplicate,
    HereDoc {
        strip_tabs: bool,
    },
    HereString,
}

struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    out: &'a mut ParsedCommand,
    words: Vec<String>,
    word: String,
    /// Whether the current word has begun (an empty quoted word counts).
    in_word: bool,
    pending: Option<Pending>,
    /// Here-document delimiters whose bodies start after the next newline.
    heredocs: Vec<(String, bool, bool)>,
}

fn scan(text: &str, depth: usize, out: &mut ParsedCommand) {
    if depth > MAX_DEPTH {
        out.complete = false;
        return;
    }
    let mut scanner = Scanner {
        chars: text.chars().collect(),
        pos: 0,
        depth,
        out,
        words: Vec::new(),
        word: String::new(),
        in_word: false,
        pending: None,
        heredocs: Vec::new(),
    };
    scanner.run();
}

impl Scanner<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\r' => {
                    self.end_word();
                    self.pos += 1;
                }
                '\n' => {
                    self.end_part();
                    self.pos += 1;
                    self.skip_heredoc_bodies();
                }
                '#' if !self.in_word => self.skip_comment(),
                // A line continuation joins two lines, even inside a word.
                '\\' if self.peek(1) == Some('\n') => self.pos += 2,
                ';' => {
                    self.end_part();
                    self.pos += 1;
                }
                '&' => {
                    if self.peek(1) == Some('>') {
                        self.redirect_operator();
                    } else {
                        self.end_part();
                        self.pos += if self.peek(1) == Some('&') { 2 } else { 1 };
                    }
                }
                '|' => {
                    self.end_part();
                    self.pos += if matches!(self.peek(1), Some('|' | '&')) {
                        2
                    } else {
                        1
                    };
                }
                '(' | ')' => {
                    self.end_part();
                    self.pos += 1;
                }
                '<' | '>' if self.peek(1) == Some('(') && !self.in_word => {
                    // Process substitution: a command of its own.
                    self.in_word = true;
                    self.word.push(c);
                    self.pos += 1;
                    self.substitution(')');
                }
                '<' | '>' => self.redirect_operator(),
                _ => self.word_char(c),
            }
        }
        self.end_part();
        if !self.heredocs.is_empty() {
            self.out.complete = false;
        }
    }

    /// A character inside a word: quotes, escapes and substitutions.
    fn word_char(&mut self, c: char) {
        self.in_word = true;
        match c {
            '\'' => {
                self.word.push(c);
                self.pos += 1;
                loop {
                    match self.peek(0) {
                        Some('\'') => {
                            self.word.push('\'');
                            self.pos += 1;
                            break;
                        }
                        Some(ch) => {
                            self.word.push(ch);
                            self.pos += 1;
                        }
                        None => {
                            self.out.complete = false;
                            break;
                        }
                    }
                }
            }
            '"' => {
                self.word.push(c);
                self.pos += 1;
                loop {
                    match self.peek(0) {
                        Some('"') => {
                            self.word.push('"');
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => {
                            self.word.push('\\');
                            self.pos += 1;
                            if let Some(next) = self.peek(0) {
                                self.word.push(next);
                                self.pos += 1;
                            }
                        }
                        Some('$') if self.peek(1) == Some('(') => self.dollar(),
                        Some('`') => self.backticks(),
                        Some(ch) => {
                            self.word.push(ch);
                            self.pos += 1;
                        }
                        None => {
                            self.out.complete = false;
                            break;
                        }
                    }
                }
            }
            '\\' => {
                self.pos += 1;
                match self.peek(0) {
                    Some(next) => {
                        self.word.push('\\');
                        self.word.push(next);
                        self.pos += 1;
                    }
                    None => self.word.push('\\'),
                }
            }
            '$' if self.peek(1) == Some('(') => self.dollar(),
            '$' if self.peek(1) == Some('{') => {
                self.word.push('$');
                self.pos += 1;
                self.balanced('{', '}');
            }
            '`' => self.backticks(),
            _ => {
                self.word.push(c);
                self.pos += 1;
            }
        }
    }

    /// `$(...)` (a command) or `$((...))` (arithmetic, kept as text).
    fn dollar(&mut self) {
        self.word.push('$');
        self.pos += 1;
        if self.peek(1) == Some('(') {
            self.balanced('(', ')');
        } else {
            self.substitution(')');
        }
    }

    /// Copies a bracketed span into the word without looking inside.
    fn balanced(&mut self, open: char, close: char) {
        let mut level = 0usize;
        while let Some(ch) = self.peek(0) {
            self.word.push(ch);
            self.pos += 1;
            if ch == open {
                level += 1;
            } else if ch == close {
                level -= 1;
                if level == 0 {
                    return;
                }
            }
        }
        self.out.complete = false;
    }

    /// At an opening `(`: copies the substitution into the word and scans
    /// what it runs as commands of their own.
    fn substitution(&mut self, close: char) {
        let start = self.pos + 1;
        let Some(end) = matching_paren(&self.chars, self.pos) else {
            self.out.complete = false;
            let rest: String = self.chars[self.pos..].iter().collect();
            self.word.push_str(&rest);
            self.pos = self.chars.len();
            return;
        };
        let inner: String = self.chars[start..end].iter().collect();
        let whole: String = self.chars[self.pos..=end].iter().collect();
        self.word.push_str(&whole);
        self.pos = end + 1;
        debug_assert_eq!(self.chars[end], close);
        scan(&inner, self.depth + 1, self.out);
    }

    fn backticks(&mut self) {
        self.word.push('`');
        self.pos += 1;
        let mut inner = String::new();
        loop {
            match self.peek(0) {
                Some('`') => {
                    self.word.push('`');
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    self.pos += 1;
                    if let Some(next) = self.peek(0) {
                        self.word.push('\\');
                        self.word.push(next);
                        inner.push(next);
                        self.pos += 1;
                    }
                }
                Some(ch) => {
                    self.word.push(ch);
                    inner.push(ch);
                    self.pos += 1;
                }
                None => {
                    self.out.complete = false;
                    break;
                }
            }
        }
        scan(&inner, self.depth + 1, self.out);
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                return;
            }
            self.pos += 1;
        }
    }

    /// `<`, `>`, `>>`, `>|`, `&>`, `&>>`, `<>`, `>&`, `<&`, `<<`, `<<-`,
    /// `<<<`, with an optional file-descriptor number before it.
    fn redirect_operator(&mut self) {
        if self.in_word && !self.word.is_empty() && self.word.chars().all(|c| c.is_ascii_digit()) {
            // `2>`: the digits name a descriptor, not an argument.
            self.word.clear();
            self.in_word = false;
        } else {
            self.end_word();
        }
        let op: String = self.chars[self.pos..]
            .iter()
            .take(3)
            .take_while(|c| matches!(c, '<' | '>' | '&' | '|' | '-'))
            .collect();
        let (pending, len) = if op.starts_with("<<<") {
            (Pending::HereString, 3)
        } else if op.starts_with("<<-") {
            (Pending::HereDoc { strip_tabs: true }, 3)
        } else if op.starts_with("<<") {
            (Pending::HereDoc { strip_tabs: false }, 2)
        } else if op.starts_with("&>>") {
            (Pending::Write, 3)
        } else if op.starts_with("&>") || op.starts_with(">>") || op.starts_with(">|") {
            (Pending::Write, 2)
        } else if op.starts_with(">&") || op.starts_with("<&") {
            (Pending::Duplicate, 2)
        } else if op.starts_with("<>") {
            (Pending::Write, 2)
        } else if op.starts_with('<') {
            (Pending::Read, 1)
        } else {
            (Pending::Write, 1)
        };
        self.pos += len;
        self.pending = Some(pending);
    }

    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        let word = std::mem::take(&mut self.word);
        self.in_word = false;
        match self.pending.take() {
            None => self.words.push(word),
            Some(pending) => self.redirect_target(pending, &word),
        }
    }

    fn redirect_target(&mut self, pending: Pending, word: &str) {
        let target = unquote(word);
        match pending {
            Pending::Read => self.out.reads.push(target),
            Pending::Write => {
                if !matches!(target.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr") {
                    self.out.writes.push(target);
                }
            }
            Pending::Duplicate => {
                if !target.is_empty() && !target.chars().all(|c| c.is_ascii_digit() || c == '-') {
                    self.out.writes.push(target);
                }
            }
            Pending::HereDoc { strip_tabs } => {
                // A quoted delimiter means the body is taken literally; an
                // unquoted one lets `$(...)` in the body run.
                let literal = word.contains(['\'', '"', '\\']);
                self.heredocs.push((target, strip_tabs, literal));
            }
            Pending::HereString => {}
        }
    }

    fn end_part(&mut self) {
        self.end_word();
        self.pending = None;
        let words = std::mem::take(&mut self.words);
        let words = strip_keywords(words);
        if words.is_empty() {
            return;
        }
        let part = Part { words };
        self.out.parts.push(part.clone());
        self.nested_command_line(&part);
    }

    /// `bash -c '...'` and `eval ...` run a command line of their own.
    fn nested_command_line(&mut self, part: &Part) {
        let words = peel(&part.words, false, |_| {});
        let Some(first) = words.first().map(|w| unquote(w)) else {
            return;
        };
        let program = first.rsplit('/').next().unwrap_or(&first);
        let line = if program == "eval" {
            Some(
                words[1..]
                    .iter()
                    .map(|w| unquote(w))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        } else if SHELLS.contains(&program) {
            words
                .iter()
                .position(|w| {
                    let w = unquote(w);
                    w.starts_with('-') && !w.starts_with("--") && w.contains('c')
                })
                .and_then(|i| words.get(i + 1))
                .map(|w| unquote(w))
        } else {
            None
        };
        if let Some(line) = line {
            scan(&line, self.depth + 1, self.out);
        }
    }

    /// After a newline: the bodies of the here-documents begun on the line
    /// before, which are data, not commands.
    fn skip_heredoc_bodies(&mut self) {
        let pending = std::mem::take(&mut self.heredocs);
        for (delimiter, strip_tabs, literal) in pending {
            let mut found = false;
            let mut body = String::new();
            while self.pos < self.chars.len() {
                let end = self.chars[self.pos..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(self.chars.len(), |i| self.pos + i);
                let line: String = self.chars[self.pos..end].iter().collect();
                self.pos = (end + 1).min(self.chars.len());
                let compared = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if compared == delimiter {
                    found = true;
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if !found {
                self.out.complete = false;
            }
            if !literal {
                scan_substitutions(&body, self.depth + 1, self.out);
            }
        }
    }
}

/// Scans only the `$(...)` and backtick substitutions of `text` (a
/// here-document body), which run even though the rest is data.
fn scan_substitutions(text: &str, depth: usize, out: &mut ParsedCommand) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '$' if chars.get(i + 1) == Some(&'(') && chars.get(i + 2) != Some(&'(') => {
                match matching_paren(&chars, i + 1) {
                    Some(end) => {
                        let inner: String = chars[i + 2..end].iter().collect();
                        scan(&inner, depth, out);
                        i = end + 1;
                    }
                    None => {
                        out.complete = false;
                        return;
                    }
                }
            }
            '`' => match chars[i + 1..].iter().position(|&c| c == '`') {
                Some(len) => {
                    let inner: String = chars[i + 1..i + 1 + len].iter().collect();
                    scan(&inner, depth, out);
                    i += len + 2;
                }
                None => {
                    out.complete = false;
                    return;
                }
            },
            _ => i += 1,
        }
    }
}

/// The index of the `)` closing the `(` at `open`, skipping quoted text
/// and nested parentheses.
fn matching_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut level = 0usize;
    let mut i = open;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                }
            }
            Some(q) => {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\\' => i += 1,
                '\'' | '"' | '`' => quote = Some(c),
                '(' => level += 1,
                ')' => {
                    level -= 1;
                    if level == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// A word without its quotes and escapes (no expansion).
pub fn unquote(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), _) => out.push(c),
            (Some(_), '\\') => match chars.next() {
                Some(next @ ('"' | '\\' | '$' | '`')) => out.push(next),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Peels assignments and wrappers off `words` one layer at a time, showing
/// each form (the first as written) to `seen`; returns the innermost.
fn peel(mut words: &[String], for_allow: bool, mut seen: impl FnMut(&[String])) -> &[String] {
    seen(words);
    for _ in 0..16 {
        let bare = strip_assignments(words, for_allow);
        if bare.len() != words.len() {
            words = bare;
            seen(words);
        }
        match strip_wrapper(words, for_allow) {
            Some(inner) => {
                words = inner;
                seen(words);
            }
            None => break,
        }
    }
    words
}

fn strip_keywords(mut words: Vec<String>) -> Vec<String> {
    while words
        .first()
        .is_some_and(|w| OPENING_WORDS.contains(&w.as_str()))
    {
        words.remove(0);
    }
    while words
        .last()
        .is_some_and(|w| CLOSING_WORDS.contains(&w.as_str()))
    {
        words.pop();
    }
    words
}

/// `NAME=value` before a command.
fn assignment_name(word: &str) -> Option<&str> {
    let (name, _) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() || first == '_')
        .then_some(())
        .filter(|()| chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|()| name)
}

/// Leading assignments removed: all of them, or for an allow rule only
/// the safe ones (the first unsafe one stops the stripping).
fn strip_assignments(words: &[String], only_safe: bool) -> &[String] {
    let mut i = 0;
    while i + 1 < words.len() {
        match assignment_name(&words[i]) {
            Some(name) if !only_safe || SAFE_ENV.contains(&name) => i += 1,
            _ => break,
        }
    }
    &words[i..]
}

/// The command a wrapper runs, when `words` starts with one. `env` and
/// `exec` are looked past only for deny and ask rules.
fn strip_wrapper(words: &[String], for_allow: bool) -> Option<&[String]> {
    let first = unquote(words.first()?);
    let rest = &words[1..];
    let flag = |w: &String| unquote(w).starts_with('-');
    let after_options = |with_value: &[&str]| -> usize {
        let mut i = 0;
        while i < rest.len() && flag(&rest[i]) {
            let word = unquote(&rest[i]);
            if word == "--" {
                return i + 1;
            }
            i += if with_value.contains(&word.as_str()) {
                2
            } else {
                1
            };
        }
        i
    };
    let skip = match first.as_str() {
        "nohup" | "builtin" | "noglob" => 0,
        "command" | "xargs" => {
            if rest.first().is_some_and(flag) {
                return None;
            }
            0
        }
        "time" => after_options(&[]),
        "nice" => after_options(&["-n"]),
        "stdbuf" => after_options(&["-i", "-o", "-e"]),
        "timeout" => after_options(&["-s", "-k"]) + 1,
        "exec" if !for_allow => after_options(&["-a"]),
        "env" if !for_allow => {
            let mut i = after_options(&["-u", "-C", "-S"]);
            while i < rest.len() && assignment_name(&rest[i]).is_some() {
                i += 1;
            }
            i
        }
        _ => return None,
    };
    let command = rest.get(skip..)?;
    (!command.is_empty()).then_some(command)
}

/// Whether the command hands another command to a program that runs it
/// (`watch`, `setsid`, `find -exec`...): a prefix rule must not approve it.
fn runs_other_program(words: &[String]) -> bool {
    let Some(first) = words.first().map(|w| unquote(w)) else {
        return false;
    };
    let program = first.rsplit('/').next().unwrap_or(&first);
    if EXEC_WRAPPERS.contains(&program) {
        return true;
    }
    program == "find"
        && words[1..].iter().any(|w| {
            matches!(
                unquote(w).as_str(),
                "-exec" | "-execdir" | "-ok" | "-okdir" | "-delete"
            )
        })
}

/// A `Bash(...)` specifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    tokens: Vec<Token>,
    /// ` *` or `:*` at the end: the command, or the command followed by a
    /// space and anything (so `ls *` matches `ls -la` but not `lsof`).
    optional_tail: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    Star,
}

impl CommandPattern {
    pub fn parse(spec: &str) -> Self {
        let collapsed = spec.split_whitespace().collect::<Vec<_>>().join(" ");
        let (base, optional_tail) = if let Some(base) = collapsed.strip_suffix(":*") {
            (base.trim_end(), true)
        } else if let Some(base) = collapsed.strip_suffix(" *") {
            (base.trim_end(), true)
        } else {
            (collapsed.as_str(), false)
        };
        Self {
            tokens: wildcard_tokens(base),
            optional_tail,
        }
    }

    /// Whether the pattern is an exact command (no wildcard).
    pub fn is_exact(&self) -> bool {
        !self.optional_tail && !self.tokens.contains(&Token::Star)
    }

    pub fn matches(&self, command: &str) -> bool {
        if wildcard_match(&self.tokens, command) {
            return true;
        }
        if !self.optional_tail {
            return false;
        }
        let mut tail = self.tokens.clone();
        tail.extend([Token::Char(' '), Token::Star]);
        wildcard_match(&tail, command)
    }
}

/// `*` any run of characters, `\*` a literal star.
fn wildcard_tokens(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'*') => {
                chars.next();
                tokens.push(Token::Char('*'));
            }
            '*' => tokens.push(Token::Star),
            _ => tokens.push(Token::Char(c)),
        }
    }
    tokens
}

/// A glob where `*` matches any characters, iteratively with one
/// backtracking point (linear in practice, never exponential).
fn wildcard_match(tokens: &[Token], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Char(c)) if *c == text[s] => {
                t += 1;
                s += 1;
            }
            Some(Token::Star) => {
                star = Some((t, s));
                t += 1;
            }
            _ => match star {
                Some((star_t, star_s)) => {
                    t = star_t + 1;
                    s = star_s + 1;
                    star = Some((star_t, star_s + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t.min(tokens.len())..]
        .iter()
        .all(|tok| *tok == Token::Star)
}

/// A `*` glob over a short value (a skill name, an input field).
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    wildcard_match(&wildcard_tokens(pattern), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(command: &str) -> Vec<String> {
        parse(command).parts.iter().map(Part::text).collect()
    }

    #[test]
    fn compound_commands_split_on_every_operator_outside_quotes() {
        assert_eq!(
            texts("ls && rm x || echo a; pwd | wc -l |& cat & sleep 1\nid"),
            [
                "ls", "rm x", "echo a", "pwd", "wc -l", "cat", "sleep 1", "id"
            ]
        );
        assert_eq!(
            texts(r#"echo "a && b" 'c; d' e\;f"#),
            [r#"echo "a && b" 'c; d' e\;f"#]
        );
        assert_eq!(texts("git  commit   -m x"), ["git commit -m x"]);
        assert_eq!(texts("(cd sub && rm -rf x)"), ["cd sub", "rm -rf x"]);
        assert_eq!(
            texts("if test -f a; then rm a; else touch a; fi"),
            ["test -f a", "rm a", "touch a"]
        );
        assert_eq!(
            texts("for f in *.txt; do rm \"$f\"; done"),
            ["for f in *.txt", "rm \"$f\""]
        );
        assert_eq!(texts("ls # rm everything"), ["ls"]);
        assert_eq!(texts("echo a \\\n  b"), ["echo a b"]);
    }

    #[test]
    fn substitutions_and_nested_shells_are_commands_too() {
        assert_eq!(texts("echo $(rm x)"), ["rm x", "echo $(rm x)"]);
        assert_eq!(texts("echo `rm y`"), ["rm y", "echo `rm y`"]);
        assert_eq!(texts("echo \"$(rm z)\""), ["rm z", "echo \"$(rm z)\""]);
        assert_eq!(
            texts("diff <(ls a) <(ls b)"),
            ["ls a", "ls b", "diff <(ls a) <(ls b)"]
        );
        assert_eq!(texts("echo $((1 + 2))"), ["echo $((1 + 2))"]);
        assert_eq!(
            texts("bash -c 'rm -rf x && ls'"),
            ["bash -c 'rm -rf x && ls'", "rm -rf x", "ls"]
        );
        assert_eq!(texts("eval \"rm q\""), ["eval \"rm q\"", "rm q"]);
        assert_eq!(
            texts("timeout 5 sh -lc \"rm w\""),
            ["timeout 5 sh -lc \"rm w\"", "rm w"]
        );
    }

    #[test]
    fn redirections_are_files_not_words() {
        let parsed = parse("npm test > out.txt 2>&1 < in.txt && cat <<< hi >> 'log file'");
        assert_eq!(
            parsed.parts.iter().map(Part::text).collect::<Vec<_>>(),
            ["npm test", "cat"]
        );
        assert_eq!(parsed.writes, ["out.txt", "log file"]);
        assert_eq!(parsed.reads, ["in.txt"]);
        let parsed = parse("make 2>/dev/null &>build.log >&other.log");
        assert_eq!(parsed.writes, ["build.log", "other.log"]);
        assert!(parsed.complete);
    }

    #[test]
    fn here_documents_are_data_unless_they_substitute() {
        let parsed = parse("cat <<EOF > f.txt\nrm -rf x\nEOF\nls");
        assert_eq!(
            parsed.parts.iter().map(Part::text).collect::<Vec<_>>(),
            ["cat", "ls"]
        );
        assert_eq!(parsed.writes, ["f.txt"]);
        assert!(parsed.complete);
        let parsed = parse("cat <<EOF\n$(rm -rf y)\nEOF");
        assert!(parsed.parts.iter().any(|p| p.text() == "rm -rf y"));
        let parsed = parse("cat <<'EOF'\n$(rm -rf y)\nEOF");
        assert!(!parsed.parts.iter().any(|p| p.text() == "rm -rf y"));
        assert!(!parse("cat <<EOF\nno end").complete);
    }

    #[test]
    fn unterminated_quotes_are_incomplete() {
        assert!(!parse("echo 'open").complete);
        assert!(!parse("echo \"open").complete);
        assert!(!parse("echo $(open").complete);
        assert!(parse("echo 'closed' \"too\"").complete);
        assert!(parse(&"x".repeat(MAX_ALLOWED_COMMAND_CHARS + 1)).too_long);
    }

    #[test]
    fn wrappers_and_assignments_are_looked_past() {
        let part = |c: &str| parse(c).parts.remove(0);
        let deny = part("FOO=1 timeout -s KILL 10 nice -n 5 rm -rf x").deny_forms();
        assert!(deny.contains(&"rm -rf x".to_owned()), "{deny:?}");
        assert_eq!(deny[0], "FOO=1 timeout -s KILL 10 nice -n 5 rm -rf x");
        let (allow, restricted) = part("NO_COLOR=1 nohup npm test").allow_forms();
        assert!(
            allow.contains(&"npm test".to_owned()) && !restricted,
            "{allow:?}"
        );
        // An unsafe assignment stops an allow rule from looking past it.
        let (allow, _) = part("LD_PRELOAD=/x.so npm test").allow_forms();
        assert_eq!(allow, ["LD_PRELOAD=/x.so npm test"]);
        assert!(
            part("LD_PRELOAD=/x.so npm test")
                .deny_forms()
                .contains(&"npm test".to_owned())
        );
        // `command -v` and flagged xargs are programs of their own.
        assert_eq!(part("command -v rm").deny_forms(), ["command -v rm"]);
        assert_eq!(part("xargs -0 rm").deny_forms(), ["xargs -0 rm"]);
        assert!(part("xargs rm").deny_forms().contains(&"rm".to_owned()));
        // env and exec only for deny rules.
        assert!(
            part("env A=1 rm x")
                .deny_forms()
                .contains(&"rm x".to_owned())
        );
        assert_eq!(part("env A=1 rm x").allow_forms().0, ["env A=1 rm x"]);
        assert!(part("watch -n1 make").allow_forms().1);
        assert!(part("find . -name x -delete").allow_forms().1);
        for spelled in ["\\rm -rf x", "'rm' -rf x", "/bin/rm -rf x"] {
            assert!(
                part(spelled).deny_forms().contains(&"rm -rf x".to_owned()),
                "{spelled}"
            );
            assert!(
                !part(spelled)
                    .allow_forms()
                    .0
                    .contains(&"rm -rf x".to_owned()),
                "{spelled}"
            );
        }
        assert!(!part("find . -name x").allow_forms().1);
    }

    #[test]
    fn patterns_exact_prefix_and_wildcards() {
        let p = CommandPattern::parse;
        assert!(p("npm run test").matches("npm run test"));
        assert!(!p("npm run test").matches("npm run test --watch"));
        assert!(p("npm run test").is_exact());
        for legacy in ["git diff:*", "git diff *"] {
            let pattern = p(legacy);
            assert!(pattern.matches("git diff"), "{legacy}");
            assert!(pattern.matches("git diff --stat"), "{legacy}");
            assert!(!pattern.matches("git diffx"), "{legacy}");
            assert!(!pattern.matches("git status"), "{legacy}");
            assert!(!pattern.is_exact());
        }
        assert!(p("ls *").matches("ls -la") && !p("ls *").matches("lsof"));
        assert!(p("ls*").matches("lsof") && p("ls*").matches("ls"));
        assert!(p("* install").matches("npm install"));
        assert!(!p("* install").matches("npm install x"));
        assert!(p("git * main").matches("git checkout main"));
        assert!(p("git * main").matches("git push origin main"));
        assert!(!p("git * main").matches("git checkout dev"));
        assert!(p("rm:*").matches("rm -rf x") && !p("rm:*").matches("rmdir x"));
        assert!(p("echo \\*").matches("echo *") && !p("echo \\*").matches("echo a"));
        assert!(p("  git   status ").matches("git status"));
    }

    #[test]
    fn unquote_removes_quotes_without_expanding() {
        assert_eq!(unquote(r#"'a b'"c\"d"e\ f$HOME"#), r#"a bc"de f$HOME"#);
        assert!(glob_matches("deploy*", "deploy-prod"));
        assert!(!glob_matches("deploy", "deploy-prod"));
    }
}
