//! Typed reading of a positioned document tree: every getter checks one value, reports a
//! diagnostic at its position with its path when it is wrong, and lets the caller carry on so
//! that one run reports every error of a file.

use std::time::Duration;

use crate::diag::{Diagnostic, Errors, Parsed, Pos, suggest};
use crate::tree::{Entry, Format, Node, Value, child_index, child_key};

/// Most errors reported for one file; the rest are counted in a last line.
pub const ERRORS_MAX: usize = 50;

/// The diagnostics of one file being decoded: getters report into it and carry on, and
/// [`Cx::finish`] turns it into the value with its notes or every error in file order.
pub struct Cx<'f> {
    pub file: &'f str,
    pub format: Format,
    /// AppSpec keys are matched ignoring ASCII case, as aws-cli does.
    pub ignore_case: bool,
    /// CodeBuild's reading (buildspecs): messages describe numbers as written (`number 1.10`)
    /// and say "a list" and "a map" where a list or map was expected.
    pub as_written: bool,
    errors: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
    /// Missing required fields held back because a key of their map looks like a misspelling of
    /// them: dropped when [`Fields::finish_with`] reports that key as unknown (its "did you mean"
    /// says it all), reported by [`Cx::finish`] otherwise (the key was another, known field).
    missing: Vec<HeldMissing>,
}

struct HeldMissing {
    error: Diagnostic,
    /// Where the keys that look like misspellings of the missing field were written.
    suspects: Vec<Pos>,
}

/// What a unitless number means in a duration field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BareNumber {
    /// ALB fields count seconds (`HealthCheckIntervalSeconds`).
    Seconds,
    /// CodeDeploy fields count minutes (`terminationWaitTimeInMinutes`).
    Minutes,
    /// Fields with no AWS counterpart need a unit.
    Rejected,
}

impl<'f> Cx<'f> {
    pub fn new(file: &'f str, format: Format) -> Cx<'f> {
        Cx {
            file,
            format,
            ignore_case: false,
            as_written: false,
            errors: Vec::new(),
            notes: Vec::new(),
            missing: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic::error(self.file, pos, path, message));
    }

    pub fn note(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.notes.push(Diagnostic::note(self.file, pos, path, message));
    }

    /// The key at `key_pos` is reported as an error of its own: a missing field it looks like a
    /// misspelling of goes unsaid.
    fn drop_missing_misspelt_as(&mut self, key_pos: Pos) {
        self.missing.retain(|held| !held.suspects.contains(&key_pos));
    }

    pub fn error_count(&self) -> usize {
        self.errors.len() + self.missing.len()
    }

    /// The parsed value with its notes, or every error in file order.
    pub fn finish<T>(self, value: Option<T>) -> Result<Parsed<T>, Errors> {
        let Cx { file, mut errors, mut notes, missing, .. } = self;
        errors.extend(missing.into_iter().map(|held| held.error));
        match value {
            Some(value) if errors.is_empty() => {
                notes.sort_by_key(|d| d.pos);
                Ok(Parsed { value, notes })
            }
            _ => {
                if errors.is_empty() {
                    // A getter returned None without saying why: a bug, reported rather
                    // than hidden (and still at a place in the file, as every diagnostic is).
                    errors.push(Diagnostic::error(
                        file,
                        Pos::START,
                        "",
                        "cutover could not read this file but found no error to report; this \
                         is a bug in cutover, please report it with the file",
                    ));
                }
                Err(sorted_errors(file, errors))
            }
        }
    }

    pub fn list_word(&self) -> &'static str {
        if self.as_written {
            return "a list";
        }
        match self.format {
            Format::Json => "array",
            Format::Yaml => "list",
        }
    }

