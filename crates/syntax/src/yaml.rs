//! Builds a positioned document tree from YAML events (saphyr-parser), resolving plain scalars
//! with the YAML 1.2 core schema and expanding aliases under a budget.
//!
//! The budget is why this is not a general-purpose loader: a "billion laughs" file (aliases of
//! lists of aliases) would otherwise expand to gigabytes from a few hundred bytes.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span, Tag};

use crate::diag::Pos;
use crate::tree::{ALIAS_NODES_MAX, DEPTH_MAX, Entry, Node, Seg, SyntaxError, Value, render_path};

/// What the parser's messages advise and which scalars it resolves, for the kind of file being
/// read: the machinery is shared, but a buildspec's advice is about commands, not cutover files.
#[derive(Clone, Copy, Debug)]
pub struct YamlOptions {
    /// Follows "a second YAML document (after `---`); ".
    pub one_document: &'static str,
    /// Follows "nesting is deeper than 64 levels; ".
    pub nesting: &'static str,
    /// Follows "invalid YAML: {what saphyr said}; " for a `: ` where a value was expected.
    pub colon_hint: &'static str,
    /// Follows the same for saphyr's recursion limit; `None` adds no advice.
    pub recursion_hint: Option<&'static str>,
    /// Follows the same for a bad block scalar (`>` or `|`); `None` adds no advice.
    pub block_scalar_hint: Option<&'static str>,
    /// Follows "YAML tag `!x` is not supported; ".
    pub tag_advice: &'static str,
    /// Goes between "copy more than 10000 values" and "; write the values out…".
    pub alias_aside: &'static str,
    /// Also resolve `0x1F`, `0o17`, `.inf` and `.nan` as numbers (the whole YAML 1.2 core schema);
    /// otherwise they stay strings.
    pub hex_octal_inf: bool,
    /// Field paths in messages show at most this many steps, then `…`.
    pub path_steps_max: usize,
}

impl YamlOptions {
    /// The options behind this crate's own files (appspec, cutover.yaml).
    pub const CUTOVER: YamlOptions = YamlOptions {
        one_document: "a file holds one document",
        nesting: "cutover's files need far fewer",
        colon_hint: "is a `: ` inside an unquoted value (quote it), or is the indentation off?",
        recursion_hint: Some("the nesting is far deeper than cutover's files need"),
        block_scalar_hint: Some(
            "a value starting with `>` or `|` begins a block of text: quote it, like \
             `comparison: \">=\"`",
        ),
        tag_advice: "cutover files are plain YAML (no CloudFormation functions like !Ref)",
        alias_aside: " (a \"billion laughs\" file?)",
        hex_octal_inf: true,
        path_steps_max: crate::tree::PATH_STEPS_SHOWN_MAX,
    };
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        size: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos)>,
        /// The keys of `entries`, for maps too long to scan for a duplicate (see
        /// [`KEYS_SCANNED_MAX`]); empty until then.
        keys: HashSet<String>,
        size: usize,
    },
}

/// Most entries a map is scanned through for a duplicate key. Nearly every map is this short,
/// and a scan costs less than hashing and copying each key; a longer map (thousands of labels)
/// keeps a set of its keys, so that a duplicate check stays constant-time.
const KEYS_SCANNED_MAX: usize = 16;

struct Builder<'o> {
    options: &'o YamlOptions,
    lines: Lines,
    stack: Vec<Frame>,
    /// Completed anchored nodes and how many nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied for anchors and aliases so far, bounded by `ALIAS_NODES_MAX`: the anchor
    /// table holds copies too, so nested anchors would cost memory even without an alias.
    copied_nodes: usize,
    root: Option<Node>,
    documents: usize,
}

/// Parses one YAML document with this crate's messages.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    parse_with(text, &YamlOptions::CUTOVER)
}

/// Parses one YAML document (JSON included: it is YAML's flow style) into a positioned tree,
/// every scalar keeping the text it was written as in [`Node::raw`].
pub fn parse_with(text: &str, options: &YamlOptions) -> Result<Node, SyntaxError> {
    let lines = Lines::of(text);
    if let Some((at, c)) = first_unprintable(text) {
        let pos = lines.pos(at);
        return Err(SyntaxError { pos, path: String::new(), message: unprintable_message(c) });
    }
    let mut b = Builder {
        options,
        lines,
        stack: Vec::new(),
        anchors: HashMap::new(),
        copied_nodes: 0,
        root: None,
        documents: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let at = if is_about_a_tab(e.info()) {
                nearest_tab(text, *e.marker())
            } else {
                e.marker().index()
            };
            b.error(b.lines.pos(at), yaml_hint(e.info(), options))
        })?;
        b.event(event, span)?;
    }
    Ok(b.root.unwrap_or(Node { pos: Pos::START, value: Value::Null, raw: String::new() }))
}

