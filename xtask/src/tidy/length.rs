//! No non-test function over [`MAX_LINES`] lines: a function that long does several jobs, and
//! reads better as a sequence of named steps. Functions still over the bound that are being split
//! are listed in the ratchet list [`ALLOW_LIST`] (`path::name lines`); a listed function may
//! not grow, and leaves the list once it is within the bound, so the list only ever shrinks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::{self, Visit};

use super::{Error, Finding, Source};

pub const MAX_LINES: usize = 120;
pub const ALLOW_LIST: &str = "xtask/tidy-allow.txt";

/// A non-test function: `name` is `fn_name`, or `Type::fn_name` for a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub path: PathBuf,
    pub name: String,
    pub line: usize,
    pub lines: usize,
}

impl Function {
    /// How the ratchet list names it.
    pub fn key(&self) -> String {
        format!("{}::{}", self.path.display(), self.name)
    }
}

/// Every function of `source` outside test-only items, with its length in lines (from `fn` to
/// the closing brace; attributes and doc comments do not count).
pub fn functions(source: &Source) -> Result<Vec<Function>, Error> {
    let file = super::parse(source)?;
    let mut visitor = FnVisitor { path: &source.path, self_type: None, found: Vec::new() };
    visitor.visit_file(&file);
    Ok(visitor.found)
}

/// The findings of the bound and of the ratchet list `allow` (its text).
pub fn check(sources: &[Source], allow: &str) -> Result<Vec<Finding>, Error> {
    let mut all = Vec::new();
    for source in sources {
        all.extend(functions(source)?);
    }
    let (allowed, mut findings) = parse_allow_list(allow);
    let mut listed_found = BTreeMap::new();
    for function in &all {
        let key = function.key();
        match allowed.get(&key) {
            Some(&(_, limit)) => {
                listed_found.insert(key, function.lines);
                if function.lines > limit {
                    findings.push(grew(function, limit));
                }
            }
            None if function.lines > MAX_LINES => findings.push(too_long(function)),
            None => {}
        }
    }
    for (key, (list_line, _)) in &allowed {
        let at = |message: String| Finding { file: ALLOW_LIST.into(), line: *list_line, message };
        match listed_found.get(key) {
            None => findings.push(at(format!(
                "`{key}` is listed, but no such function exists any more: remove its line"
            ))),
            Some(&lines) if lines <= MAX_LINES => findings.push(at(format!(
                "`{key}` is {lines} lines now, within the bound of {MAX_LINES}: remove its line, \
                 so that it cannot grow back"
            ))),
            Some(_) => {}
        }
    }
    Ok(findings)
}

fn too_long(function: &Function) -> Finding {
    Finding {
        file: function.path.clone(),
        line: function.line,
        message: format!(
            "function `{}` is {} lines, over the bound of {MAX_LINES}: split it into named steps \
             (functions that each do one job, called in sequence)",
            function.name, function.lines
        ),
    }
}

fn grew(function: &Function, limit: usize) -> Finding {
    Finding {
        file: function.path.clone(),
        line: function.line,
        message: format!(
            "function `{}` is {} lines, more than the {limit} that {ALLOW_LIST} allows while it \
             is being split: the list only shrinks; split it below {MAX_LINES} lines and remove \
             its line",
            function.name, function.lines
        ),
    }
}

/// `path::name lines` by key, with the line of the list that holds it; and the findings of
/// lines that are not of that form.
fn parse_allow_list(text: &str) -> (BTreeMap<String, (usize, usize)>, Vec<Finding>) {
    let mut allowed = BTreeMap::new();
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<usize>), fields.next()) {
            (Some(key), Some(Ok(lines)), None) if key.contains(".rs::") => {
                allowed.insert(key.to_string(), (line_no, lines));
            }
            _ => findings.push(Finding {
                file: ALLOW_LIST.into(),
                line: line_no,
                message: format!(
                    "`{line}` is not `path/to/file.rs::function_name lines` (e.g. \
                     `crates/control/src/engine.rs::Engine::recover 130`)"
                ),
            }),
        }
    }
    (allowed, findings)
}

/// What `cargo xtask tidy` prints about the ratchet list: what is still to split.
pub fn ratchet_summary(root: &Path) -> Result<String, Error> {
    let text = match std::fs::read_to_string(root.join(ALLOW_LIST)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => return Err(Error::Io { path: ALLOW_LIST.into(), source }),
    };
    let (allowed, _) = parse_allow_list(&text);
    if allowed.is_empty() {
        return Ok(String::new());
    }
    let mut out = format!(
        "{ALLOW_LIST}: {} function(s) over {MAX_LINES} lines still to split:\n",
        allowed.len()
    );
    for (key, (_, lines)) in &allowed {
        out.push_str(&format!("  {key} {lines}\n"));
    }
    Ok(out)
}

struct FnVisitor<'a> {
    path: &'a Path,
    /// The type of the `impl` block being visited.
    self_type: Option<String>,
    found: Vec<Function>,
}