    pub fn map_word(&self) -> &'static str {
        if self.as_written {
            return "a map";
        }
        match self.format {
            Format::Json => "object",
            Format::Yaml => "map",
        }
    }

    /// How a value reads in a message: `string "3000"`, `integer 70000`, `list`.
    pub fn describe(&self, node: &Node) -> String {
        match &node.value {
            Value::Null => match self.format {
                Format::Json => "null".to_string(),
                Format::Yaml => "nothing (null)".to_string(),
            },
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(_) if self.as_written => format!("number {}", node.raw),
            Value::Float(f) => format!("number {f:?}"),
            Value::Str(s) => format!("string {}", quote(s)),
            Value::Seq(_) => self.list_word().to_string(),
            Value::Map(_) => self.map_word().to_string(),
        }
    }

    /// `expected {expected}, found {what is there}` plus advice for the usual confusions.
    pub fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        let mut message = format!("expected {expected}, found {}", self.describe(node));
        match (&node.value, expected) {
            (Value::Str(s), "integer" | "number") if s.trim().parse::<i64>().is_ok() => {
                message.push_str(&format!("; write the number without quotes: {}", s.trim()));
            }
            (Value::Str(s), "boolean")
                if matches!(s.to_ascii_lowercase().as_str(), "true" | "false") =>
            {
                message.push_str(&format!("; write {} without quotes", s.to_ascii_lowercase()));
            }
            (Value::Str(s), "boolean")
                if matches!(s.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off") =>
            {
                message.push_str("; write true or false");
            }
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), "string") => {
                message.push_str("; put it in quotes to make it a string");
            }
            _ => {}
        }
        self.error(node.pos, path, message);
    }

    pub fn str<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.value {
            Value::Str(s) => Some(s),
            _ => {
                self.type_error(node, path, "string");
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        self.str(node, path).map(str::to_string)
    }

    /// A string that is not empty or blank.
    pub fn nonempty(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.str(node, path)?;
        if s.trim().is_empty() {
            self.error(node.pos, path, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }

    /// A string; numbers and booleans are taken as written (`TAG: 1.10` is `"1.10"`), as
    /// CodeBuild reads them.
    pub fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(node.raw.clone()),
            _ => {
                self.type_error(node, path, "a string");
                None
            }
        }
    }

    /// Like [`Cx::text`], but blank text is an error.
    pub fn nonempty_text(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.text(node, path)?;
        if s.trim().is_empty() {
            self.error(node.pos, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A list of non-empty texts, or one text standing for a list of one (CodeBuild reads
    /// `files: imageDetail.json` that way). Each item comes with its position and path.
    pub fn texts_or_one(&mut self, node: &Node, path: &str) -> Option<Vec<(String, Pos, String)>> {
        if node.is_scalar() && !matches!(node.value, Value::Null) {
            return self.nonempty_text(node, path).map(|s| vec![(s, node.pos, path.to_string())]);
        }
        let items = self.list(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = child_index(path, i);
            match self.nonempty_text(item, &item_path) {
                Some(s) => out.push((s, item.pos, item_path)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `yes`/`no` (CodeBuild's spelling), `on`/`off` or `true`/`false`.
    pub fn yes_no(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" => Some(true),
                "no" | "false" | "off" => Some(false),
                _ => {
                    self.error(node.pos, path, format!("expected yes or no, found {}", quote(s)));
                    None
                }
            },
            _ => {
                self.type_error(node, path, "yes or no");
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.type_error(node, path, "boolean");
                None
            }
        }
    }

    /// An integer within `min..=max`; `what` names the range in the message ("a port").
    pub fn int(
        &mut self,
        node: &Node,
        path: &str,
        min: i128,
        max: i128,
        what: &str,
    ) -> Option<i128> {
        let i = match node.value {
            Value::Int(i) => i,
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e30 => {
                // `80.0`: a number, but not an integer as ECS and CodeDeploy read them.
                self.error(
                    node.pos,
                    path,
                    format!("expected integer, found number {f}; write {}", f as i128),
                );
                return None;
            }
            _ => {
                self.type_error(node, path, "integer");
                return None;
            }
        };
        if i < min || i > max {
            self.error(
                node.pos,
                path,
                format!("{i} is out of range: {what} must be {min} to {max}"),
            );
            return None;
        }
        Some(i)
    }

    pub fn u32(&mut self, node: &Node, path: &str, min: u32, max: u32, what: &str) -> Option<u32> {
        self.int(node, path, min.into(), max.into(), what).and_then(|i| u32::try_from(i).ok())
    }

    pub fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        self.int(node, path, 1, 65535, "a port").and_then(|i| u16::try_from(i).ok())
    }

    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                let word = self.list_word();
                self.type_error(node, path, word);
                None
            }
        }
    }

    /// A list of strings; every bad element is reported.
    pub fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                pos: node.pos,
                path: path.to_string(),
                entries,
                used: vec![false; entries.len()],
                ignore_case: self.ignore_case,
            }),
            _ => {
                let word = self.map_word();
                self.type_error(node, path, word);
                None
            }
        }
    }

    /// `10s`, `5m`, `1h30m`, `500ms`; what a bare number means depends on the field.
    pub(crate) fn duration(
        &mut self,
        node: &Node,
        path: &str,
        bare: BareNumber,
    ) -> Option<Duration> {
        let bare_number = match &node.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        };
        if let Some(n) = bare_number {
            if n < 0 {
                self.error(
                    node.pos,
                    path,
                    format!("{n} is negative; a duration must be 0 or more"),
                );
                return None;
            }
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            return match bare {
                BareNumber::Seconds => Some(Duration::from_secs(n)),
                BareNumber::Minutes => Some(Duration::from_secs(n.saturating_mul(60))),
                BareNumber::Rejected => {
                    self.error(
                        node.pos,
                        path,
                        format!(
                            "`{n}` has no unit; write `{n}s` for seconds or `{n}m` for minutes"
                        ),
                    );
                    None
                }
            };
        }
        match &node.value {
            Value::Str(s) => match model::parse_duration(s) {
                Ok(d) => Some(d),
                Err(err) => {
                    self.error(node.pos, path, err.to_string());
                    None
                }
            },
            _ => {
                self.type_error(node, path, "duration like `30s`, `5m` or `1h30m`");
                None
            }
        }
    }
}

