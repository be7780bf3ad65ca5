//! Jupyter notebooks (nbformat 4): `NotebookEdit` replaces, inserts or
//! deletes one cell and leaves every other part of the file as it was, and
//! Read shows a notebook as its cells with their outputs.

use std::io::Read as _;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::args::{Args, InvalidInput};
use super::reads::{self, Stamp};
use super::session::SessionTools;
use super::text::truncate_middle;
use super::write::write_all;
use super::{Tool, ToolContext, ToolOutput, file_error, resolve_path, run_blocking};
use crate::workspace::{Access, FileError, Workspace};

/// Characters of one output shown by Read; the middle of a longer one is cut.
const MAX_OUTPUT_CHARS: usize = 10_000;

/// Whether `path` names a notebook, by its extension.
pub(crate) fn is_notebook(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ipynb"))
}

/// Edits notebooks of at most `max_file_bytes`, before and after the change.
pub struct NotebookEditTool {
    max_file_bytes: u64,
}

impl NotebookEditTool {
    pub fn new(max_file_bytes: u64) -> Self {
        Self { max_file_bytes }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replace,
    Insert,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellType {
    Code,
    Markdown,
}

impl CellType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Markdown => "markdown",
        }
    }
}

struct Change {
    cell_id: Option<String>,
    source: String,
    cell_type: Option<CellType>,
    mode: Mode,
}

impl Change {
    fn parse(args: &Args<'_>) -> Result<Self, InvalidInput> {
        let mode = match args.opt_string("edit_mode")? {
            None | Some("replace") => Mode::Replace,
            Some("insert") => Mode::Insert,
            Some("delete") => Mode::Delete,
            Some(other) => {
                return Err(InvalidInput(format!(
                    "field `edit_mode` must be \"replace\", \"insert\" or \"delete\", got \"{other}\""
                )));
            }
        };
        let cell_type = match args.opt_string("cell_type")? {
            None => None,
            Some("code") => Some(CellType::Code),
            Some("markdown") => Some(CellType::Markdown),
            Some(other) => {
                return Err(InvalidInput(format!(
                    "field `cell_type` must be \"code\" or \"markdown\", got \"{other}\""
                )));
            }
        };
        // A deletion has no source; models send one anyway, or none.
        let source = match mode {
            Mode::Delete => args.opt_string("new_source")?.unwrap_or_default(),
            _ => args.string("new_source")?,
        };
        let cell_id = args
            .opt_string("cell_id")?
            .filter(|id| !id.trim().is_empty());
        if mode == Mode::Insert && cell_type.is_none() {
            return Err(InvalidInput(
                "field `cell_type` (\"code\" or \"markdown\") is required to insert a cell".into(),
            ));
        }
        if mode != Mode::Insert && cell_id.is_none() {
            return Err(InvalidInput(
                "field `cell_id` is required to replace or delete a cell".into(),
            ));
        }
        Ok(Self {
            cell_id: cell_id.map(str::to_owned),
            source: source.to_owned(),
            cell_type,
            mode,
        })
    }
}

#[async_trait]
impl Tool for NotebookEditTool {
    fn name(&self) -> &str {
        "NotebookEdit"
    }

    fn description(&self) -> String {
        "Changes one cell of a Jupyter notebook (.ipynb): edit_mode replace (the default) sets \
         the source of the cell cell_id, and its type when cell_type is given; insert adds a \
         new cell of cell_type after the cell cell_id, or first when cell_id is omitted; delete \
         removes the cell cell_id. Cells are named by the ids Read shows for the notebook \
         (`cell-N`, counting from 0, for notebooks whose cells have no ids). Replacing a code \
         cell clears its outputs. Read the notebook first. notebook_path may be absolute or \
         relative to the working directory."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "notebook_path": {"type": "string", "description": "The notebook to edit, absolute or relative to the working directory"},
                "cell_id": {"type": "string", "description": "The id of the cell to replace or delete, or to insert after (omit to insert at the start)"},
                "new_source": {"type": "string", "description": "The new source of the cell"},
                "cell_type": {"type": "string", "enum": ["code", "markdown"], "description": "The cell's type; required for insert"},
                "edit_mode": {"type": "string", "enum": ["replace", "insert", "delete"], "description": "replace (default), insert or delete"}
            },
            "required": ["notebook_path", "new_source"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let (raw, change) = match args
            .string("notebook_path")
            .and_then(|p| Ok((p.to_owned(), Change::parse(&args)?)))
        {
            Ok(parsed) => parsed,
            Err(e) => return e.into(),
        };
        let path = match resolve_path(ctx, &raw) {
            Ok(p) => p,
            Err(out) => return out,
        };
        if !is_notebook(&path) {
            return ToolOutput::error(format!(
                "{} is not a Jupyter notebook (.ipynb). Use Edit for other files.",
                path.display()
            ));
        }
        let workspace = ctx.workspace.clone();
        let session = ctx.session.clone();
        let limit = self.max_file_bytes;
        run_blocking(&ctx.cancel, move || {
            edit_notebook(&workspace, &session, &path, &change, limit)
        })
        .await
    }
}

