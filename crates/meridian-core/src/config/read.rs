//! A typed, span-keeping view over a parsed `toml_edit` document. Every getter records a
//! diagnostic (at the offending value) instead of failing, so one pass finds every problem.

use std::time::Duration;

use toml_edit::{InlineTable, Item, Table, Value};

use super::diag::{Cx, Span};
use super::scalar;

/// The top-level sections of the file.
pub(super) const SECTIONS: &[&str] = &[
    "cluster", "zones", "region", "routing", "edge", "health", "keyspace", "dns", "limits",
];

/// A value and where it is in the text.
#[derive(Clone, Debug)]
pub(super) struct Sp<T> {
    pub v: T,
    pub span: Span,
}

/// One TOML value, whether it came from a table entry or from inside an array.
#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Span> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(i) => i.as_value(),
            Node::Value(v) => Some(v),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Node::Item(Item::None) => "nothing",
            Node::Item(Item::Table(_)) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "an inline table",
            },
        }
    }
}

struct Entry<'a> {
    key: &'a str,
    key_span: Span,
    node: Node<'a>,
}

/// A table (`[x]`, `[[x]]` element or inline `{ … }`) being read.
pub(super) struct Tbl<'a> {
    /// How messages name this table, e.g. "[health]" or "keyspace `orders`".
    pub label: String,
    /// Where missing-key errors point: the table's header or opening brace.
    pub span: Span,
    entries: Vec<Entry<'a>>,
}

fn from_table<'a>(t: &'a Table, label: String, fallback: &Span) -> Tbl<'a> {
    let span = t.span().unwrap_or_else(|| fallback.clone());
    let entries = t
        .iter()
        .map(|(key, item)| Entry {
            key,
            key_span: t
                .key(key)
                .and_then(|k| k.span())
                .unwrap_or_else(|| span.clone()),
            node: Node::Item(item),
        })
        .collect();
    Tbl {
        label,
        span,
        entries,
    }
}

fn from_inline<'a>(t: &'a InlineTable, label: String, fallback: &Span) -> Tbl<'a> {
    let span = t.span().unwrap_or_else(|| fallback.clone());
    let entries = t
        .iter()
        .map(|(key, value)| Entry {
            key,
            key_span: t
                .key(key)
                .and_then(|k| k.span())
                .unwrap_or_else(|| span.clone()),
            node: Node::Value(value),
        })
        .collect();
    Tbl {
        label,
        span,
        entries,
    }
}

/// The root table of a document.
pub(super) fn root(t: &Table) -> Tbl<'_> {
    from_table(t, "top level".to_string(), &(0..0))
}

impl<'a> Tbl<'a> {
    /// Reports every key not in `allowed`, suggesting the nearest allowed one.
    pub fn allow(&self, cx: &mut Cx<'_>, allowed: &[&str]) {
        for e in &self.entries {
            if allowed.contains(&e.key) {
                continue;
            }
            let list = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut hint = match scalar::closest(e.key, allowed.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? keys allowed here: {list}"),
                None => format!("keys allowed here: {list}"),
            };
            if self.label != "top level" && SECTIONS.contains(&e.key) {
                hint.push_str(&format!(
                    "; `{0}` is a top-level section, but keys after a `[table]` header belong to \
                     that table: move it above the first header, or write it as `[{0}]`",
                    e.key
                ));
            }
            cx.error(
                &e.key_span,
                format!("{}: unknown key `{}`", self.label, e.key),
                Some(hint),
            );
        }
    }