impl FnVisitor<'_> {
    fn add(&mut self, name: String, sig: &syn::Signature, block: &syn::Block) {
        let line = sig.span().start().line;
        let lines = block.span().end().line + 1 - line;
        self.found.push(Function { path: self.path.to_path_buf(), name, line, lines });
    }

    fn method_name(&self, ident: &syn::Ident) -> String {
        match &self.self_type {
            Some(ty) => format!("{ty}::{ident}"),
            None => ident.to_string(),
        }
    }
}

impl<'ast> Visit<'ast> for FnVisitor<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !super::is_test_only(super::purity::item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.add(f.sig.ident.to_string(), &f.sig, &f.block);
        // Functions inside a function are not methods of the enclosing impl.
        let outer = self.self_type.take();
        visit::visit_item_fn(self, f);
        self.self_type = outer;
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let outer = self.self_type.replace(type_name(&item.self_ty));
        visit::visit_item_impl(self, item);
        self.self_type = outer;
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        let outer = self.self_type.replace(item.ident.to_string());
        visit::visit_item_trait(self, item);
        self.self_type = outer;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if super::is_test_only(&f.attrs) {
            return;
        }
        self.add(self.method_name(&f.sig.ident), &f.sig, &f.block);
        let outer = self.self_type.take();
        visit::visit_impl_item_fn(self, f);
        self.self_type = outer;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.add(self.method_name(&f.sig.ident), &f.sig, block);
        }
        let outer = self.self_type.take();
        visit::visit_trait_item_fn(self, f);
        self.self_type = outer;
    }
}

/// `Engine` for `impl Engine`, `Tx` for `impl<'a> Tx<'a>`.
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        syn::Type::Reference(r) => Some(type_name(&r.elem)),
        _ => None,
    }
    .unwrap_or_else(|| "_".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function of `body_lines` lines inside its braces.
    fn function(name: &str, body_lines: usize) -> String {
        format!("fn {name}() {{\n{}}}\n", "    let _x = 1;\n".repeat(body_lines))
    }

    fn source(text: String) -> Vec<Source> {
        vec![Source { path: PathBuf::from("crates/a/src/lib.rs"), text }]
    }

    fn messages(sources: &[Source], allow: &str) -> Vec<String> {
        check(sources, allow).unwrap().iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_function_over_the_bound_is_found_and_one_at_the_bound_is_not() {
        // 2 lines of braces + 119 = 121 lines.
        let text = format!("{}\n{}", function("at_bound", MAX_LINES - 2), function("long", 119));
        let found = messages(&source(text), "");
        assert_eq!(
            found,
            [format!(
                "crates/a/src/lib.rs:{}: function `long` is 121 lines, over the bound of 120: split \
                 it into named steps (functions that each do one job, called in sequence)",
                MAX_LINES + 2
            )]
        );
    }

    #[test]
    fn methods_are_named_by_their_type_and_test_code_is_not_bounded() {
        let text = format!(
            "struct Engine;\nimpl Engine {{\n    {}}}\n#[cfg(test)]\nmod tests {{\n{}}}\n#[test]\n{}",
            function("recover", 130),
            function("long_test_helper", 200),
            function("long_test", 200)
        );
        let found = messages(&source(text), "");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("crates/a/src/lib.rs:3: function `Engine::recover` is 132"));
    }

    #[test]
    fn the_ratchet_list_allows_a_listed_function_but_never_more_lines() {
        let sources = source(function("long", 150));
        assert_eq!(messages(&sources, "crates/a/src/lib.rs::long 152\n"), Vec::<String>::new());
        assert_eq!(
            messages(&sources, "# comment\n\ncrates/a/src/lib.rs::long 160\n"),
            Vec::<String>::new()
        );
        let grew = messages(&sources, "crates/a/src/lib.rs::long 140\n");
        assert_eq!(grew.len(), 1);
        assert!(
            grew[0].starts_with("crates/a/src/lib.rs:1: function `long` is 152 lines, more than the 140 that xtask/tidy-allow.txt allows"),
            "{grew:?}"
        );
    }

    #[test]
    fn the_ratchet_list_refuses_a_function_within_the_bound_a_gone_one_and_a_bad_line() {
        let sources = source(function("short", 10));
        let found = messages(
            &sources,
            "crates/a/src/lib.rs::short 150\ncrates/a/src/lib.rs::gone 130\nnonsense\n",
        );
        assert_eq!(
            found,
            [
                "xtask/tidy-allow.txt:3: `nonsense` is not `path/to/file.rs::function_name lines` (e.g. `crates/control/src/engine.rs::Engine::recover 130`)",
                "xtask/tidy-allow.txt:2: `crates/a/src/lib.rs::gone` is listed, but no such function exists any more: remove its line",
                "xtask/tidy-allow.txt:1: `crates/a/src/lib.rs::short` is 12 lines now, within the bound of 120: remove its line, so that it cannot grow back",
            ]
        );
    }
}