fn edit_notebook(
    workspace: &Workspace,
    session: &SessionTools,
    path: &Path,
    change: &Change,
    limit: u64,
) -> ToolOutput {
    let shown = path.display().to_string();
    let opened = match workspace.open_file(path, Access::Update) {
        Ok(f) => f,
        Err(FileError::NotFound(_)) => {
            return ToolOutput::error(format!(
                "Notebook does not exist: {shown}. Create it with Write (nbformat 4 JSON) first."
            ));
        }
        Err(e) => return file_error(&e),
    };
    if opened.len > limit {
        return file_error(&FileError::TooLarge {
            path: shown,
            size: opened.len,
            limit,
        });
    }
    let mut file = opened.file;
    let mut bytes = Vec::new();
    if let Err(e) = (&mut file).take(limit + 1).read_to_end(&mut bytes) {
        return ToolOutput::error(format!("Cannot read {shown}: {e}"));
    }
    match Stamp::of_content(&file, &bytes) {
        Ok(now) => {
            if let Err(unseen) = reads::check(session, path, &now) {
                return unseen.output(&shown);
            }
        }
        Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
    }
    let mut notebook: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return ToolOutput::error(format!(
                "{shown} is not valid notebook JSON ({e}); nothing was changed."
            ));
        }
    };
    let done = match apply(&mut notebook, change) {
        Ok(done) => done,
        Err(why) => return ToolOutput::error(format!("{why} ({shown}); nothing was changed.")),
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if let Err(e) = serde::Serialize::serialize(&notebook, &mut serializer) {
        return ToolOutput::error(format!("Cannot write {shown}: {e}"));
    }
    out.push(b'\n');
    if out.len() as u64 > limit {
        return ToolOutput::error(format!(
            "The edited notebook would be {} bytes, over the {limit}-byte limit; nothing was changed.",
            out.len()
        ));
    }
    if let Err(e) = write_all(&file, &out) {
        return ToolOutput::error(format!("Cannot write {shown}: {e}"));
    }
    if let Ok(stamp) = Stamp::of_content(&file, &out) {
        session.saw(path, stamp);
    }
    ToolOutput::ok(format!("{done} in {shown}."))
}

/// Makes `change` to the notebook value; says what was done, or why not.
fn apply(notebook: &mut Value, change: &Change) -> Result<String, String> {
    let major = notebook.get("nbformat").and_then(Value::as_u64);
    if major.is_some_and(|m| m < 4) {
        return Err(format!(
            "The notebook is nbformat {}; only nbformat 4 can be edited",
            major.unwrap_or_default()
        ));
    }
    let with_ids = notebook
        .get("nbformat_minor")
        .and_then(Value::as_u64)
        .is_some_and(|minor| minor >= 5);
    let Some(cells) = notebook.get_mut("cells").and_then(Value::as_array_mut) else {
        return Err("The file has no `cells` list, so it is not an nbformat 4 notebook".into());
    };
    let index = match &change.cell_id {
        None => None,
        Some(id) => Some(find_cell(cells, id).ok_or_else(|| {
            format!(
                "No cell has id \"{id}\"; the notebook has {} cells (Read it to see their ids)",
                cells.len()
            )
        })?),
    };
    match change.mode {
        Mode::Delete => {
            let i = index.unwrap_or_default();
            cells.remove(i);
            Ok(format!(
                "Deleted cell {}",
                change.cell_id.as_deref().unwrap_or_default()
            ))
        }
        Mode::Insert => {
            let kind = change.cell_type.unwrap_or(CellType::Code);
            let at = index.map_or(0, |i| i + 1);
            let mut cell = Map::new();
            cell.insert("cell_type".into(), json!(kind.as_str()));
            let id = with_ids.then(|| fresh_id(cells));
            if let Some(id) = &id {
                cell.insert("id".into(), json!(id));
            }
            cell.insert("metadata".into(), json!({}));
            if kind == CellType::Code {
                cell.insert("execution_count".into(), Value::Null);
                cell.insert("outputs".into(), json!([]));
            }
            cell.insert("source".into(), source_lines(&change.source));
            cells.insert(at, Value::Object(cell));
            let name = id.unwrap_or_else(|| format!("cell-{at}"));
            Ok(match &change.cell_id {
                Some(after) => format!(
                    "Inserted a {} cell (id {name}) after cell {after}",
                    kind.as_str()
                ),
                None => format!("Inserted a {} cell (id {name}) at the start", kind.as_str()),
            })
        }
        Mode::Replace => {
            let i = index.unwrap_or_default();
            let Some(cell) = cells[i].as_object_mut() else {
                return Err(format!("Cell {i} is not a JSON object"));
            };
            let kind = match change.cell_type {
                Some(kind) => kind,
                None => match cell.get("cell_type").and_then(Value::as_str) {
                    Some("code") => CellType::Code,
                    _ => CellType::Markdown,
                },
            };
            let as_string = cell.get("source").is_some_and(Value::is_string);
            cell.insert("cell_type".into(), json!(kind.as_str()));
            cell.insert(
                "source".into(),
                if as_string {
                    json!(change.source)
                } else {
                    source_lines(&change.source)
                },
            );
            match kind {
                // New code has not run: its old outputs would mislead.
                CellType::Code => {
                    cell.insert("execution_count".into(), Value::Null);
                    cell.insert("outputs".into(), json!([]));
                }
                CellType::Markdown => {
                    cell.remove("execution_count");
                    cell.remove("outputs");
                }
            }
            Ok(format!(
                "Replaced cell {} ({})",
                change.cell_id.as_deref().unwrap_or_default(),
                kind.as_str()
            ))
        }
    }
}

