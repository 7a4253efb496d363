//! A YAML (and JSON) document tree that remembers where every key and value was written and the
//! text a scalar was written as, built under size, depth and alias limits.
//!
//! `spec` has the same machinery but keeps it crate-private; this is the subset buildspecs and
//! the image files need, plus the raw scalar text, because CodeBuild reads `TAG: 1.10` as the
//! string `1.10`, not the number 1.1.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Files larger than this are refused before parsing (the same limit as `spec`'s files).
pub const FILE_SIZE_MAX: usize = 1024 * 1024;
/// Deepest nesting accepted; a buildspec needs fewer than eight levels.
pub const DEPTH_MAX: usize = 64;
/// Most nodes that anchors and aliases may copy in one file ("billion laughs" guard).
pub const ALIAS_NODES_MAX: usize = 10_000;

/// A 1-based line and column (in characters); 0:0 when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const UNKNOWN: Pos = Pos { line: 0, column: 0 };

    pub fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
    /// The scalar as written (after YAML unquoting); empty for lists and maps.
    pub raw: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn is_scalar(&self) -> bool {
        !matches!(self.value, Value::Seq(_) | Value::Map(_))
    }
}

/// A syntax error: where, the path of the container being read, and what to do.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node>, size: usize },
    Map { pos: Pos, anchor: usize, entries: Vec<Entry>, key: Option<(String, Pos)>, size: usize },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    copied: usize,
    root: Option<Node>,
    documents: usize,
}

/// Parses one YAML document (JSON included: it is YAML's flow style).
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b =
        Builder { stack: Vec::new(), anchors: HashMap::new(), copied: 0, root: None, documents: 0 };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            b.error(Pos::new(m.line(), m.col() + 1), hint(e.info()))
        })?;
        b.event(event, span)?;
    }
    Ok(b.root.unwrap_or(Node { pos: Pos::new(1, 1), value: Value::Null, raw: String::new() }))
}

