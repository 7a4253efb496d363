//! A strict JSON (RFC 8259) parser that records the line and column of every value and key.
//!
//! Hand-written rather than serde_json because serde_json does not expose positions of nested
//! values, which semantic errors found after parsing need. It also names the common mistakes
//! (trailing commas, comments, single quotes, `True`) and bounds nesting.

use std::collections::HashMap;

use crate::diag::Pos;
use crate::tree::{
    DEPTH_MAX, Entry, Node, PATH_STEPS_SHOWN_MAX, Seg, SyntaxError, Value, render_path,
};

pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut p = Parser { text, bytes: text.as_bytes(), at: 0, cursor: Cursor::START, path: vec![] };
    p.skip_space()?;
    let root = p.value(0)?;
    p.skip_space()?;
    if p.at < p.bytes.len() {
        return Err(p.error_here(format!(
            "unexpected {} after the end of the JSON value; a file holds one value",
            p.describe_here()
        )));
    }
    Ok(root)
}

/// Converts byte offsets to line/column, moving forward only, so a file is scanned once even
/// when it is a single long line.
#[derive(Clone, Copy)]
struct Cursor {
    offset: usize,
    line: usize,
    column: usize,
}

impl Cursor {
    const START: Cursor = Cursor { offset: 0, line: 1, column: 1 };
}

struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    cursor: Cursor,
    path: Vec<Seg>,
}

