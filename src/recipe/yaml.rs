//! A YAML document tree that remembers where every node came from.
//!
//! Recipes are parsed with the maintained `yaml-rust2` event parser into [`Node`]s that
//! carry their tag (`!GMPruningModifier`) and their [`Mark`] (line and column in the file,
//! or the `--set` override that produced them), so that every later error can point at
//! the exact place. Plain scalars are typed by the YAML 1.2 core schema (so `8e-5` is a
//! number, unlike PyYAML); quoted scalars are always strings.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// A position in the recipe file (both 1-based).
    File {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        col: usize,
    },
    /// A `--set KEY=VALUE` override on the command line.
    Override(String),
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mark::File { line, col } => write!(f, "{line}:{col}"),
            Mark::Override(key) => write!(f, "--set {key}"),
        }
    }
}

/// A YAML node with its tag and origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's content.
    pub value: Value,
    /// The local tag without its `!` (`GMPruningModifier` for `!GMPruningModifier`).
    pub tag: Option<String>,
    /// Where the node starts.
    pub mark: Mark,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A scalar: its text and whether it was plain (unquoted).
    Scalar {
        /// The text as written (after YAML unescaping).
        text: String,
        /// Plain scalars are typed (numbers, booleans); quoted ones are strings.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

/// A plain scalar typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Typed<'a> {
    /// `null`, `~`, empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (including `.inf` and `.nan`).
    Float(f64),
    /// Anything else, or a quoted scalar.
    Str(&'a str),
}

impl Node {
    /// A plain scalar node.
    pub fn scalar(text: impl Into<String>, mark: Mark) -> Self {
        Node {
            value: Value::Scalar {
                text: text.into(),
                plain: true,
            },
            tag: None,
            mark,
        }
    }

    /// The scalar typed by the YAML 1.2 core schema, or `None` for collections.
    pub fn typed(&self) -> Option<Typed<'_>> {
        match &self.value {
            Value::Null => Some(Typed::Null),
            Value::Scalar { text, plain: false } => Some(Typed::Str(text)),
            Value::Scalar { text, plain: true } => Some(type_plain(text)),
            _ => None,
        }
    }

    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The mapping's entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// A short description of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.typed() {
            Some(Typed::Null) => "null",
            Some(Typed::Bool(_)) => "a boolean",
            Some(Typed::Int(_)) => "an integer",
            Some(Typed::Float(_)) => "a number",
            Some(Typed::Str(_)) => "a string",
            None => match self.value {
                Value::Seq(_) => "a list",
                _ => "a mapping",
            },
        }
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
pub fn type_plain(text: &str) -> Typed<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
        "true" | "True" | "TRUE" => return Typed::Bool(true),
        "false" | "False" | "FALSE" => return Typed::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Typed::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Typed::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Typed::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(v) = i64::from_str_radix(hex, 16)
    {
        return Typed::Int(v);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(v) = i64::from_str_radix(oct, 8)
    {
        return Typed::Int(v);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(v) = text.parse::<i64>()
    {
        return Typed::Int(v);
    }
    if is_core_float(digits)
        && let Ok(v) = text.parse::<f64>()
    {
        return Typed::Float(v);
    }
    Typed::Str(text)
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Default)]
struct Collector {
    events: Vec<(Event, Marker)>,
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.events.push((ev, mark));
    }
}

fn mark_of(m: &Marker, line_offset: usize) -> Mark {
    Mark::File {
        line: m.line() + line_offset,
        col: m.col() + 1,
    }
}