/// The index of the cell named `id`: its `id` field, or `cell-N` for the
/// N-th cell (from 0), as Read names cells that have no id.
fn find_cell(cells: &[Value], id: &str) -> Option<usize> {
    cells
        .iter()
        .position(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .or_else(|| {
            id.strip_prefix("cell-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < cells.len())
        })
}

fn cell_name(cell: &Value, index: usize) -> String {
    cell.get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("cell-{index}"), str::to_owned)
}

/// An id no other cell has, in the short form Jupyter uses.
fn fresh_id(cells: &[Value]) -> String {
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        if find_cell(cells, &id).is_none() {
            return id;
        }
    }
}

/// A source as Jupyter stores it: lines, each but the last with its newline.
fn source_lines(source: &str) -> Value {
    Value::Array(
        source
            .split_inclusive('\n')
            .map(|line| Value::String(line.to_owned()))
            .collect(),
    )
}

/// A multiline field (`source`, `text`): one string or a list of lines.
fn joined(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(lines)) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// A notebook as Read shows it: each cell's source with its id and type,
/// then its outputs as text (images and other rich outputs named, not shown).
/// `None` when the bytes are not a notebook.
pub(crate) fn render(bytes: &[u8]) -> Option<String> {
    let notebook: Value = serde_json::from_slice(bytes).ok()?;
    let cells = notebook.get("cells")?.as_array()?;
    let language = notebook
        .pointer("/metadata/language_info/name")
        .or_else(|| notebook.pointer("/metadata/kernelspec/language"))
        .and_then(Value::as_str)
        .unwrap_or("python");
    let mut out = format!(
        "Jupyter notebook, {} cells, language {language}.\n\n",
        cells.len()
    );
    for (i, cell) in cells.iter().enumerate() {
        let kind = cell
            .get("cell_type")
            .and_then(Value::as_str)
            .unwrap_or("raw");
        let mut attributes = format!("id=\"{}\" type=\"{kind}\"", cell_name(cell, i));
        if let Some(n) = cell.get("execution_count").and_then(Value::as_u64) {
            attributes.push_str(&format!(" execution_count=\"{n}\""));
        }
        let source = joined(cell.get("source"));
        out.push_str(&format!("<cell {attributes}>\n{source}"));
        if !source.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("</cell>\n");
        let outputs = cell
            .get("outputs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !outputs.is_empty() {
            out.push_str("<outputs>\n");
            for output in outputs {
                let text = render_output(output);
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            out.push_str("</outputs>\n");
        }
        out.push('\n');
    }
    Some(out)
}

fn render_output(output: &Value) -> String {
    let text = match output.get("output_type").and_then(Value::as_str) {
        Some("stream") => joined(output.get("text")),
        Some("error") => {
            let mut text = format!(
                "{}: {}\n",
                output
                    .get("ename")
                    .and_then(Value::as_str)
                    .unwrap_or("Error"),
                output
                    .get("evalue")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            if let Some(lines) = output.get("traceback").and_then(Value::as_array) {
                for line in lines.iter().filter_map(Value::as_str) {
                    text.push_str(&strip_ansi(line));
                    text.push('\n');
                }
            }
            text
        }
        _ => {
            let Some(data) = output.get("data").and_then(Value::as_object) else {
                return String::new();
            };
            let mut text = joined(data.get("text/plain"));
            for mime in data.keys().filter(|k| *k != "text/plain") {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("[{mime} output not shown]"));
            }
            text
        }
    };
    truncate_middle(&text, MAX_OUTPUT_CHARS)
}

/// Removes terminal colour codes (`ESC [ ... letter`), which tracebacks carry.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notebook() -> Value {
        json!({
            "cells": [
                {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# Title\n", "text"]},
                {"cell_type": "code", "execution_count": 3, "id": "calc", "metadata": {"tags": ["x"]},
                 "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["4\n"]},
                    {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}, "metadata": {}},
                    {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["\u{1b}[0;31mValueError\u{1b}[0m: bad"]}
                 ],
                 "source": "print(2 + 2)"}
            ],
            "metadata": {"kernelspec": {"name": "python3", "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5
        })
    }

    fn change(mode: Mode, id: Option<&str>, source: &str, kind: Option<CellType>) -> Change {
        Change {
            cell_id: id.map(str::to_owned),
            source: source.to_owned(),
            cell_type: kind,
            mode,
        }
    }

    #[test]
    fn replace_keeps_the_rest_and_clears_stale_outputs() {
        let mut nb = notebook();
        apply(
            &mut nb,
            &change(Mode::Replace, Some("calc"), "x = 1\ny", None),
        )
        .unwrap();
        let cell = &nb["cells"][1];
        assert_eq!(cell["source"], "x = 1\ny", "a string source stays a string");
        assert_eq!(cell["outputs"], json!([]));
        assert_eq!(cell["execution_count"], Value::Null);
        assert_eq!(cell["metadata"], json!({"tags": ["x"]}));
        assert_eq!(nb["cells"][0], notebook()["cells"][0]);
        assert_eq!(nb["metadata"], notebook()["metadata"]);
        // Changing the type to markdown drops the code-only fields.
        apply(
            &mut nb,
            &change(
                Mode::Replace,
                Some("calc"),
                "now *prose*",
                Some(CellType::Markdown),
            ),
        )
        .unwrap();
        let cell = nb["cells"][1].as_object().unwrap();
        assert_eq!(cell["cell_type"], "markdown");
        assert!(!cell.contains_key("outputs") && !cell.contains_key("execution_count"));
    }

    #[test]
    fn insert_and_delete_by_id_or_position() {
        let mut nb = notebook();
        let done = apply(
            &mut nb,
            &change(Mode::Insert, Some("intro"), "a\nb\n", Some(CellType::Code)),
        )
        .unwrap();
        let cells = nb["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 3);
        let new = &cells[1];
        assert_eq!(new["source"], json!(["a\n", "b\n"]));
        assert_eq!(new["outputs"], json!([]));
        let id = new["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 8);
        assert!(done.contains(&id), "{done}");
        apply(
            &mut nb,
            &change(Mode::Insert, None, "top", Some(CellType::Markdown)),
        )
        .unwrap();
        assert_eq!(nb["cells"][0]["source"], json!(["top"]));
        apply(&mut nb, &change(Mode::Delete, Some("cell-0"), "", None)).unwrap();
        apply(&mut nb, &change(Mode::Delete, Some("calc"), "", None)).unwrap();
        let ids: Vec<&str> = nb["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["intro", id.as_str()]);
        let err = apply(&mut nb, &change(Mode::Delete, Some("nope"), "", None)).unwrap_err();
        assert!(err.contains("No cell has id \"nope\""), "{err}");
    }

    #[test]
    fn old_formats_and_non_notebooks_are_refused() {
        let mut old = json!({"nbformat": 3, "worksheets": []});
        assert!(apply(&mut old, &change(Mode::Delete, Some("cell-0"), "", None)).is_err());
        let mut other = json!({"a": 1});
        assert!(apply(&mut other, &change(Mode::Delete, Some("cell-0"), "", None)).is_err());
    }

    #[test]
    fn render_shows_sources_ids_and_text_outputs() {
        let text = render(notebook().to_string().as_bytes()).unwrap();
        assert!(
            text.contains("<cell id=\"intro\" type=\"markdown\">\n# Title\ntext\n</cell>"),
            "{text}"
        );
        assert!(
            text.contains(
                "<cell id=\"calc\" type=\"code\" execution_count=\"3\">\nprint(2 + 2)\n</cell>"
            ),
            "{text}"
        );
        assert!(text.contains("<outputs>\n4\n<Figure>\n[image/png output not shown]\nValueError: bad\nValueError: bad\n</outputs>"), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(render(b"not json").is_none());
        let no_ids = json!({"cells": [{"cell_type": "code", "source": [], "outputs": []}], "nbformat": 4, "nbformat_minor": 4});
        assert!(
            render(no_ids.to_string().as_bytes())
                .unwrap()
                .contains("<cell id=\"cell-0\"")
        );
    }
}