/// Where each line starts, in characters, so that positions come from saphyr's character index
/// and are counted as editors count them: lines end at `\n` (a `\r` before it is part of the
/// line end), columns are characters since the line start. saphyr's own line and column differ
/// (a lone `\r` starts a line for it), and its error markers are where its scanner stopped.
struct Lines {
    starts: Vec<usize>,
    /// How many characters the text has: saphyr's markers can point past the end (after a
    /// directive at the end of the file), and such a position is the end of the file.
    end: usize,
    /// The line (index into `starts`) of the last position asked for: events come in file
    /// order, so the next one is nearly always on that line or a few after it.
    last: std::cell::Cell<usize>,
}

impl Lines {
    fn of(text: &str) -> Lines {
        let mut starts = vec![0];
        // Characters are counted by their first byte: decoding each one would cost more than
        // building the tree of a file of plain ASCII.
        let mut chars = 0;
        for b in text.bytes() {
            if !is_utf8_continuation(b) {
                chars += 1;
            }
            if b == b'\n' {
                starts.push(chars);
            }
        }
        Lines { starts, end: chars, last: std::cell::Cell::new(0) }
    }

    /// The line and column of the character at index `at` (or of the end of the text).
    fn pos(&self, at: usize) -> Pos {
        let at = at.min(self.end);
        let on_line = |line: usize| {
            self.starts[line] <= at && self.starts.get(line + 1).is_none_or(|&next| at < next)
        };
        let last = self.last.get();
        // A few lines forward are walked; further, or backward, is a binary search.
        let line = (last..self.starts.len().min(last + 4))
            .find(|&line| on_line(line))
            .unwrap_or_else(|| self.starts.partition_point(|&start| start <= at).saturating_sub(1));
        self.last.set(line);
        Pos::new(line + 1, at - self.starts[line] + 1)
    }
}

/// The character index of the tab a saphyr tab error is about: saphyr stops its scanner before
/// or after it (at the end of the scalar the tab follows, or just past an indenting tab), so the
/// tab is the last one on the marker's line up to the marker, or else the next one after it.
fn nearest_tab(text: &str, marker: Marker) -> usize {
    let at = marker.index();
    let line_start = at.saturating_sub(marker.col());
    let mut before = None;
    for (i, c) in text.chars().enumerate().skip(line_start) {
        match c {
            '\t' if i <= at => before = Some(i),
            '\t' => return before.unwrap_or(i),
            _ if i > at && before.is_some() => break,
            _ => {}
        }
    }
    before.unwrap_or(at)
}

/// The first character YAML does not allow anywhere in a file (C0 controls other than tab and
/// line ends, DEL, C1 controls other than NEL, U+FFFE and U+FFFF), with its character index.
/// saphyr calls these "unprintable" at wherever its scanner is; this names them at their place.
fn first_unprintable(text: &str) -> Option<(usize, char)> {
    // The bytes of ASCII text are its characters, checked without decoding (the usual file).
    if text.is_ascii() {
        let at = text
            .bytes()
            .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7F)?;
        return Some((at, char::from(text.as_bytes()[at])));
    }
    text.chars().enumerate().find(|(_, c)| {
        let c = *c as u32;
        (c < 0x20 && !matches!(c, 0x09 | 0x0A | 0x0D))
            || (0x7F..=0x9F).contains(&c) && c != 0x85
            || c == 0xFFFE
            || c == 0xFFFF
    })
}

/// A byte that continues a UTF-8 character rather than starting one.
fn is_utf8_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

fn unprintable_message(c: char) -> String {
    if c == '\0' {
        "a NUL character (U+0000), which YAML does not allow; remove it (is this a binary file, \
         or one saved as UTF-16?)"
            .to_string()
    } else {
        format!(
            "control character U+{:04X}, which YAML does not allow; remove it (inside double \
             quotes it can be written as an escape, like \"\\x{:02X}\")",
            c as u32, c as u32
        )
    }
}

/// Whether a saphyr message is about a tab ("found a tab", "tabs disallowed…"; not
/// "unprintable").
fn is_about_a_tab(info: &str) -> bool {
    info.split(|c: char| !c.is_ascii_alphabetic()).any(|word| word == "tab" || word == "tabs")
}