impl Parser<'_> {
    fn pos_at(&mut self, offset: usize) -> Pos {
        if offset < self.cursor.offset {
            self.cursor = Cursor::START;
        }
        let mut c = self.cursor;
        for &b in &self.bytes[c.offset..offset.min(self.bytes.len())] {
            if b == b'\n' {
                c.line += 1;
                c.column = 1;
            } else if b & 0xC0 != 0x80 {
                c.column += 1;
            }
        }
        c.offset = offset.min(self.bytes.len());
        self.cursor = c;
        Pos::new(c.line, c.column)
    }

    fn error_at(&mut self, offset: usize, message: String) -> SyntaxError {
        SyntaxError {
            pos: self.pos_at(offset),
            path: render_path(&self.path, PATH_STEPS_SHOWN_MAX),
            message,
        }
    }

    fn error_here(&mut self, message: String) -> SyntaxError {
        self.error_at(self.at, message)
    }

    /// What is at the current position, for messages: "`x`" or "the end of the file".
    fn describe_here(&self) -> String {
        match self.text[self.at..].chars().next() {
            None => "end of file".to_string(),
            Some('\0') => "a NUL character (U+0000)".to_string(),
            Some(c) if c.is_control() => format!("character U+{:04X}", c as u32),
            Some(c) => format!("`{c}`"),
        }
    }

    fn skip_space(&mut self) -> Result<(), SyntaxError> {
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.at += 1,
                b'/' if matches!(self.bytes.get(self.at + 1), Some(b'/' | b'*')) => {
                    return Err(self.error_here("comments are not allowed in JSON".to_string()));
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth >= DEPTH_MAX {
            return Err(self.error_here(format!(
                "nesting is deeper than {DEPTH_MAX} levels; cutover's files need far fewer"
            )));
        }
        let start = self.at;
        let pos = self.pos_at(start);
        let value = match self.bytes.get(self.at) {
            None => {
                return Err(self.error_here(
                    "unexpected end of file; expected a value (is a `}` or `]` missing?)"
                        .to_string(),
                ));
            }
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'\'') => {
                return Err(self.error_here(
                    "JSON strings are written in double quotes (\"), not single quotes".to_string(),
                ));
            }
            Some(_) => self.literal()?,
        };
        let raw = match &value {
            Value::Str(s) => s.clone(),
            Value::Seq(_) | Value::Map(_) => String::new(),
            _ => self.text[start..self.at].to_string(),
        };
        Ok(Node { pos, value, raw })
    }

    fn literal(&mut self) -> Result<Value, SyntaxError> {
        let rest = &self.text[self.at..];
        let word_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let word = &rest[..word_len];
        let value = match word {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            "True" | "TRUE" | "False" | "FALSE" | "Null" | "NULL" | "None" => {
                return Err(self.error_here(format!(
                    "`{word}` is not JSON; the literals are `true`, `false` and `null`, in \
                     lowercase"
                )));
            }
            "" => {
                return Err(
                    self.error_here(format!("expected a value, found {}", self.describe_here()))
                );
            }
            _ => {
                return Err(self.error_here(format!(
                    "expected a value, found `{word}`; strings must be in double quotes"
                )));
            }
        };
        self.at += word_len;
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.at += 1; // `{`
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        self.skip_space()?;
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Value::Map(entries));
        }
        loop {
            self.skip_space()?;
            let key_offset = self.at;
            match self.bytes.get(self.at) {
                Some(b'"') => {}
                Some(b'}') if !entries.is_empty() => {
                    return Err(self.error_here(
                        "trailing comma before `}`; JSON does not allow it, remove the comma"
                            .to_string(),
                    ));
                }
                Some(b'\'') => {
                    return Err(self.error_here(
                        "JSON keys are written in double quotes (\"), not single quotes"
                            .to_string(),
                    ));
                }
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside an object; is a `}` missing?".to_string(),
                    ));
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected a key in double quotes, found {}",
                        self.describe_here()
                    )));
                }
            }
            let key_pos = self.pos_at(key_offset);
            let key = self.string()?;
            self.skip_space()?;
            if self.bytes.get(self.at) != Some(&b':') {
                return Err(self.error_here(format!(
                    "expected `:` after the key \"{key}\", found {}",
                    self.describe_here()
                )));
            }
            self.at += 1;
            self.skip_space()?;
            if let Some(first) = seen.get(&key) {
                let line = first.line();
                self.path.push(Seg::Key(key.clone()));
                let err = self.error_at(
                    key_offset,
                    format!("duplicate key \"{key}\" (first written on line {line}); keep one"),
                );
                return Err(err);
            }
            seen.insert(key.clone(), key_pos);
            self.path.push(Seg::Key(key.clone()));
            let value = self.value(depth + 1)?;
            self.path.pop();
            entries.push(Entry { key, key_pos, value });
            self.skip_space()?;
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Map(entries));
                }
                Some(b'"') => {
                    return Err(self.error_here(
                        "expected `,` or `}` after a member; is a comma missing?".to_string(),
                    ));
                }
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside an object; is a `}` missing?".to_string(),
                    ));
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected `,` or `}}` after a member, found {}",
                        self.describe_here()
                    )));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.at += 1; // `[`
        let mut items = Vec::new();
        self.skip_space()?;
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Value::Seq(items));
        }
        loop {
            self.skip_space()?;
            if self.bytes.get(self.at) == Some(&b']') {
                return Err(self.error_here(
                    "trailing comma before `]`; JSON does not allow it, remove the comma"
                        .to_string(),
                ));
            }
            self.path.push(Seg::Index(items.len()));
            let item = self.value(depth + 1)?;
            self.path.pop();
            items.push(item);
            self.skip_space()?;
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Seq(items));
                }
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside an array; is a `]` missing?".to_string(),
                    ));
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected `,` or `]` after an array element, found {}; is a comma missing?",
                        self.describe_here()
                    )));
                }
            }
        }
    }

    /// Parses a string starting at its opening quote.
    fn string(&mut self) -> Result<String, SyntaxError> {
        self.at += 1; // `"`
        let mut out = String::new();
        loop {
            let run_start = self.at;
            while let Some(&b) = self.bytes.get(self.at) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[run_start..self.at]);
            match self.bytes.get(self.at) {
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside a string; is a closing `\"` missing?"
                            .to_string(),
                    ));
                }
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(&b) => {
                    let hint = match b {
                        b'\n' => {
                            "a line break inside a string must be written `\\n`; is a closing `\"` \
                             missing?"
                        }
                        b'\t' => "a tab inside a string must be written `\\t`",
                        _ => "control characters inside a string must be escaped",
                    };
                    return Err(
                        self.error_here(format!("character U+{:04X} in a string: {hint}", b))
                    );
                }
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), SyntaxError> {
        let at = self.at;
        self.at += 1; // `\`
        let c = match self.bytes.get(self.at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.at += 1;
                let high = self.hex4(at)?;
                let c = if (0xD800..0xDC00).contains(&high) {
                    if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                        return Err(self.error_at(
                            at,
                            "unpaired surrogate in a \\u escape; write the character itself"
                                .to_string(),
                        ));
                    }
                    self.at += 2;
                    let low = self.hex4(at)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.error_at(
                            at,
                            "unpaired surrogate in a \\u escape; write the character itself"
                                .to_string(),
                        ));
                    }
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                } else {
                    char::from_u32(high)
                };
                let Some(c) = c else {
                    return Err(self.error_at(
                        at,
                        "unpaired surrogate in a \\u escape; write the character itself"
                            .to_string(),
                    ));
                };
                out.push(c);
                return Ok(());
            }
            _ => {
                return Err(self.error_at(
                    at,
                    format!(
                        "invalid escape `\\{}`; JSON escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t \
                         and \\uXXXX (write a backslash as \\\\)",
                        self.text[self.at..].chars().next().unwrap_or(' ')
                    ),
                ));
            }
        };
        self.at += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self, escape_at: usize) -> Result<u32, SyntaxError> {
        let digits = self.bytes.get(self.at..self.at + 4).and_then(|d| std::str::from_utf8(d).ok());
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok()) {
            Some(v) if digits.is_some_and(|d| d.bytes().all(|b| b.is_ascii_hexdigit())) => {
                self.at += 4;
                Ok(v)
            }
            _ => Err(self.error_at(escape_at, "a \\u escape needs four hex digits".to_string())),
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.bytes.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at - from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        let int_digits = digits(self);
        let bad = |p: &mut Self| {
            let rest = &p.text[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
                .unwrap_or(rest.len());
            let word = rest[..end].to_string();
            p.error_at(start, format!("invalid number `{word}`"))
        };
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return Err(bad(self));
        }
        let mut is_int = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            is_int = false;
            if digits(self) == 0 {
                return Err(bad(self));
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            is_int = false;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(bad(self));
            }
        }
        if self.bytes.get(self.at).is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(bad(self));
        }
        let raw = &self.text[start..self.at];
        if is_int && let Ok(i) = raw.parse::<i128>() {
            return Ok(Value::Int(i));
        }
        Ok(Value::Float(raw.parse::<f64>().unwrap_or(f64::INFINITY)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        format!("{}:{}: {}: {}", e.pos.line(), e.pos.column(), e.path, e.message)
    }

    #[test]
    fn values_keep_their_positions() {
        let root = parse("{\n  \"a\": [1, \"é\", {\"b\": null}],\n  \"c\": -2.5e1\n}").unwrap();
        let Value::Map(entries) = &root.value else { panic!("not a map") };
        assert_eq!((entries[0].key_pos.line(), entries[0].key_pos.column()), (2, 3));
        let Value::Seq(items) = &entries[0].value.value else { panic!("not a seq") };
        assert_eq!((items[2].pos.line(), items[2].pos.column()), (2, 17));
        assert_eq!(entries[1].value.value, Value::Float(-25.0));
    }

    #[test]
    fn common_mistakes_are_named() {
        assert_eq!(
            err("{\"a\": 1,}"),
            "1:9: : trailing comma before `}`; JSON does not allow it, remove the comma"
        );
        assert_eq!(
            err("{\"a\": [1 2]}"),
            "1:10: a: expected `,` or `]` after an array element, found `2`; is a comma missing?"
        );
        assert_eq!(
            err("{\"a\": True}"),
            "1:7: a: `True` is not JSON; the literals are `true`, `false` and `null`, in lowercase"
        );
        assert_eq!(err("// x\n{}"), "1:1: : comments are not allowed in JSON");
        assert_eq!(
            err("{\"a\": 1, \"a\": 2}"),
            "1:10: a: duplicate key \"a\" (first written on line 1); keep one"
        );
        assert_eq!(err("{\"a\": 01}"), "1:7: a: invalid number `01`");
        assert_eq!(err("{\"a\": \"x\\u12\"}"), "1:9: a: a \\u escape needs four hex digits");
    }

    #[test]
    fn surrogate_pairs_decode() {
        let root = parse("\"\\ud83d\\ude00\"").unwrap();
        assert_eq!(root.value, Value::Str("😀".to_string()));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("deeper than 64"));
    }
}
