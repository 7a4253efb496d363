//! The property every file parser's fuzz target shares (`config::fuzzing`, `builder::fuzzing`),
//! here where both parsers' positioned diagnostics come from. [`check_parser`] takes any bytes
//! and panics when a property does not hold:
//!
//! - a rejected file has at least one error, and every diagnostic (errors and notes) is at a real
//!   place in the file: its line exists (or is the one just past the end) and its column is
//!   within that line, plus one for its end;
//! - an accepted file parses again to the same value with the same notes (nothing depends on
//!   state or order).

use crate::diag::{Diagnostic, Errors, Parsed};
use crate::text_from_bytes;

/// Checks `parse` on `data` as the file `file`: the bytes as text (refused with a positioned
/// error, or taken), then the parser's outcome, twice. The value when the file was accepted.
pub fn check_parser<T: PartialEq + std::fmt::Debug>(
    file: &str,
    data: &[u8],
    parse: fn(&str, &str) -> Result<Parsed<T>, Errors>,
) -> Option<Parsed<T>> {
    let text = text_of(file, data)?;
    parse_checked(file, text, parse)
}

/// The text of `data`, or `None` when it is refused as text (with a positioned error, checked).
fn text_of<'d>(file: &str, data: &'d [u8]) -> Option<&'d str> {
    match text_from_bytes(file, data) {
        Ok(text) => Some(text),
        Err(errors) => {
            check_rejection(&String::from_utf8_lossy(data), &errors);
            None
        }
    }
}

/// Parses `text` twice and checks both outcomes; the value when it was accepted.
fn parse_checked<T: PartialEq + std::fmt::Debug>(
    file: &str,
    text: &str,
    parse: fn(&str, &str) -> Result<Parsed<T>, Errors>,
) -> Option<Parsed<T>> {
    let first = parse(file, text);
    match &first {
        Ok(parsed) => check_positions(text, &parsed.notes),
        Err(errors) => check_rejection(text, errors),
    }
    let again = parse(file, text);
    assert_eq!(again, first, "parsing the same text twice gave different results");
    first.ok()
}

/// A rejection has at least one diagnostic, every one an error at a real place in `text`.
pub fn check_rejection(text: &str, errors: &Errors) {
    assert!(!errors.0.is_empty(), "a rejected file has no diagnostic");
    assert!(errors.0.iter().all(Diagnostic::is_error), "a rejection holds a note:\n{errors}");
    assert!(errors.0.iter().all(|d| !d.message.is_empty()), "an empty message:\n{errors}");
    check_positions(text, &errors.0);
}

/// Every diagnostic's line is a line of `text` (or the one after its last line break) and its
/// column is within that line, counted in characters, plus one for the end of the line.
pub fn check_positions(text: &str, diagnostics: &[Diagnostic]) {
    let lines: Vec<usize> = text.split('\n').map(|line| line.chars().count()).collect();
    for d in diagnostics {
        let Some(&length) = lines.get(d.line() - 1) else {
            panic!("{d}: line {} is past the file's {} lines", d.line(), lines.len());
        };
        assert!(d.column() <= length + 1, "{d}: column {} is past the line's end", d.column());
    }
}