/// saphyr's messages, with advice for the mistakes people make most.
fn yaml_hint(info: &str, options: &YamlOptions) -> String {
    if is_about_a_tab(info) {
        format!("invalid YAML: {info}; indent with spaces, YAML does not allow tabs there")
    } else if let Some(hint) = options.recursion_hint
        && info.contains("recursion limit")
    {
        format!("invalid YAML: {info}; {hint}")
    } else if let Some(hint) = options.block_scalar_hint
        && info.contains("block scalar")
    {
        format!("invalid YAML: {info}; {hint}")
    } else if info.contains("mapping values are not allowed") {
        format!("invalid YAML: {info}; {}", options.colon_hint)
    } else {
        format!("invalid YAML: {info}")
    }
}

impl Builder<'_> {
    fn pos_of(&self, span: &Span) -> Pos {
        self.lines.pos(span.start.index())
    }

    fn path(&self) -> String {
        let mut segs = Vec::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => segs.push(Seg::Index(items.len())),
                Frame::Map { key: Some((k, _)), .. } => segs.push(Seg::Key(k.clone())),
                Frame::Map { .. } => break,
            }
        }
        render_path(&segs, self.options.path_steps_max)
    }

    fn error(&self, pos: Pos, message: String) -> SyntaxError {
        SyntaxError { pos, path: self.path(), message }
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let pos = self.pos_of(&span);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.error(
                        pos,
                        format!(
                            "a second YAML document (after `---`); {}",
                            self.options.one_document
                        ),
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
                    keys: HashSet::new(),
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
                let Some((_, size)) = self.anchors.get(&id) else {
                    return Err(self.error(
                        pos,
                        "this alias refers to a value that contains it; recursive YAML is not \
                         supported"
                            .to_string(),
                    ));
                };
                let size = *size;
                self.copy(size, pos)?;
                let node = self.anchors.get(&id).map(|(node, _)| node.clone()).unwrap_or(Node {
                    pos,
                    value: Value::Null,
                    raw: String::new(),
                });
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
            return Err(self.error(pos, unsupported_tag(tag, self.options)));
        }
        if self.stack.len() >= DEPTH_MAX {
            return Err(self.error(
                pos,
                format!("nesting is deeper than {DEPTH_MAX} levels; {}", self.options.nesting),
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
        let duplicate = match self.stack.last() {
            Some(Frame::Map { keys, entries, .. })
                if entries.len() <= KEYS_SCANNED_MAX || keys.contains(&key) =>
            {
                entries.iter().find(|e| e.key == key).map(|e| e.key_pos.line())
            }
            _ => None,
        };
        if let Some(line) = duplicate {
            let message = format!("duplicate key `{key}` (first written on line {line}); keep one");
            if let Some(Frame::Map { key: slot, .. }) = self.stack.last_mut() {
                *slot = Some((key, pos));
            }
            return Err(self.error(pos, message));
        }
        if let Some(Frame::Map { key: slot, keys, entries, .. }) = self.stack.last_mut() {
            if entries.len() >= KEYS_SCANNED_MAX {
                if keys.is_empty() {
                    keys.extend(entries.iter().map(|e| e.key.clone()));
                }
                keys.insert(key.clone());
            }
            *slot = Some((key, pos));
        }
        Ok(())
    }

    /// Counts `size` copied nodes against the budget, before copying them.
    fn copy(&mut self, size: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.copied_nodes = self.copied_nodes.saturating_add(size);
        if self.copied_nodes > ALIAS_NODES_MAX {
            return Err(self.error(
                pos,
                format!(
                    "YAML anchors and aliases here copy more than {ALIAS_NODES_MAX} values{}; \
                     write the values out or use fewer aliases",
                    self.options.alias_aside
                ),
            ));
        }
        Ok(())
    }

    /// Attaches a finished node to its parent, or makes it the document's root.
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
                return Err(self.error(pos, unsupported_tag(tag, self.options)));
            }
            if tag.suffix == "str" {
                return Ok(Value::Str(text.to_string()));
            }
        }
        if style != ScalarStyle::Plain {
            return Ok(Value::Str(text.to_string()));
        }
        Ok(resolve_plain_with(text, self.options.hex_octal_inf))
    }
}

fn unsupported_tag(tag: &Tag, options: &YamlOptions) -> String {
    format!("YAML tag `{tag}` is not supported; {}", options.tag_advice)
}