/// Parses one YAML document. `line_offset` is added to every line (for YAML embedded
/// in a Markdown front matter). Returns `None` for an empty document.
pub fn parse(text: &str, line_offset: usize) -> Result<Option<Node>, SyntaxError> {
    let mut collector = Collector::default();
    Parser::new_from_str(text)
        .load(&mut collector, true)
        .map_err(|e| SyntaxError {
            line: e.marker().line() + line_offset,
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
    let mut builder = Builder {
        events: collector.events.into_iter().peekable(),
        anchors: HashMap::new(),
        line_offset,
        lines: text.lines().map(|l| l.chars().collect()).collect(),
    };
    let mut root = None;
    while let Some((ev, mark)) = builder.events.next() {
        match ev {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(SyntaxError {
                        line: mark.line() + line_offset,
                        col: mark.col() + 1,
                        message: "a recipe is one YAML document; found a second one".into(),
                    });
                }
                if builder
                    .events
                    .peek()
                    .is_some_and(|(e, _)| matches!(e, Event::DocumentEnd))
                {
                    continue;
                }
                let (ev, mark) = builder.events.next().ok_or_else(|| SyntaxError {
                    line: mark.line() + line_offset,
                    col: mark.col() + 1,
                    message: "unexpected end of document".into(),
                })?;
                root = Some(builder.node(ev, mark)?);
            }
            other => {
                return Err(SyntaxError {
                    line: mark.line() + line_offset,
                    col: mark.col() + 1,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        }
    }
    Ok(root.filter(|n| n.value != Value::Null))
}

struct Builder<I: Iterator<Item = (Event, Marker)>> {
    events: std::iter::Peekable<I>,
    anchors: HashMap<usize, Node>,
    line_offset: usize,
    lines: Vec<Vec<char>>,
}

impl<I: Iterator<Item = (Event, Marker)>> Builder<I> {
    /// The parser marks a collection where it has read ahead to, not where it starts:
    /// a collection starts at its tag if it has one (found by searching back from its
    /// first child), else at its first child.
    fn collection_mark(
        &self,
        event: &Marker,
        first_child: Option<&Mark>,
        tag: Option<&str>,
    ) -> Mark {
        let Some(Mark::File { line, col }) = first_child.cloned() else {
            return mark_of(event, self.line_offset);
        };
        if let Some(tag) = tag {
            let needle: Vec<char> = format!("!{tag}").chars().collect();
            let mut l = line - self.line_offset;
            let mut end = col - 1;
            while l >= 1 {
                let chars = &self.lines[l - 1];
                let end_c = end.min(chars.len());
                if end_c >= needle.len()
                    && let Some(pos) = (0..=end_c - needle.len())
                        .rev()
                        .find(|&p| chars[p..p + needle.len()] == needle[..])
                {
                    return Mark::File {
                        line: l + self.line_offset,
                        col: pos + 1,
                    };
                }
                l -= 1;
                end = usize::MAX;
            }
        }
        Mark::File { line, col }
    }

    fn err(&self, mark: &Marker, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: mark.line() + self.line_offset,
            col: mark.col() + 1,
            message: message.into(),
        }
    }

    fn node(&mut self, ev: Event, marker: Marker) -> Result<Node, SyntaxError> {
        let mark = mark_of(&marker, self.line_offset);
        let (node, anchor) = match ev {
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.err(&marker, "alias to an unknown anchor"))?;
                return Ok(Node { mark, ..node });
            }
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain;
                let tag = self.local_tag(&marker, tag)?;
                let value = if plain && type_plain(&text) == Typed::Null {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                (Node { value, tag, mark }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = self.local_tag(&marker, tag)?;
                let mut items = Vec::new();
                loop {
                    let (ev, m) = self
                        .events
                        .next()
                        .ok_or_else(|| self.err(&marker, "unterminated list"))?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, m)?);
                }
                let mark =
                    self.collection_mark(&marker, items.first().map(|n| &n.mark), tag.as_deref());
                (
                    Node {
                        value: Value::Seq(items),
                        tag,
                        mark,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                let tag = self.local_tag(&marker, tag)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, m) = self
                        .events
                        .next()
                        .ok_or_else(|| self.err(&marker, "unterminated mapping"))?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, m)?;
                    let Some(key_text) = key.as_str().map(str::to_owned) else {
                        return Err(self.err(&m, "mapping keys must be plain scalars"));
                    };
                    if entries.iter().any(|(k, _)| k.as_str() == Some(&key_text)) {
                        return Err(self.err(&m, format!("duplicate key `{key_text}`")));
                    }
                    let (ev, vm) = self
                        .events
                        .next()
                        .ok_or_else(|| self.err(&m, "mapping key without a value"))?;
                    let value = self.node(ev, vm)?;
                    entries.push((key, value));
                }
                let mark = self.collection_mark(
                    &marker,
                    entries.first().map(|(k, _)| &k.mark),
                    tag.as_deref(),
                );
                (
                    Node {
                        value: Value::Map(entries),
                        tag,
                        mark,
                    },
                    anchor,
                )
            }
            other => return Err(self.err(&marker, format!("unexpected YAML event {other:?}"))),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn local_tag(
        &self,
        marker: &Marker,
        tag: Option<yaml_rust2::parser::Tag>,
    ) -> Result<Option<String>, SyntaxError> {
        match tag {
            None => Ok(None),
            Some(t) if t.handle == "!" => Ok(Some(t.suffix)),
            // `!!str` and friends from the core schema: keep the node, drop the tag.
            Some(t) if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" => Ok(None),
            Some(t) => Err(self.err(
                marker,
                format!("unsupported tag `{}{}`", t.handle, t.suffix),
            )),
        }
    }
}

