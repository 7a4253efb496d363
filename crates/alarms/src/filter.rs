//! Log metric filters (CloudWatch Logs' `PutMetricFilter`): a pattern over log lines that turns
//! matching lines into samples of a metric.
//!
//! # Pattern language ([`FilterPattern`])
//!
//! **Terms**, for unstructured text. Matching is on the raw line, by substring, case-sensitive.
//! - `ERROR ARGUMENTS`: every term must occur (AND).
//! - `?ERROR ?WARN`: at least one `?` term must occur (OR). Mixed with plain terms, the line needs
//!   all plain terms and at least one `?` term.
//! - `ERROR -Exiting`: no `-` term may occur.
//! - `"Connection refused"`: an exact phrase, spaces included; `\"` and `\\` escape inside quotes.
//!   Quote any term with spaces or quotes; a prefix goes before the quote: `-"health check"`.
//! - An empty pattern, or one that is only `""` or `" "`, matches every line.
//!
//! **JSON selectors**, for lines that are one JSON value (`{ ... }` around the whole pattern):
//! - `{ $.level = "error" }`, `{ $.status >= 500 }`, `{ $.user.id != 7 }`, `{ $.items[0] = "a" }`.
//! - Operators `=`, `!=` compare strings or numbers; `<`, `<=`, `>`, `>=` compare numbers.
//! - Strings may be quoted or bare (`{ $.ip = 10.0.* }`); `*` in a string matches any run of
//!   characters (`{ $.path = "/api/*" }`). Matching is case-sensitive.
//! - `{ $.ok IS TRUE }`, `IS FALSE`, `IS NULL`, `{ $.trace EXISTS }`, `{ $.trace NOT EXISTS }`.
//! - `&&`, `||` and parentheses; `&&` binds tighter than `||`.
//! - A comparison is false when the field is absent or of another type (a string comparison never
//!   matches a number, a numeric one never matches `"500"`), and so is every selector on a line
//!   that is not JSON. `!=` also needs the field to exist with the compared type.
//!
//! Space-delimited patterns (`[ip, user, ..., status=5*]`) are not supported; they are rejected
//! with advice. Lines longer than [`LOG_LINE_BYTES_MAX`] are matched on their first
//! `LOG_LINE_BYTES_MAX` bytes (a cut JSON line does not parse, so it matches no JSON pattern).
//!
//! # Metric values ([`MetricFilter`])
//!
//! Each matching line adds one sample of `metric_value` (`1`, any number, or a JSON selector such
//! as `$.latency`, whose field must be a number; a line without it adds nothing) at the line's
//! time. For a store period (the store's resolution) that saw lines but no match,
//! `default_value` (if set) is recorded once, at the start of that period, when the period is
//! closed: by the first line of a later period or by [`MetricFilter::flush`]. Periods with no
//! lines at all get nothing. Like CloudWatch, a filter counts only lines it is given after it was
//! created (not retroactive).

use std::fmt;
use std::str::FromStr;

use model::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metric::{MetricId, check_text};
use crate::series::{MetricStore, RecordError};

/// Longest filter pattern, in characters (CloudWatch: 1024).
pub const PATTERN_CHARS_MAX: usize = 1024;
/// Longest filter name, in characters (CloudWatch: 512).
pub const FILTER_NAME_CHARS_MAX: usize = 512;
/// Longest part of a log line that is matched, in bytes (CloudWatch's event size: 256 KiB).
pub const LOG_LINE_BYTES_MAX: usize = 256 * 1024;
/// Deepest nesting of parentheses in a JSON pattern.
pub const PATTERN_DEPTH_MAX: usize = 32;

/// A pattern that failed to parse: where (1-based character column in the pattern) and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct PatternError {
    pub column: usize,
    pub message: String,
}

fn error<T>(column: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError { column, message: message.into() })
}

/// A parsed filter pattern. Serialized as its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FilterPattern {
    text: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    All,
    Terms { all: Vec<String>, any: Vec<String>, none: Vec<String> },
    Json(Expr),
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare { selector: Selector, op: Op, literal: Literal },
    Is { selector: Selector, test: Test },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
