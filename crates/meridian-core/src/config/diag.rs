//! Diagnostics: where in the file a problem is, what is wrong and what would be right.

use std::fmt;
use std::ops::Range;

/// A byte range into the topology text.
pub(super) type Span = Range<usize>;

/// One problem found in a topology file.
///
/// `line` and `column` are 1-based and always lie inside the text that was parsed (column counts
/// characters, not bytes; a column one past the end of the line points just after its last
/// character). `Display` renders `file:line:column: message`, then the offending source line with
/// a caret under the column, then `= hint: …` when there is a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The source name given to [`parse`](super::parse), usually the file path.
    pub file: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column (in characters) of the offending key or value.
    pub column: usize,
    /// What is wrong, prefixed by where in the model it is (e.g. "keyspace `orders`: …").
    pub message: String,
    /// What would be right, when there is something useful to say.
    pub hint: Option<String>,
    /// The source line the diagnostic points into (without its line break), for display.
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.source_line.trim().is_empty() {
            // Keep tabs in the caret's indentation so it lines up in a terminal.
            let pad: String = self
                .source_line
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n  | {}\n  | {pad}^", self.source_line)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// A topology file that must not be used; it holds every problem found, in file order.
///
/// Guarantees: `diagnostics` is never empty. `Display` renders every diagnostic, separated by a
/// blank line, followed by a count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_all(diagnostics))]
pub struct ConfigError {
    /// Every problem found, sorted by position in the file.
    pub diagnostics: Vec<Diagnostic>,
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push_str("\n\n");
    }
    let n = diagnostics.len();
    out.push_str(&format!(
        "{n} problem{} found",
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// Collects diagnostics while a file is read; maps byte offsets to lines and columns.
pub(super) struct Cx<'s> {
    file: &'s str,
    text: &'s str,
    line_starts: Vec<usize>,
    diags: Vec<(usize, Diagnostic)>,
}

impl<'s> Cx<'s> {
    pub(super) fn new(file: &'s str, text: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Cx {
            file,
            text,
            line_starts,
            diags: Vec::new(),
        }
    }

    /// Records a problem at `span` (only its start is used).
    pub(super) fn error(&mut self, span: &Span, message: impl Into<String>, hint: Option<String>) {
        let mut offset = span.start.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_idx = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line_idx];
        let end = self
            .line_starts
            .get(line_idx + 1)
            .map_or(self.text.len(), |&e| e - 1);
        let source_line = self.text[start..end].trim_end_matches('\r').to_string();
        let column = self.text[start..offset].chars().count() + 1;
        self.diags.push((
            offset,
            Diagnostic {
                file: self.file.to_string(),
                line: line_idx + 1,
                column,
                message: message.into(),
                hint,
                source_line,
            },
        ));
    }

    /// The 1-based line of a span's start, for "first defined at line N" hints.
    pub(super) fn line_of(&self, span: &Span) -> usize {
        self.line_starts
            .partition_point(|&s| s <= span.start.min(self.text.len()))
    }

    /// The recorded problems in file order, or `None` when there are none.
    pub(super) fn finish(self) -> Option<ConfigError> {
        if self.diags.is_empty() {
            return None;
        }
        let mut diags = self.diags;
        // Stable: problems at one position keep the order they were found in.
        diags.sort_by_key(|(offset, _)| *offset);
        Some(ConfigError {
            diagnostics: diags.into_iter().map(|(_, d)| d).collect(),
        })
    }
}