    /// Every (key, key span, value span) in file order, for tables whose keys are data.
    pub fn keys(&self) -> impl Iterator<Item = (&'a str, Span, Node<'a>)> + '_ {
        self.entries
            .iter()
            .map(|e| (e.key, e.key_span.clone(), e.node))
    }

    fn get(&self, key: &str) -> Option<(Span, Node<'a>)> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| (e.node.span().unwrap_or_else(|| e.key_span.clone()), e.node))
    }

    /// Where a key's value is (or the table's header when the key is absent).
    pub fn span_of(&self, key: &str) -> Span {
        self.get(key).map_or_else(|| self.span.clone(), |(s, _)| s)
    }

    /// Whether the key holds an array (no diagnostic either way).
    pub fn is_array(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|(_, n)| n.value().is_some_and(Value::is_array))
    }

    /// The key's string value, if it is one (no diagnostic either way).
    pub fn peek_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|(_, n)| n.value().and_then(Value::as_str))
            .map(str::to_string)
    }

    /// Whether the key is present.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    fn wrong_type(&self, cx: &mut Cx<'_>, key: &str, span: &Span, node: Node<'_>, want: &str) {
        cx.error(
            span,
            format!(
                "{}: `{key}` must be {want}, found {}",
                self.label,
                node.kind()
            ),
            None,
        );
    }

    /// Records that a required key is missing; `example` is a line that would be right.
    pub fn missing(&self, cx: &mut Cx<'_>, key: &str, example: &str) {
        cx.error(
            &self.span,
            format!("{}: missing required key `{key}`", self.label),
            Some(format!("add `{example}`")),
        );
    }

    /// A string value.
    pub fn str(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<String>> {
        let (span, node) = self.get(key)?;
        match node.value().and_then(Value::as_str) {
            Some(s) => Some(Sp {
                v: s.to_string(),
                span,
            }),
            None => {
                self.wrong_type(cx, key, &span, node, "a string");
                None
            }
        }
    }

    /// A string value that must be present.
    pub fn req_str(&self, cx: &mut Cx<'_>, key: &str, example: &str) -> Option<Sp<String>> {
        if !self.has(key) {
            self.missing(cx, key, example);
        }
        self.str(cx, key)
    }

    /// An integer value.
    pub fn int(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<i64>> {
        let (span, node) = self.get(key)?;
        match node.value().and_then(Value::as_integer) {
            Some(i) => Some(Sp { v: i, span }),
            None => {
                self.wrong_type(cx, key, &span, node, "an integer");
                None
            }
        }
    }

    /// An integer in `lo..=hi`; `why` names the range in the hint.
    pub fn int_in(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        lo: i64,
        hi: i64,
        why: &str,
    ) -> Option<Sp<i64>> {
        let i = self.int(cx, key)?;
        if i.v < lo || i.v > hi {
            cx.error(
                &i.span,
                format!("{}: {key} = {} is out of range", self.label, i.v),
                Some(format!("{key} must be between {lo} and {hi} ({why})")),
            );
            return None;
        }
        Some(i)
    }

    /// A boolean value.
    pub fn bool(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<bool>> {
        let (span, node) = self.get(key)?;
        match node.value().and_then(Value::as_bool) {
            Some(b) => Some(Sp { v: b, span }),
            None => {
                self.wrong_type(cx, key, &span, node, "a boolean (true or false)");
                None
            }
        }
    }

    /// A number (float or integer).
    pub fn number(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<f64>> {
        let (span, node) = self.get(key)?;
        let v = node.value();
        let n = v
            .and_then(Value::as_float)
            .or_else(|| v.and_then(Value::as_integer).map(|i| i as f64));
        match n {
            Some(n) => Some(Sp { v: n, span }),
            None => {
                self.wrong_type(cx, key, &span, node, "a number");
                None
            }
        }
    }

    /// A duration string like `500ms`.
    pub fn duration(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<Duration>> {
        let (span, node) = self.get(key)?;
        let Some(text) = node.value().and_then(Value::as_str) else {
            cx.error(
                &span,
                format!(
                    "{}: `{key}` must be a duration string, found {}",
                    self.label,
                    node.kind()
                ),
                Some(format!(
                    "write it as a string with a unit, like {key} = \"30s\""
                )),
            );
            return None;
        };
        match scalar::duration(text) {
            Ok(d) => Some(Sp { v: d, span }),
            Err(e) => {
                cx.error(
                    &span,
                    format!("{}: {key}: {e}", self.label),
                    Some(duration_hint()),
                );
                None
            }
        }
    }

    /// A duration that must not be zero.
    pub fn nonzero_duration(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<Duration>> {
        let d = self.duration(cx, key)?;
        if d.v.is_zero() {
            cx.error(
                &d.span,
                format!("{}: {key} must not be zero", self.label),
                Some(format!("give a positive duration, like {key} = \"1s\"")),
            );
            return None;
        }
        Some(d)
    }

    /// An array whose elements are returned as nodes with their spans.
    pub fn array(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<Vec<(Span, Node<'a>)>>> {
        let (span, node) = self.get(key)?;
        match node.value().and_then(Value::as_array) {
            Some(arr) => Some(Sp {
                v: arr
                    .iter()
                    .map(|v| (v.span().unwrap_or_else(|| span.clone()), Node::Value(v)))
                    .collect(),
                span,
            }),
            None => {
                self.wrong_type(cx, key, &span, node, "an array");
                None
            }
        }
    }

    /// An array of strings; non-string elements are reported and skipped.
    pub fn str_array(&self, cx: &mut Cx<'_>, key: &str) -> Option<Sp<Vec<Sp<String>>>> {
        let arr = self.array(cx, key)?;
        let mut out = Vec::new();
        for (span, node) in arr.v {
            match node.value().and_then(Value::as_str) {
                Some(s) => out.push(Sp {
                    v: s.to_string(),
                    span,
                }),
                None => cx.error(
                    &span,
                    format!(
                        "{}: every element of `{key}` must be a string, found {}",
                        self.label,
                        node.kind()
                    ),
                    None,
                ),
            }
        }
        Some(Sp {
            v: out,
            span: arr.span,
        })
    }

    /// A sub-table (`[a.b]` or inline `b = { … }`) labelled `label`.
    pub fn table(&self, cx: &mut Cx<'_>, key: &str, label: String) -> Option<Tbl<'a>> {
        let (span, node) = self.get(key)?;
        as_table(cx, node, label, &span)
    }

    /// The elements of an array of tables (`[[key]]` or `key = [{ … }, …]`); `label(i)` names
    /// the i-th until its name is known.
    pub fn tables(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        label: impl Fn(usize) -> String,
    ) -> Vec<Tbl<'a>> {
        let Some((span, node)) = self.get(key) else {
            return Vec::new();
        };
        match node {
            Node::Item(Item::ArrayOfTables(aot)) => aot
                .iter()
                .enumerate()
                .map(|(i, t)| from_table(t, label(i), &span))
                .collect(),
            _ => match node.value().and_then(Value::as_array) {
                Some(arr) => arr
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let s = v.span().unwrap_or_else(|| span.clone());
                        as_table(cx, Node::Value(v), label(i), &s)
                    })
                    .collect(),
                None => {
                    cx.error(
                        &span,
                        format!(
                            "{}: `{key}` must be an array of tables, found {}",
                            self.label,
                            node.kind()
                        ),
                        Some(format!("write each entry as a `[[{key}]]` section")),
                    );
                    Vec::new()
                }
            },
        }
    }
}

/// Reads a node as a table, reporting anything else.
pub(super) fn as_table<'a>(
    cx: &mut Cx<'_>,
    node: Node<'a>,
    label: String,
    span: &Span,
) -> Option<Tbl<'a>> {
    match node {
        Node::Item(Item::Table(t)) => Some(from_table(t, label, span)),
        _ => match node.value().and_then(Value::as_inline_table) {
            Some(t) => Some(from_inline(t, label, span)),
            None => {
                cx.error(
                    span,
                    format!("{label} must be a table, found {}", node.kind()),
                    None,
                );
                None
            }
        },
    }
}

/// A string from an array element or a table value, reporting anything else.
pub(super) fn node_str(cx: &mut Cx<'_>, node: Node<'_>, span: &Span, what: &str) -> Option<String> {
    match node.value().and_then(Value::as_str) {
        Some(s) => Some(s.to_string()),
        None => {
            cx.error(
                span,
                format!("{what} must be a string, found {}", node.kind()),
                None,
            );
            None
        }
    }
}

/// An array of strings from a table value, reporting anything else.
pub(super) fn node_str_array(
    cx: &mut Cx<'_>,
    node: Node<'_>,
    span: &Span,
    what: &str,
) -> Option<Vec<Sp<String>>> {
    let Some(arr) = node.value().and_then(Value::as_array) else {
        cx.error(
            span,
            format!("{what} must be an array of strings, found {}", node.kind()),
            None,
        );
        return None;
    };
    let mut out = Vec::new();
    for v in arr.iter() {
        let s = v.span().unwrap_or_else(|| span.clone());
        if let Some(text) = node_str(cx, Node::Value(v), &s, &format!("every element of {what}")) {
            out.push(Sp { v: text, span: s });
        }
    }
    Some(out)
}

/// An integer from a table value, reporting anything else.
pub(super) fn node_int(cx: &mut Cx<'_>, node: Node<'_>, span: &Span, what: &str) -> Option<i64> {
    match node.value().and_then(Value::as_integer) {
        Some(i) => Some(i),
        None => {
            cx.error(
                span,
                format!("{what} must be an integer, found {}", node.kind()),
                None,
            );
            None
        }
    }
}

/// The hint shared by every duration error.
pub(super) fn duration_hint() -> String {
    "durations are a whole number followed by ms, s, m, h or d: `500ms`, `30s`, `5m`, `24h`, `7d`"
        .to_string()
}
