//! The positioned YAML and JSON layer every file parser of cutover stands on: `config` (task
//! definitions, AppSpecs, `cutover.yaml`) and `builder` (buildspecs).
//!
//! Pure: text in, a [`Node`] tree or [`Errors`] out; nothing here reads a file. Every node keeps
//! its line and column (1-based, in characters) and the text it was written as, and every
//! [`Diagnostic`] names the file, the position, the field path and what to do about it.
//!
//! [`parse_yaml_with`] builds a tree under the limits ([`FILE_SIZE_MAX`] is checked by the caller
//! with [`check_file_size`]; [`DEPTH_MAX`] and [`ALIAS_NODES_MAX`] here), a [`Cx`] collects the
//! diagnostics of one file while [`Fields`] reads a map field by field, reporting unknown keys
//! with "did you mean" suggestions ([`suggest`]); [`Cx::finish`] returns the value with its notes
//! or every error in file order.

pub mod decode;
pub mod diag;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod tree;
pub mod yaml;

pub use decode::ERRORS_MAX;
pub use decode::{Cx, Field, Fields, Other, quote};
pub use diag::{Diagnostic, Errors, Parsed, Severity};
pub use diag::{Pos, suggest};
pub use tree::{ALIAS_NODES_MAX, DEPTH_MAX, FILE_SIZE_MAX, check_file_size, text_from_bytes};
pub use tree::{Entry, Format, Node, SyntaxError, Value, child_index, child_key, push_key};
pub use yaml::{YamlOptions, parse_with as parse_yaml_with};