enum Literal {
    Number(f64),
    /// May contain `*` wildcards.
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Test {
    True,
    False,
    Null,
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `$.a.b[0]`: the path from the root of a JSON line.
#[derive(Clone, Debug, PartialEq)]
struct Selector(Vec<Step>);

impl Selector {
    fn select<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(root, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(i) => v.get(*i),
        })
    }

    /// Parses `$.a.b[0]`; `column` is where `text` starts in the pattern.
    fn parse(text: &str, column: usize) -> Result<Selector, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        if chars.first() != Some(&'$') {
            return error(column, format!("expected a selector like `$.level`, found `{text}`"));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            let at = column + i;
            match chars[i] {
                '.' => {
                    let end = (i + 1..chars.len())
                        .find(|&j| matches!(chars[j], '.' | '['))
                        .unwrap_or(chars.len());
                    let key: String = chars[i + 1..end].iter().collect();
                    if key.is_empty() {
                        return error(
                            at,
                            format!("selector `{text}` has an empty field name after `.`"),
                        );
                    }
                    steps.push(Step::Key(key));
                    i = end;
                }
                '[' => {
                    let Some(end) = (i + 1..chars.len()).find(|&j| chars[j] == ']') else {
                        return error(at, format!("selector `{text}` opens `[` without `]`"));
                    };
                    let digits: String = chars[i + 1..end].iter().collect();
                    let Ok(index) = digits.parse::<usize>() else {
                        return error(
                            at,
                            format!("selector `{text}`: an array index is a number, like `[0]`"),
                        );
                    };
                    steps.push(Step::Index(index));
                    i = end + 1;
                }
                c => {
                    return error(
                        at,
                        format!("selector `{text}`: expected `.field` or `[index]` at `{c}`"),
                    );
                }
            }
        }
        if steps.is_empty() {
            return error(column, "select a field, like `$.level`; `$` alone is the whole line");
        }
        Ok(Selector(steps))
    }
}

impl FilterPattern {
    pub fn parse(text: &str) -> Result<FilterPattern, PatternError> {
        let chars = text.chars().count();
        if chars > PATTERN_CHARS_MAX {
            return error(
                PATTERN_CHARS_MAX + 1,
                format!(
                    "the pattern has {chars} characters; shorten it to at most {PATTERN_CHARS_MAX}"
                ),
            );
        }
        let trimmed = text.trim();
        let kind = if trimmed.is_empty() || is_blank_phrase(trimmed) {
            Kind::All
        } else if trimmed.starts_with('{') {
            Kind::Json(JsonParser::new(text)?.pattern()?)
        } else if trimmed.starts_with('[') {
            let column = text.chars().take_while(|c| c.is_whitespace()).count() + 1;
            return error(
                column,
                "space-delimited patterns (`[ip, user, ..., status=5*]`) are not supported; use \
                 terms (`ERROR -Exiting`) or a JSON selector (`{ $.status >= 500 }`)",
            );
        } else {
            parse_terms(text)?
        };
        Ok(FilterPattern { text: text.to_string(), kind })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Json(_))
    }

    pub fn matches(&self, line: &str) -> bool {
        let line = cut(line);
        let json = if self.is_json() { serde_json::from_str::<Value>(line).ok() } else { None };
        self.matches_parsed(line, json.as_ref())
    }

    /// `json` is the line parsed, when it is JSON and someone needed it parsed.
    fn matches_parsed(&self, line: &str, json: Option<&Value>) -> bool {
        match &self.kind {
            Kind::All => true,
            Kind::Terms { all, any, none } => {
                all.iter().all(|t| line.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| line.contains(t.as_str())))
                    && !none.iter().any(|t| line.contains(t.as_str()))
            }
            Kind::Json(expr) => json.is_some_and(|json| eval(expr, json)),
        }
    }
}

impl FromStr for FilterPattern {
    type Err = PatternError;
    fn from_str(text: &str) -> Result<FilterPattern, PatternError> {
        FilterPattern::parse(text)
    }
}

impl TryFrom<String> for FilterPattern {
    type Error = PatternError;
    fn try_from(text: String) -> Result<FilterPattern, PatternError> {
        FilterPattern::parse(&text)
    }
}