fn hint(info: &str) -> String {
    if info.contains("tab") {
        format!("invalid YAML: {info}; indent with spaces, YAML does not allow tabs there")
    } else if info.contains("mapping values are not allowed") {
        format!(
            "invalid YAML: {info}; a command containing `: ` must be quoted (wrap the whole \
             command in '…'), or the indentation is off"
        )
    } else {
        format!("invalid YAML: {info}")
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

impl Builder {
    fn path(&self) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => out.push_str(&format!("[{}]", items.len())),
                Frame::Map { key: Some((k, _)), .. } => push_key(&mut out, k),
                Frame::Map { .. } => break,
            }
        }
        out
    }

    fn error(&self, pos: Pos, message: String) -> SyntaxError {
        SyntaxError { pos, path: self.path(), message }
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let pos = pos_of(&span);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.error(
                        pos,
                        "a second YAML document (after `---`); a buildspec is one document"
                            .to_string(),
                    ));
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.awaiting_key() {
                    if anchor != 0 {
                        return Err(
                            self.error(pos, "anchors on keys are not supported".to_string())
                        );
                    }
                    return self.key(text.into_owned(), pos);
                }
                let value = self.scalar(&text, style, tag.as_deref(), pos)?;
                self.complete(Node { pos, value, raw: text.into_owned() }, 1, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(pos, tag.as_deref())?;
                self.stack.push(Frame::Seq { pos, anchor, items: Vec::new(), size: 1 });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.open(pos, tag.as_deref())?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    size: 1,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, size, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items, size }) => {
                        (Node { pos, value: Value::Seq(items), raw: String::new() }, size, anchor)
                    }
                    Some(Frame::Map { pos, anchor, entries, size, .. }) => {
                        (Node { pos, value: Value::Map(entries), raw: String::new() }, size, anchor)
                    }
                    None => return Ok(()),
                };
                self.complete(node, size, anchor)
            }
            Event::Alias(id) => {
                if self.awaiting_key() {
                    return Err(self.error(pos, "aliases as keys are not supported".to_string()));
                }
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    return Err(self.error(
                        pos,
                        "this alias refers to a value that contains it; recursive YAML is not \
                         supported"
                            .to_string(),
                    ));
                };
                self.copy(size, pos)?;
                self.complete(node, size, 0)
            }
        }
    }

    fn open(&mut self, pos: Pos, tag: Option<&Tag>) -> Result<(), SyntaxError> {
        if self.awaiting_key() {
            return Err(self.error(
                pos,
                "a list or map used as a key is not supported; keys are plain names".to_string(),
            ));
        }
        if let Some(tag) = tag
            && !(tag.is_yaml_core_schema() && matches!(tag.suffix.as_str(), "seq" | "map"))
        {
            return Err(self.error(pos, unsupported_tag(tag)));
        }
        if self.stack.len() >= DEPTH_MAX {
            return Err(self.error(
                pos,
                format!("nesting is deeper than {DEPTH_MAX} levels; a buildspec needs far fewer"),
            ));
        }
        Ok(())
    }

    fn key(&mut self, key: String, pos: Pos) -> Result<(), SyntaxError> {
        if key == "<<" {
            return Err(self.error(
                pos,
                "YAML merge keys (`<<`) are not supported; use an alias (`*name`) for the whole \
                 value instead"
                    .to_string(),
            ));
        }
        let Some(Frame::Map { entries, key: slot, .. }) = self.stack.last_mut() else {
            return Ok(());
        };
        let first = entries.iter().find(|e| e.key == key).map(|e| e.key_pos.line);
        *slot = Some((key.clone(), pos));
        if let Some(line) = first {
            return Err(self.error(
                pos,
                format!("duplicate key `{key}` (first written on line {line}); keep one"),
            ));
        }
        Ok(())
    }

    fn copy(&mut self, size: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.copied = self.copied.saturating_add(size);
        if self.copied > ALIAS_NODES_MAX {
            return Err(self.error(
                pos,
                format!(
                    "YAML anchors and aliases here copy more than {ALIAS_NODES_MAX} values; write \
                     the values out or use fewer aliases"
                ),
            ));
        }
        Ok(())
    }

    fn complete(&mut self, node: Node, size: usize, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.copy(size, node.pos)?;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, size: total, .. }) => {
                *total = total.saturating_add(size);
                items.push(node);
            }
            Some(Frame::Map { entries, key, size: total, .. }) => {
                *total = total.saturating_add(size);
                if let Some((key, key_pos)) = key.take() {
                    entries.push(Entry { key, key_pos, value: node });
                }
            }
        }
        Ok(())
    }

    fn scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        pos: Pos,
    ) -> Result<Value, SyntaxError> {
        if let Some(tag) = tag {
            if !tag.is_yaml_core_schema() {
                return Err(self.error(pos, unsupported_tag(tag)));
            }
            if tag.suffix == "str" {
                return Ok(Value::Str(text.to_string()));
            }
        }
        if style != ScalarStyle::Plain {
            return Ok(Value::Str(text.to_string()));
        }
        Ok(resolve_plain(text))
    }
}

fn unsupported_tag(tag: &Tag) -> String {
    format!("YAML tag `{tag}` is not supported; write plain YAML values")
}

/// YAML 1.2 core schema resolution of a plain scalar (`yes` stays a string).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i128>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(text.parse().unwrap_or(f64::INFINITY)),
        };
    }
    if is_core_float(unsigned)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// Appends `.key` (or `key` at the root); keys that are not plain names are quoted: `["a b"]`.
pub(crate) fn push_key(path: &mut String, key: &str) {
    let plain =
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

pub(crate) fn child_key(path: &str, key: &str) -> String {
    let mut out = path.to_string();
    push_key(&mut out, key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_survives_number_resolution() {
        let root = parse("a: 1.10\nb: '007'\n").unwrap();
        let Value::Map(entries) = root.value else { panic!("not a map") };
        assert_eq!(entries[0].value.value, Value::Float(1.1));
        assert_eq!(entries[0].value.raw, "1.10");
        assert_eq!(entries[1].value.value, Value::Str("007".into()));
        assert_eq!(entries[1].key_pos, Pos::new(2, 1));
    }

    #[test]
    fn duplicates_and_second_documents_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos, Pos::new(3, 1));
        assert_eq!(e.message, "duplicate key `a` (first written on line 1); keep one");
        assert!(parse("a: 1\n---\nb: 2\n").unwrap_err().message.contains("second YAML document"));
    }
}