fn sorted_errors(file: &str, mut errors: Vec<Diagnostic>) -> Errors {
    errors.sort_by_key(|d| d.pos);
    errors.dedup();
    if errors.len() > ERRORS_MAX {
        let more = errors.len() - ERRORS_MAX;
        // At the first error not shown, so that the line says where the rest begin.
        let next = errors[ERRORS_MAX].pos;
        errors.truncate(ERRORS_MAX);
        errors.push(Diagnostic::error(
            file,
            next,
            "",
            format!("{more} more errors from here on not shown; fix these first"),
        ));
    }
    Errors(errors)
}

/// A string for a message, shortened if long.
pub fn quote(s: &str) -> String {
    const SHOWN_MAX: usize = 60;
    if s.chars().count() > SHOWN_MAX {
        let head: String = s.chars().take(SHOWN_MAX).collect();
        format!("{:?}…", head)
    } else {
        format!("{s:?}")
    }
}

/// The fields of a map being read; keys not taken by the end are reported by [`Fields::finish`].
pub struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    entries: &'n [Entry],
    used: Vec<bool>,
    ignore_case: bool,
}

/// One field of a map: its value, the path of that value and where its key was written.
pub struct Field<'n> {
    pub node: &'n Node,
    pub path: String,
    pub key_pos: Pos,
}

/// How [`Fields::finish_with`] treats a key that is not among the fields a map reads.
#[derive(Clone, Copy, Debug)]
pub enum Other<'a> {
    /// Accepted with a note `ignored: {reason}`; offered in suggestions only.
    Ignored(&'a str, &'a str),
    /// Accepted with a note `accepted, {reason}`; offered in suggestions and listed as expected.
    Noted(&'a str, &'a str),
    /// Known to belong elsewhere: an error with the advice saying where.
    Misplaced(&'a str, &'a str),
}

impl<'n> Fields<'n> {
    fn matches(&self, entry: &Entry, key: &str) -> bool {
        if self.ignore_case { entry.key.eq_ignore_ascii_case(key) } else { entry.key == key }
    }

    /// Marks `key` as read and returns where the key itself was written and its path, for a
    /// field that is wrong wherever it appears and whose value does not matter.
    pub fn take_key(&mut self, key: &str) -> Option<(Pos, String)> {
        let i = (0..self.entries.len()).find(|&i| self.matches(&self.entries[i], key))?;
        self.used[i] = true;
        let e = &self.entries[i];
        Some((e.key_pos, child_key(&self.path, &e.key)))
    }