impl From<FilterPattern> for String {
    fn from(pattern: FilterPattern) -> String {
        pattern.text
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `""` or `" "`: CloudWatch's spelling of "every event".
fn is_blank_phrase(trimmed: &str) -> bool {
    trimmed.len() >= 2
        && trimmed.starts_with('"')
        && trimmed.ends_with('"')
        && trimmed[1..trimmed.len() - 1].chars().all(char::is_whitespace)
}

/// The first [`LOG_LINE_BYTES_MAX`] bytes of `line`, at a character boundary.
fn cut(line: &str) -> &str {
    if line.len() <= LOG_LINE_BYTES_MAX {
        return line;
    }
    let mut end = LOG_LINE_BYTES_MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Reads a quoted string starting at `chars[start] == '"'`: returns the content and the index
/// after the closing quote. `offset` turns indices into columns.
fn quoted(chars: &[char], start: usize, offset: usize) -> Result<(String, usize), PatternError> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((out, i + 1)),
            '\\' if i + 1 < chars.len() && matches!(chars[i + 1], '"' | '\\') => {
                out.push(chars[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    error(start + offset, "this quote is never closed; end the phrase with `\"`")
}

fn parse_terms(text: &str) -> Result<Kind, PatternError> {
    let chars: Vec<char> = text.chars().collect();
    let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let prefix = match chars[i] {
            '?' | '-' => {
                i += 1;
                Some(chars[start])
            }
            _ => None,
        };
        if i == chars.len() || chars[i].is_whitespace() {
            let (p, example) =
                if prefix == Some('?') { ('?', "?ERROR") } else { ('-', "-Exiting") };
            return error(
                start + 1,
                format!("`{p}` must be directly followed by a term, e.g. `{example}`"),
            );
        }
        let term = if chars[i] == '"' {
            let (phrase, end) = quoted(&chars, i, 1)?;
            if end < chars.len() && !chars[end].is_whitespace() {
                return error(end + 1, "put a space after the closing quote of a phrase");
            }
            if phrase.is_empty() {
                return error(
                    i + 1,
                    "empty phrase `\"\"`; remove it or put text between the quotes",
                );
            }
            i = end;
            phrase
        } else {
            let end = (i..chars.len()).find(|&j| chars[j].is_whitespace()).unwrap_or(chars.len());
            if let Some(q) = (i..end).find(|&j| chars[j] == '"') {
                return error(
                    q + 1,
                    "a quote may only start a term; put the whole term in quotes, e.g. `\"status: 500\"`",
                );
            }
            let term: String = chars[i..end].iter().collect();
            i = end;
            term
        };
        match prefix {
            Some('?') => any.push(term),
            Some(_) => none.push(term),
            None => all.push(term),
        }
    }
    Ok(Kind::Terms { all, any, none })
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    LParen,
    RParen,
    And,
    Or,
    Op(Op),
    Str(String),
    Word(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Open => f.write_str("{"),
            Token::Close => f.write_str("}"),
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::And => f.write_str("&&"),
            Token::Or => f.write_str("||"),
            Token::Op(op) => f.write_str(match op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            }),
            Token::Str(s) => write!(f, "\"{s}\""),
            Token::Word(w) => f.write_str(w),
        }
    }
}

/// A recursive-descent parser over the tokens of a JSON pattern, each with its 1-based column.
struct JsonParser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    /// Column just past the end of the pattern, for "expected ... at the end" errors.
    end: usize,
    depth: usize,
}

impl JsonParser {
    fn new(text: &str) -> Result<JsonParser, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let column = i + 1;
            let next = chars.get(i + 1).copied();
            let (token, len) = match c {
                _ if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                '{' => (Token::Open, 1),
                '}' => (Token::Close, 1),
                '(' => (Token::LParen, 1),
                ')' => (Token::RParen, 1),
                '&' if next == Some('&') => (Token::And, 2),
                '|' if next == Some('|') => (Token::Or, 2),
                '&' | '|' => {
                    return error(column, format!("`{c}` is not an operator; write `{c}{c}`"));
                }
                '=' if next == Some('=') => return error(column, "write `=` to compare, not `==`"),
                '=' => (Token::Op(Op::Eq), 1),
                '!' if next == Some('=') => (Token::Op(Op::Ne), 2),
                '!' => return error(column, "`!` is not an operator; write `!=` or `NOT EXISTS`"),
                '<' if next == Some('=') => (Token::Op(Op::Le), 2),
                '<' => (Token::Op(Op::Lt), 1),
                '>' if next == Some('=') => (Token::Op(Op::Ge), 2),
                '>' => (Token::Op(Op::Gt), 1),
                '"' => {
                    let (s, end) = quoted(&chars, i, 1)?;
                    tokens.push((Token::Str(s), column));
                    i = end;
                    continue;
                }
                _ => {
                    let end = (i..chars.len())
                        .find(|&j| chars[j].is_whitespace() || "{}()\"&|=!<>".contains(chars[j]))
                        .unwrap_or(chars.len());
                    tokens.push((Token::Word(chars[i..end].iter().collect()), column));
                    i = end;
                    continue;
                }
            };
            tokens.push((token, column));
            i += len;
        }
        Ok(JsonParser { tokens, pos: 0, end: chars.len() + 1, depth: 0 })
    }

    fn peek(&self) -> Option<&(Token, usize)> {
        self.tokens.get(self.pos)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end, |(_, c)| *c)
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end of the pattern".to_string(), |(t, _)| format!("`{t}`"))
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek().is_some_and(|(t, _)| t == token) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn pattern(mut self) -> Result<Expr, PatternError> {
        if !self.eat(&Token::Open) {
            return error(self.column(), "a JSON pattern starts with `{`");
        }
        let expr = self.or()?;
        if !self.eat(&Token::Close) {
            return error(
                self.column(),
                format!("expected `&&`, `||` or the closing `}}`, found {}", self.found()),
            );
        }
        if self.peek().is_some() {
            return error(
                self.column(),
                format!(
                    "unexpected {} after the closing `}}`; put the whole condition inside the braces",
                    self.found()
                ),
            );
        }
        Ok(expr)
    }

    fn or(&mut self) -> Result<Expr, PatternError> {
        let mut left = self.and()?;
        while self.eat(&Token::Or) {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, PatternError> {
        let mut left = self.primary()?;
        while self.eat(&Token::And) {
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, PatternError> {
        let column = self.column();
        if self.eat(&Token::LParen) {
            self.depth += 1;
            if self.depth > PATTERN_DEPTH_MAX {
                return error(column, format!("parentheses nest deeper than {PATTERN_DEPTH_MAX}"));
            }
            let expr = self.or()?;
            if !self.eat(&Token::RParen) {
                return error(
                    self.column(),
                    format!(
                        "expected `)` to close the `(` at column {column}, found {}",
                        self.found()
                    ),
                );
            }
            self.depth -= 1;
            return Ok(expr);
        }
        let selector = match self.peek() {
            Some((Token::Word(w), c)) if w.starts_with('$') => {
                let s = Selector::parse(w, *c)?;
                self.pos += 1;
                s
            }
            _ => {
                return error(
                    column,
                    format!("expected a selector like `$.level`, found {}", self.found()),
                );
            }
        };
        let column = self.column();
        match self.peek().cloned() {
            Some((Token::Op(op), _)) => {
                self.pos += 1;
                let literal = self.literal(op)?;
                Ok(Expr::Compare { selector, op, literal })
            }
            Some((Token::Word(w), _)) if w == "IS" => {
                self.pos += 1;
                let test = match self.peek() {
                    Some((Token::Word(w), _)) if w == "TRUE" => Test::True,
                    Some((Token::Word(w), _)) if w == "FALSE" => Test::False,
                    Some((Token::Word(w), _)) if w == "NULL" => Test::Null,
                    _ => {
                        return error(
                            self.column(),
                            format!(
                                "expected TRUE, FALSE or NULL after IS, found {}",
                                self.found()
                            ),
                        );
                    }
                };
                self.pos += 1;
                Ok(Expr::Is { selector, test })
            }
            Some((Token::Word(w), _)) if w == "EXISTS" => {
                self.pos += 1;
                Ok(Expr::Is { selector, test: Test::Exists })
            }
            Some((Token::Word(w), _)) if w == "NOT" => {
                self.pos += 1;
                if !matches!(self.peek(), Some((Token::Word(w), _)) if w == "EXISTS") {
                    return error(
                        self.column(),
                        format!("expected EXISTS after NOT, found {}", self.found()),
                    );
                }
                self.pos += 1;
                Ok(Expr::Is { selector, test: Test::NotExists })
            }
            _ => error(
                column,
                format!(
                    "expected a comparison (=, !=, <, <=, >, >=), IS TRUE/FALSE/NULL, EXISTS or NOT \
                     EXISTS after the selector, found {}",
                    self.found()
                ),
            ),
        }
    }

    fn literal(&mut self, op: Op) -> Result<Literal, PatternError> {
        let column = self.column();
        let literal = match self.peek() {
            Some((Token::Str(s), _)) => Literal::Text(s.clone()),
            Some((Token::Word(w), _)) => match w.parse::<f64>() {
                Ok(n) if n.is_finite() => Literal::Number(n),
                _ if matches!(
                    w.as_str(),
                    "true" | "false" | "null" | "TRUE" | "FALSE" | "NULL"
                ) =>
                {
                    return error(
                        column,
                        format!(
                            "to test for {w}, write `IS {}` instead of a comparison",
                            w.to_uppercase()
                        ),
                    );
                }
                _ => Literal::Text(w.clone()),
            },
            _ => {
                return error(
                    column,
                    format!(
                        "expected a value (a number or a string) after `{}`, found {}",
                        Token::Op(op),
                        self.found()
                    ),
                );
            }
        };
        if matches!(literal, Literal::Text(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return error(
                column,
                format!("`{}` compares numbers, but {} is a string", Token::Op(op), self.found()),
            );
        }
        self.pos += 1;
        Ok(literal)
    }
}

fn eval(expr: &Expr, json: &Value) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, json) && eval(b, json),
        Expr::Or(a, b) => eval(a, json) || eval(b, json),
        Expr::Is { selector, test } => {
            let v = selector.select(json);
            match test {
                Test::True => v == Some(&Value::Bool(true)),
                Test::False => v == Some(&Value::Bool(false)),
                Test::Null => v.is_some_and(Value::is_null),
                Test::Exists => v.is_some(),
                Test::NotExists => v.is_none(),
            }
        }
        Expr::Compare { selector, op, literal } => {
            let Some(v) = selector.select(json) else {
                return false;
            };
            match literal {
                Literal::Number(n) => v.as_f64().is_some_and(|x| match op {
                    Op::Eq => x == *n,
                    Op::Ne => x != *n,
                    Op::Lt => x < *n,
                    Op::Le => x <= *n,
                    Op::Gt => x > *n,
                    Op::Ge => x >= *n,
                }),
                Literal::Text(pattern) => v.as_str().is_some_and(|s| {
                    let hit = glob(pattern.as_bytes(), s.as_bytes());
                    if *op == Op::Ne { !hit } else { hit }
                }),
            }
        }
    }
}

/// `*` matches any run of bytes; everything else matches itself. Linear-time with one backtrack
/// point, so a hostile pattern cannot blow up.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// What a matching line adds to the metric.
#[derive(Clone, Debug, PartialEq)]
enum MetricValue {
    Constant(f64),
    Field(Selector),
}

fn default_metric_value() -> String {
    "1".to_string()
}

/// A metric filter as CloudWatch Logs' `PutMetricFilter` defines it (one transformation, fixed
/// dimensions in `metric`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricFilterSpec {
    pub name: String,
    pub pattern: String,
    pub metric: MetricId,
    /// `1`, another number, or a JSON selector like `$.latency`.
    #[serde(default = "default_metric_value")]
    pub metric_value: String,
    /// Recorded for periods with lines but no match; `None`: nothing.
    #[serde(default)]
    pub default_value: Option<f64>,
}

