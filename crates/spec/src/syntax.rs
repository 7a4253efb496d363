//! The positioned-YAML machinery behind this crate's parsers, for crates that read YAML files of
//! their own (the `build` crate's buildspecs) with the same line:column diagnostics.
//!
//! [`parse_yaml_with`] builds a [`Node`] tree under the crate's limits ([`crate::FILE_SIZE_MAX`]
//! is checked by the caller; [`crate::DEPTH_MAX`] and [`crate::ALIAS_NODES_MAX`] here), every
//! scalar keeping the text it was written as. A [`Cx`] collects the diagnostics of one file while
//! [`Fields`] reads a map field by field, reporting unknown keys with "did you mean" suggestions
//! ([`suggest`]); [`Cx::finish`] returns the value with its notes or every error in file order.

pub use crate::decode::{Cx, Field, Fields, Other, quote};
pub use crate::diag::{Pos, suggest};
pub use crate::tree::{Entry, Format, Node, SyntaxError, Value, child_index, child_key, push_key};
pub use crate::yaml::{YamlOptions, parse_with as parse_yaml_with};