    /// The field `key`, present or not; an explicit `null` counts as absent.
    pub fn get(&mut self, cx: &mut Cx<'_>, key: &str) -> Option<Field<'n>> {
        let field = self.field(cx, key)?;
        if matches!(field.node.value, Value::Null) { None } else { Some(field) }
    }

    /// Like [`Fields::get`] but keeps an explicit `null`.
    pub fn field(&mut self, cx: &mut Cx<'_>, key: &str) -> Option<Field<'n>> {
        let mut found: Option<usize> = None;
        for i in 0..self.entries.len() {
            if !self.matches(&self.entries[i], key) {
                continue;
            }
            self.used[i] = true;
            match found {
                None => found = Some(i),
                Some(first) => {
                    // Only reachable when keys are case-insensitive: the tree rejects exact
                    // duplicates.
                    let e = &self.entries[i];
                    let first_line = self.entries[first].key_pos.line();
                    cx.error(
                        e.key_pos,
                        &child_key(&self.path, &e.key),
                        format!(
                            "`{}` repeats `{}` from line {first_line} (keys are matched ignoring \
                             case); keep one",
                            e.key, self.entries[first].key
                        ),
                    );
                }
            }
        }
        let entry = &self.entries[found?];
        Some(Field {
            node: &entry.value,
            path: child_key(&self.path, &entry.key),
            key_pos: entry.key_pos,
        })
    }

    /// The field `key`, or an error at the map saying that it is missing and how to add it.
    pub fn require(&mut self, cx: &mut Cx<'_>, key: &str, advice: &str) -> Option<Field<'n>> {
        let field = self.field(cx, key);
        if field.is_some() {
            return field;
        }
        let mut message = format!("missing required field `{key}`");
        if !advice.is_empty() {
            message.push_str("; ");
            message.push_str(advice);
        }
        let error = Diagnostic::error(cx.file, self.pos, &child_key(&self.path, key), message);
        // A misspelling of the field is reported by `finish` with "did you mean"; saying that it
        // is missing too would be the same mistake twice. But a key that merely looks like it
        // (`ContainerPort` next to a missing `ContainerName`) may be a field of its own, read
        // later: whether it was is only known at `finish`, so the error waits until then.
        let suspects: Vec<Pos> = self
            .entries
            .iter()
            .zip(&self.used)
            .filter(|(e, used)| !**used && suggest(&e.key, [key]).is_some())
            .map(|(e, _)| e.key_pos)
            .collect();
        if suspects.is_empty() {
            cx.errors.push(error);
        } else {
            cx.missing.push(HeldMissing { error, suspects });
        }
        None
    }

    /// Reports what was not taken: fields cutover knows but does not use get a note with the
    /// reason; anything else is an error, with the closest known name when there is one.
    pub fn finish(self, cx: &mut Cx<'_>, known: &[&str], ignored: &[(&str, &str)]) {
        let others: Vec<Other<'_>> =
            ignored.iter().map(|(name, reason)| Other::Ignored(name, reason)).collect();
        self.finish_with(cx, known, &others);
    }

    /// Like [`Fields::finish`], with each kind of other key treated as [`Other`] says.
    pub fn finish_with(self, cx: &mut Cx<'_>, known: &[&str], others: &[Other<'_>]) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let path = child_key(&self.path, &entry.key);
            let other = others.iter().find(|o| match o {
                Other::Ignored(k, _) | Other::Noted(k, _) | Other::Misplaced(k, _) => {
                    self.matches(entry, k)
                }
            });
            match other {
                Some(Other::Ignored(_, reason)) => {
                    cx.note(entry.key_pos, &path, format!("ignored: {reason}"));
                    continue;
                }
                Some(Other::Noted(_, reason)) => {
                    cx.note(entry.key_pos, &path, format!("accepted, {reason}"));
                    continue;
                }
                Some(Other::Misplaced(_, advice)) => {
                    cx.drop_missing_misspelt_as(entry.key_pos);
                    cx.error(
                        entry.key_pos,
                        &path,
                        format!("unknown field `{}` here; {advice}", entry.key),
                    );
                    continue;
                }
                None => {}
            }
            let accepted = |listed: bool| {
                others.iter().filter_map(move |o| match o {
                    Other::Noted(k, _) => Some(*k),
                    Other::Ignored(k, _) if !listed => Some(*k),
                    Other::Ignored(..) | Other::Misplaced(..) => None,
                })
            };
            let candidates = known.iter().copied().chain(accepted(false));
            let mut message = format!("unknown field `{}`", entry.key);
            match suggest(&entry.key, candidates) {
                Some(s) if !self.ignore_case && s.eq_ignore_ascii_case(&entry.key) => {
                    message.push_str(&format!(
                        "; did you mean `{s}`? (field names are case-sensitive)"
                    ));
                }
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => {
                    let listed: Vec<&str> = known.iter().copied().chain(accepted(true)).collect();
                    message.push_str(&format!("; expected one of: {}", listed.join(", ")));
                }
            }
            cx.drop_missing_misspelt_as(entry.key_pos);
            cx.error(entry.key_pos, &path, message);
        }
    }
}