/// Writes a node back as YAML (block style), tags included. Scalars that would not
/// read back as the same type are quoted.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    emit_node(node, 0, &mut out, Context::Top);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Top,
    MapValue,
    SeqItem,
}

fn scalar_text(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Scalar { text, plain } => {
            let needs_quotes = !*plain && !matches!(type_plain(text), Typed::Str(_))
                || text.is_empty()
                || text.starts_with(|c: char| "!&*-?{}[]|>'\"%@`#,: ".contains(c))
                || text.ends_with([' ', ':'])
                || text.contains(": ")
                || text.contains(" #")
                || text.contains(['\n', '\t', '\\', '"']);
            if needs_quotes {
                serde_json::to_string(text).expect("strings always serialise")
            } else {
                text.clone()
            }
        }
        _ => unreachable!("scalar_text is only called on scalars"),
    }
}

fn emit_node(node: &Node, indent: usize, out: &mut String, ctx: Context) {
    let pad = " ".repeat(indent);
    let tag = node.tag.as_ref().map(|t| format!("!{t}"));
    match &node.value {
        Value::Null | Value::Scalar { .. } => {
            if let Some(tag) = &tag {
                out.push_str(tag);
                out.push(' ');
            }
            out.push_str(&scalar_text(node));
            out.push('\n');
        }
        Value::Seq(items) if items.is_empty() => {
            out.push_str("[]\n");
        }
        Value::Map(entries) if entries.is_empty() => {
            if let Some(tag) = &tag {
                out.push_str(tag);
                out.push(' ');
            }
            out.push_str("{}\n");
        }
        Value::Seq(items) => {
            if ctx != Context::Top {
                out.push('\n');
            }
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                emit_inline_start(item, indent + 2, out);
            }
        }
        Value::Map(entries) => {
            let mut first = true;
            if let Some(tag) = &tag {
                out.push_str(tag);
                out.push('\n');
                first = false;
            } else if ctx == Context::MapValue {
                out.push('\n');
                first = false;
            }
            for (key, value) in entries {
                if !(first && ctx == Context::SeqItem) {
                    out.push_str(&pad);
                }
                first = false;
                out.push_str(&scalar_text(key));
                out.push(':');
                match &value.value {
                    Value::Map(e) if !e.is_empty() || value.tag.is_some() => {
                        if value.tag.is_some() {
                            out.push(' ');
                        }
                        emit_node(value, indent + 2, out, Context::MapValue);
                    }
                    Value::Seq(s) if !s.is_empty() => {
                        emit_node(value, indent, out, Context::MapValue)
                    }
                    _ => {
                        out.push(' ');
                        emit_node(value, indent + 2, out, Context::MapValue);
                    }
                }
            }
        }
    }
}

