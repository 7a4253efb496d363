//! The pure crates do no IO: no async runtime, sockets, files, processes or OS clock. Time is an
//! argument, deadlines are return values; that is what lets a 15-minute canary be tested in
//! microseconds. Judged twice: by what a crate may depend on, and by the paths its non-test code
//! names (the standard library needs no dependency).

use std::collections::BTreeSet;

use syn::spanned::Spanned;
use syn::visit::{self, Visit};

use super::{Error, Finding, Package, Source};

/// The crates that do no IO. `reconciler` counts once it exists.
pub const PURE: &[&str] =
    &["model", "routes", "spec", "rollout", "alarms", "pipeline", "reconciler"];

/// What a pure crate may depend on besides the other pure crates: data formats and parsers that
/// read memory, never the world.
pub const ALLOWED: &[&str] =
    &["serde", "serde_json", "thiserror", "saphyr", "saphyr_parser", "regex", "memchr"];

/// Paths a pure crate's non-test code must not name, and why.
/// (Addresses, `std::net::SocketAddr` and its kind, are values: a pure crate may hold them.)
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::fs", "files"),
    ("std::net::TcpStream", "sockets"),
    ("std::net::TcpListener", "sockets"),
    ("std::net::UdpSocket", "sockets"),
    ("ToSocketAddrs", "name resolution"),
    ("std::process", "processes"),
    ("std::thread::sleep", "sleeping"),
    ("std::env::var", "the environment"),
    ("SystemTime::now", "the OS clock"),
    ("Instant::now", "the OS clock"),
    ("tokio", "an async runtime"),
];

pub fn is_pure(package: &str) -> bool {
    PURE.contains(&package)
}

/// A pure crate's dependencies that are neither pure crates nor [`ALLOWED`].
pub fn check_dependencies(package: &Package) -> Vec<Finding> {
    package
        .dependencies
        .iter()
        .filter(|d| !is_pure(d) && !ALLOWED.contains(&d.as_str()))
        .map(|d| Finding {
            file: package.dir.join("Cargo.toml"),
            line: 1,
            message: format!(
                "`{}` is a pure crate (no IO) and may not depend on `{d}`; move the code that \
                 needs it into a crate that does IO (control, proxy, runtime, store…), or, if \
                 `{d}` does no IO, add it to ALLOWED in xtask/src/tidy/purity.rs",
                package.name
            ),
        })
        .collect()
}

/// Names of IO in a pure crate's non-test code (`#[cfg(test)]` items and `#[test]` functions
/// are skipped: tests may read files).
pub fn check_source(source: &Source) -> Result<Vec<Finding>, Error> {
    let file = super::parse(source)?;
    let mut visitor = PathVisitor { found: Vec::new() };
    visitor.visit_file(&file);
    let mut seen = BTreeSet::new();
    Ok(visitor
        .found
        .into_iter()
        .filter(|(line, path, _)| seen.insert((*line, path.clone())))
        .map(|(line, path, what)| Finding {
            file: source.path.clone(),
            line,
            message: format!(
                "`{path}` is {what}, which a pure crate does not touch; take the result as an \
                 argument (time as `now: Timestamp`) and let the caller do the IO"
            ),
        })
        .collect())
}

fn forbidden(path: &str) -> Option<&'static str> {
    FORBIDDEN.iter().find_map(|(prefix, what)| {
        let hit = path == *prefix
            || path.starts_with(&format!("{prefix}::"))
            || path.ends_with(&format!("::{prefix}"));
        hit.then_some(*what)
    })
}

/// Collects every path (expressions, types, `use` trees) outside test-only items.
struct PathVisitor {
    found: Vec<(usize, String, &'static str)>,
}

impl PathVisitor {
    fn note(&mut self, line: usize, path: String) {
        if let Some(what) = forbidden(&path) {
            self.found.push((line, path, what));
        }
    }

    fn use_tree(&mut self, prefix: &str, tree: &syn::UseTree) {
        let join = |name: &str| {
            if prefix.is_empty() { name.to_string() } else { format!("{prefix}::{name}") }
        };
        match tree {
            syn::UseTree::Path(p) => self.use_tree(&join(&p.ident.to_string()), &p.tree),
            syn::UseTree::Name(n) => self.note(n.span().start().line, join(&n.ident.to_string())),
            syn::UseTree::Rename(r) => self.note(r.span().start().line, join(&r.ident.to_string())),
            syn::UseTree::Glob(g) => self.note(g.span().start().line, prefix.to_string()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }
}

impl<'ast> Visit<'ast> for PathVisitor {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !super::is_test_only(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !super::is_test_only(&f.attrs) {
            visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree("", &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let joined: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.note(path.span().start().line, joined.join("::"));
        visit::visit_path(self, path);
    }
}

pub(super) fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn findings(text: &str) -> Vec<String> {
        let source = Source { path: PathBuf::from("crates/model/src/lib.rs"), text: text.into() };
        check_source(&source).unwrap().iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn io_named_in_non_test_code_is_found_with_its_line() {
        let text = "use std::fs;\n\
                    use std::{net::{SocketAddr, TcpStream}, time::Instant};\n\
                    pub fn now() -> u64 {\n    std::time::SystemTime::now();\n    0\n}\n\
                    pub async fn wait() { tokio::task::yield_now().await }\n";
        let found = findings(text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with("crates/model/src/lib.rs:1: `std::fs` is files"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("crates/model/src/lib.rs:2: `std::net::TcpStream` is sockets")
        );
        assert!(found[2].starts_with("crates/model/src/lib.rs:4: `std::time::SystemTime::now`"));
        assert!(found[3].starts_with("crates/model/src/lib.rs:7: `tokio::task::yield_now`"));
        assert!(found.iter().all(|f| f.contains("let the caller do the IO")));
    }

    #[test]
    fn test_code_may_do_io() {
        let text = "pub fn pure(x: u32) -> u32 { x + 1 }\n\
                    #[cfg(test)]\nmod tests {\n    #[test]\n    fn reads() { std::fs::read(\"x\").unwrap(); }\n}\n\
                    #[test]\nfn alone() { let _ = std::time::Instant::now(); }\n";
        assert_eq!(findings(text), Vec::<String>::new());
    }

    #[test]
    fn a_pure_crate_may_depend_only_on_pure_crates_and_the_allowlist() {
        let package = Package {
            name: "rollout".into(),
            dir: PathBuf::from("crates/rollout"),
            dependencies: vec!["model".into(), "serde".into(), "tokio".into(), "rusqlite".into()],
        };
        let found: Vec<String> =
            check_dependencies(&package).iter().map(|f| f.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with(
            "crates/rollout/Cargo.toml:1: `rollout` is a pure crate (no IO) and may not depend on `tokio`"
        ));
        assert!(found[1].contains("may not depend on `rusqlite`"));
    }
}