/// YAML 1.2 core schema resolution of a plain scalar.
#[cfg(test)]
fn resolve_plain(text: &str) -> Value {
    resolve_plain_with(text, true)
}

/// Like the core schema, but without hex, octal, infinity and NaN unless `hex_octal_inf`.
fn resolve_plain_with(text: &str, hex_octal_inf: bool) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ if !hex_octal_inf => {}
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i128>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(text.parse().unwrap_or(f64::INFINITY)),
        };
    }
    if hex_octal_inf
        && let Some(octal) = text.strip_prefix("0o")
        && let Ok(i) = i128::from_str_radix(octal, 8)
        && !octal.starts_with(['+', '-'])
    {
        return Value::Int(i);
    }
    if hex_octal_inf
        && let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i128::from_str_radix(hex, 16)
        && !hex.starts_with(['+', '-'])
    {
        return Value::Int(i);
    }
    if is_core_float(unsigned)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_with_the_core_schema() {
        assert_eq!(resolve_plain("0.0"), Value::Float(0.0));
        assert_eq!(resolve_plain("8080"), Value::Int(8080));
        assert_eq!(resolve_plain("0x1F"), Value::Int(31));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("127.0.0.1"), Value::Str("127.0.0.1".into()));
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("10s"), Value::Str("10s".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
    }

    #[test]
    fn positions_and_aliases() {
        let root = parse("a: &x\n  b: 1\nc: *x\nd: [1, 'two']\n").unwrap();
        let Value::Map(entries) = &root.value else { panic!("not a map") };
        assert_eq!(entries.len(), 3);
        // A value with an anchor starts at the anchor.
        assert_eq!(entries[0].value.pos, Pos::new(1, 4));
        assert_eq!(entries[1].value, entries[0].value);
        assert_eq!(entries[2].key_pos, Pos::new(4, 1));
    }

    /// Line and column of every character counted the slow, obvious way.
    fn naive_pos(text: &str, at: usize) -> Pos {
        let before: Vec<char> = text.chars().take(at).collect();
        let line = before.iter().filter(|c| **c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
        Pos::new(line, column)
    }

    #[test]
    fn positions_count_characters_in_any_order_of_asking() {
        let text = "a: é\r\nbé: \"日本\"\n\n  - 🦀x\nlast";
        let lines = Lines::of(text);
        let count = text.chars().count();
        // In file order (as events come), backwards, and jumping about.
        let forward: Vec<usize> = (0..=count).collect();
        let backward: Vec<usize> = (0..=count).rev().collect();
        let jumps: Vec<usize> = (0..=count).map(|i| (i * 7) % (count + 1)).collect();
        for at in forward.into_iter().chain(backward).chain(jumps) {
            assert_eq!(lines.pos(at), naive_pos(text, at), "character {at}");
        }
        // Past the end (saphyr's marker after a final directive) is the end.
        assert_eq!(lines.pos(count + 5), naive_pos(text, count));
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_other_text() {
        assert_eq!(first_unprintable("a: 1\n\tb: \u{7}"), Some((9, '\u{7}')));
        assert_eq!(first_unprintable("é: \u{7f}"), Some((3, '\u{7f}')));
        assert_eq!(first_unprintable("é: \u{85}\u{9f}"), Some((4, '\u{9f}')));
        assert_eq!(first_unprintable("a: \r\n\tb\n"), None);
    }

    #[test]
    fn duplicate_keys_are_found_in_long_maps() {
        // Past the maps scanned key by key, the keys are kept in a set.
        let mut text: String = (1..=40).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k3: again\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.pos, e.message.as_str()),
            (Pos::new(41, 1), "duplicate key `k3` (first written on line 3); keep one")
        );
        let mut text: String = (1..=40).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k40: again\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.pos, e.message.as_str()),
            (Pos::new(41, 1), "duplicate key `k40` (first written on line 40); keep one")
        );
        let text: String = (1..=40).map(|i| format!("k{i}: {i}\n")).collect();
        let root = parse(&text).unwrap();
        assert_eq!(root.entries().map(<[Entry]>::len), Some(40));
    }

    #[test]
    fn duplicate_keys_and_second_documents_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            (e.pos, e.message.as_str()),
            (Pos::new(3, 1), "duplicate key `a` (first written on line 1); keep one")
        );
        assert!(parse("a: 1\n---\nb: 2\n").unwrap_err().message.contains("second YAML document"));
    }
}