fn emit_inline_start(item: &Node, indent: usize, out: &mut String) {
    match &item.value {
        Value::Map(e) if !e.is_empty() => {
            if let Some(tag) = &item.tag {
                out.push_str(&format!("!{tag}\n"));
                let untagged = Node {
                    tag: None,
                    ..item.clone()
                };
                emit_node(&untagged, indent, out, Context::Top);
            } else {
                emit_node(item, indent, out, Context::SeqItem);
            }
        }
        Value::Seq(s) if !s.is_empty() => {
            // A nested list: put it on the following lines.
            out.push('\n');
            let pad = " ".repeat(indent);
            for sub in s {
                out.push_str(&pad);
                out.push_str("- ");
                emit_inline_start(sub, indent + 2, out);
            }
        }
        _ => emit_node(item, indent, out, Context::SeqItem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_types_plain_scalars() {
        assert_eq!(type_plain("8e-5"), Typed::Float(8e-5));
        assert_eq!(type_plain("1.5"), Typed::Float(1.5));
        assert_eq!(type_plain(".5"), Typed::Float(0.5));
        assert_eq!(type_plain("-3"), Typed::Int(-3));
        assert_eq!(type_plain("0x1f"), Typed::Int(31));
        assert_eq!(type_plain("true"), Typed::Bool(true));
        assert_eq!(type_plain("~"), Typed::Null);
        assert_eq!(type_plain("2:4"), Typed::Str("2:4"));
        assert_eq!(type_plain("1e"), Typed::Str("1e"));
        assert_eq!(type_plain("eval(a)"), Typed::Str("eval(a)"));
    }

    #[test]
    fn marks_tags_and_quoting_survive_parsing() {
        let doc = "a: 1\nmods:\n  - !GMPruningModifier\n    x: '0.5'\n";
        let root = parse(doc, 0).unwrap().unwrap();
        let map = root.as_map().unwrap();
        assert_eq!(map[0].0.mark, Mark::File { line: 1, col: 1 });
        let Value::Seq(items) = &map[1].1.value else {
            panic!("expected a list")
        };
        assert_eq!(items[0].tag.as_deref(), Some("GMPruningModifier"));
        let inner = items[0].as_map().unwrap();
        assert_eq!(inner[0].1.typed(), Some(Typed::Str("0.5")));
        assert_eq!(inner[0].1.mark, Mark::File { line: 4, col: 8 });
    }

    #[test]
    fn duplicate_keys_and_second_documents_are_errors() {
        let e = parse("a: 1\na: 2\n", 0).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "duplicate key `a`"));
        assert!(parse("a: 1\n---\nb: 2\n", 0).is_err());
    }

    #[test]
    fn emitted_yaml_parses_back_to_the_same_tree() {
        let doc = "x: 1\nname: \"2:4\"\ns: 'true'\nlist:\n  - a\n  - [1, 2]\nm:\n  - !Tag\n    k: v\n    nested: {a: 1, b: [x, 'y z']}\n  - !Empty {}\nempty: []\n";
        let a = parse(doc, 0).unwrap().unwrap();
        let text = emit(&a);
        let b = parse(&text, 0).unwrap().unwrap();
        assert_eq!(strip(&a), strip(&b), "emitted:\n{text}");
    }

    fn strip(n: &Node) -> Node {
        let value = match &n.value {
            Value::Seq(items) => Value::Seq(items.iter().map(strip).collect()),
            Value::Map(e) => Value::Map(e.iter().map(|(k, v)| (strip(k), strip(v))).collect()),
            Value::Scalar { text, plain } => Value::Scalar {
                text: text.clone(),
                // Quoting may change, the type may not.
                plain: *plain && !matches!(type_plain(text), Typed::Str(_)),
            },
            Value::Null => Value::Null,
        };
        Node {
            value,
            tag: n.tag.clone(),
            mark: Mark::Override(String::new()),
        }
    }
}