/// One problem with a [`MetricFilterSpec`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: &'static str,
    pub message: String,
}

/// The period whose lines are being seen: did any match?
#[derive(Clone, Copy, Debug, PartialEq)]
struct Open {
    index: u64,
    matched: bool,
}

/// A metric filter that turns log lines into samples in a [`MetricStore`].
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFilter {
    spec: MetricFilterSpec,
    pattern: FilterPattern,
    value: MetricValue,
    open: Option<Open>,
}

impl MetricFilter {
    pub fn new(spec: MetricFilterSpec) -> Result<MetricFilter, FilterError> {
        let fail = |field, message: String| Err(FilterError { field, message });
        if let Err(e) = check_text("filter name", &spec.name, FILTER_NAME_CHARS_MAX) {
            return fail("name", e.to_string());
        }
        if let Err(e) = spec.metric.validate() {
            return fail("metric", e.to_string());
        }
        let pattern = match FilterPattern::parse(&spec.pattern) {
            Ok(p) => p,
            Err(e) => return fail("pattern", e.to_string()),
        };
        let text = spec.metric_value.trim();
        let value = if text.starts_with('$') {
            match Selector::parse(text, 1) {
                Ok(s) => MetricValue::Field(s),
                Err(e) => return fail("metric_value", e.message),
            }
        } else {
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => MetricValue::Constant(n),
                _ => {
                    return fail(
                        "metric_value",
                        format!(
                            "`{text}` is neither a number (like `1`) nor a JSON selector (like \
                             `$.latency`)"
                        ),
                    );
                }
            }
        };
        if let Some(d) = spec.default_value
            && !d.is_finite()
        {
            return fail("default_value", format!("{d} is not a finite number"));
        }
        Ok(MetricFilter { spec, pattern, value, open: None })
    }

    pub fn spec(&self) -> &MetricFilterSpec {
        &self.spec
    }

    pub fn pattern(&self) -> &FilterPattern {
        &self.pattern
    }

    /// What `line` would add to the metric: `None` when it does not match (or its `metric_value`
    /// field is absent or not a number). For testing a pattern against sample lines.
    pub fn value_of(&self, line: &str) -> Option<f64> {
        let line = cut(line);
        let needs_json = self.pattern.is_json() || matches!(self.value, MetricValue::Field(_));
        let json = if needs_json { serde_json::from_str::<Value>(line).ok() } else { None };
        if !self.pattern.matches_parsed(line, json.as_ref()) {
            return None;
        }
        match &self.value {
            MetricValue::Constant(n) => Some(*n),
            MetricValue::Field(selector) => {
                json.as_ref().and_then(|j| selector.select(j)).and_then(Value::as_f64)
            }
        }
    }

    /// Feeds one log line seen at `at`: records its value if it matches, and closes earlier
    /// periods (recording `default_value` for those without a match). Returns what was recorded
    /// for the line. Time does not go backwards: a line older than the open period counts in it.
    pub fn ingest(
        &mut self,
        store: &mut MetricStore,
        at: Timestamp,
        line: &str,
    ) -> Result<Option<f64>, RecordError> {
        let resolution = store.config().resolution();
        self.flush_before(store, resolution.index_of(at))?;
        let open = self.open.get_or_insert(Open { index: resolution.index_of(at), matched: false });
        let at = at.max(resolution.start_of(open.index));
        let value = self.value_of(line);
        if let Some(v) = value {
            store.record(&self.spec.metric, at, v)?;
            if let Some(open) = &mut self.open {
                open.matched = true;
            }
        }
        Ok(value)
    }

    /// Closes the open period if it ended at or before `now`. Call before evaluating alarms on
    /// this filter's metric, so that a period of lines without a match has its `default_value`.
    pub fn flush(&mut self, store: &mut MetricStore, now: Timestamp) -> Result<(), RecordError> {
        self.flush_before(store, store.config().resolution().index_of(now))
    }

    fn flush_before(&mut self, store: &mut MetricStore, index: u64) -> Result<(), RecordError> {
        let Some(open) = self.open else {
            return Ok(());
        };
        if open.index >= index {
            return Ok(());
        }
        self.open = None;
        let Some(default) = self.spec.default_value else {
            return Ok(());
        };
        if open.matched {
            return Ok(());
        }
        let start = store.config().resolution().start_of(open.index);
        match store.record(&self.spec.metric, start, default) {
            // A period that has aged out of the store no longer matters to anyone.
            Err(RecordError::TooOld { .. }) => Ok(()),
            other => other,
        }
    }
}
