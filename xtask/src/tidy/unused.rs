//! Every `[dependencies]` entry is used: a dependency nothing names costs build time, and says
//! something false about what a crate does (a pure crate "depending" on tokio).

use std::collections::BTreeSet;

use proc_macro2::{Spacing, TokenStream, TokenTree};

use super::{Error, Finding, Package, Source};

/// The package's normal dependencies that none of its sources names as `name::…`, `use name`
/// or `extern crate name` (comments do not count: sources are read as tokens).
pub fn check(package: &Package, sources: &[Source]) -> Result<Vec<Finding>, Error> {
    let mut named = BTreeSet::new();
    for source in sources {
        let tokens: TokenStream = source.text.parse().map_err(|e: proc_macro2::LexError| {
            let start = e.span().start();
            Error::Parse {
                path: source.path.clone(),
                line: start.line,
                column: start.column + 1,
                message: e.to_string(),
            }
        })?;
        crate_names(tokens, &mut named);
    }
    Ok(package
        .dependencies
        .iter()
        .filter(|d| !named.contains(d.as_str()))
        .map(|d| Finding {
            file: package.dir.join("Cargo.toml"),
            line: 1,
            message: format!(
                "`{}` depends on `{d}`, which none of its sources uses: remove it from \
                 [dependencies] (or move it to [dev-dependencies] if only tests use it)",
                package.name
            ),
        })
        .collect())
}

/// Collects the identifiers that `tokens` uses as the first segment of a path or names in
/// `use` and `extern crate`.
fn crate_names(tokens: TokenStream, out: &mut BTreeSet<String>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => {
                crate_names(group.stream(), out);
            }
            TokenTree::Ident(ident) => {
                let is_path_start = matches!(
                    (trees.get(i + 1), trees.get(i + 2)),
                    (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                        if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
                );
                let after_keyword = i > 0
                    && matches!(&trees[i - 1], TokenTree::Ident(k) if k == "use" || k == "crate");
                if is_path_start || after_keyword {
                    out.insert(ident.to_string());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_dependency_no_source_names_is_found() {
        let package = Package {
            name: "store".into(),
            dir: PathBuf::from("crates/store"),
            dependencies: ["serde", "serde_json", "thiserror", "rusqlite", "serde_yaml_ng", "libc"]
                .map(String::from)
                .to_vec(),
        };
        let source = Source {
            path: PathBuf::from("crates/store/src/lib.rs"),
            text: "use serde::Serialize;\n\
                   extern crate libc;\n\
                   #[derive(Debug, thiserror::Error)]\n\
                   pub enum E { #[error(\"x\")] X }\n\
                   pub fn f() -> String { format!(\"{}\", serde_json::json!(1)) }\n\
                   // rusqlite::Connection is named only in this comment\n\
                   /// and serde_yaml_ng:: only in this doc comment\n\
                   pub fn g() {}\n"
                .into(),
        };
        let found: Vec<String> =
            check(&package, &[source]).unwrap().iter().map(|f| f.to_string()).collect();
        assert_eq!(
            found,
            [
                "crates/store/Cargo.toml:1: `store` depends on `rusqlite`, which none of its sources uses: remove it from [dependencies] (or move it to [dev-dependencies] if only tests use it)",
                "crates/store/Cargo.toml:1: `store` depends on `serde_yaml_ng`, which none of its sources uses: remove it from [dependencies] (or move it to [dev-dependencies] if only tests use it)",
            ]
        );
    }
}
