//! Every `**Invariant:**` of ARCHITECTURE.md names the tests that enforce it, and they exist: a
//! promise no test holds is a wish. A bullet names tests in backticks, as
//! `crate/path.rs::test_name` (`crates/` left out), `it/file.rs::test_name` (the end-to-end tests
//! in `crates/cutover/tests/it/`), `xtask/tests/tidy.rs::test_name`, or a whole test file
//! (`it/restart.rs`, `proxy/tests/limits.rs`); a name may be a test function or the test module
//! it lives in (`control/src/monitor.rs::tests`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::visit::{self, Visit};

use super::{Error, Finding, Source};

const MARKER: &str = "- **Invariant:**";

/// One invariant bullet: the line it starts on and its whole text.
struct Bullet {
    line: usize,
    text: String,
}

/// The findings for `architecture` (ARCHITECTURE.md); `read` gives a referenced file's source
/// (a path relative to the workspace root), or `None` when there is no such file.
pub fn check(
    architecture: &Source,
    read: impl Fn(&Path) -> Option<Source>,
) -> Result<Vec<Finding>, Error> {
    let mut findings = Vec::new();
    for bullet in bullets(&architecture.text) {
        let at = |message: String| Finding {
            file: architecture.path.clone(),
            line: bullet.line,
            message,
        };
        let references = test_references(&bullet.text);
        if references.is_empty() {
            findings.push(at(format!(
                "this invariant names no test that enforces it (\"{}…\"): name it in backticks, as \
                 `crate/path.rs::test_name`, `it/file.rs::test_name` or a test file, or write one",
                bullet.text.chars().take(60).collect::<String>()
            )));
        }
        for reference in references {
            if let Some(problem) = resolve(&reference, &read)? {
                findings.push(at(problem));
            }
        }
    }
    Ok(findings)
}

/// The invariant bullets: a line starting with [`MARKER`] and its indented continuation lines.
fn bullets(markdown: &str) -> Vec<Bullet> {
    let mut bullets: Vec<Bullet> = Vec::new();
    let mut open = false;
    for (index, line) in markdown.lines().enumerate() {
        if line.starts_with(MARKER) {
            bullets.push(Bullet { line: index + 1, text: line.to_string() });
            open = true;
        } else if open && line.starts_with("  ") && !line.trim().is_empty() {
            let bullet = bullets.last_mut().expect("open means a bullet was pushed");
            bullet.text.push(' ');
            bullet.text.push_str(line.trim());
        } else {
            open = false;
        }
    }
    bullets
}

/// A bullet's backticked references to Rust files (`….rs` or `….rs::name`).
fn test_references(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.ends_with(".rs") || quoted.contains(".rs::"))
        .map(str::to_string)
        .collect()
}

/// Where a reference's file is, relative to the workspace root.
fn file_of(reference: &str) -> (PathBuf, Option<&str>) {
    let (file, name) = match reference.split_once(".rs::") {
        Some((file, rest)) => (format!("{file}.rs"), rest.rsplit("::").next()),
        None => (reference.to_string(), None),
    };
    let path = if let Some(rest) = file.strip_prefix("it/") {
        Path::new("crates/cutover/tests/it").join(rest)
    } else if file.starts_with("xtask/") {
        PathBuf::from(file)
    } else {
        Path::new("crates").join(file)
    };
    (path, name)
}

/// What is wrong with a reference, if anything.
fn resolve(
    reference: &str,
    read: &impl Fn(&Path) -> Option<Source>,
) -> Result<Option<String>, Error> {
    let (path, name) = file_of(reference);
    let Some(source) = read(&path) else {
        return Ok(Some(format!(
            "`{reference}` names {}, which does not exist: fix the reference",
            path.display()
        )));
    };
    let Some(name) = name else {
        let is_test_file = path.components().any(|c| c.as_os_str() == "tests");
        return Ok((!is_test_file).then(|| {
            format!(
                "`{reference}` is a source file, not a test: name the test, as \
                 `{reference}::test_name`"
            )
        }));
    };
    let file = super::parse(&source)?;
    let mut tests = TestNames::default();
    tests.visit_file(&file);
    Ok((!tests.names.contains(name)).then(|| {
        format!(
            "`{reference}`: {} has no test function or test module `{name}`: fix the name",
            path.display()
        )
    }))
}

/// The names of a file's test functions (`#[test]`, `#[tokio::test]`) and of its modules.
#[derive(Default)]
struct TestNames {
    names: BTreeSet<String>,
}

impl<'ast> Visit<'ast> for TestNames {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if f.attrs.iter().any(|a| a.path().segments.last().is_some_and(|s| s.ident == "test")) {
            self.names.insert(f.sig.ident.to_string());
        }
        visit::visit_item_fn(self, f);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.names.insert(m.ident.to_string());
        visit::visit_item_mod(self, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHITECTURE: &str = "\
# Invariants

- **Invariant:** tested by a test function
  (`rollout/src/lib.rs::tests::a_canary_shifts`).
- **Invariant:** tested by a whole file (`it/restart.rs`) and a module
  (`control/src/monitor.rs::tests`).
- **Invariant:** promised, but nothing holds it.
- **Invariant:** names a test that is not there (`it/restart.rs::gone`), a helper that is no
  test (`it/restart.rs::helper`), a missing file (`proxy/tests/nope.rs`) and a source file
  (`proxy/src/limits.rs`).
";

    fn read(path: &Path) -> Option<Source> {
        let text = match path.to_str()? {
            "crates/rollout/src/lib.rs" => {
                "#[cfg(test)]\nmod tests {\n    #[test]\n    fn a_canary_shifts() {}\n}\n"
            }
            "crates/cutover/tests/it/restart.rs" => {
                "fn helper() {}\n#[test]\nfn restarts() { helper() }\n"
            }
            "crates/control/src/monitor.rs" => "#[cfg(test)]\nmod tests {}\n",
            "crates/proxy/src/limits.rs" => "pub fn cap() {}\n",
            _ => return None,
        };
        Some(Source { path: path.to_path_buf(), text: text.into() })
    }

    #[test]
    fn an_invariant_must_name_tests_that_exist() {
        let architecture =
            Source { path: PathBuf::from("ARCHITECTURE.md"), text: ARCHITECTURE.into() };
        let found: Vec<String> =
            check(&architecture, read).unwrap().iter().map(|f| f.to_string()).collect();
        assert_eq!(
            found,
            [
                "ARCHITECTURE.md:7: this invariant names no test that enforces it (\"- **Invariant:** promised, but nothing holds it.…\"): name it in backticks, as `crate/path.rs::test_name`, `it/file.rs::test_name` or a test file, or write one",
                "ARCHITECTURE.md:8: `it/restart.rs::gone`: crates/cutover/tests/it/restart.rs has no test function or test module `gone`: fix the name",
                "ARCHITECTURE.md:8: `it/restart.rs::helper`: crates/cutover/tests/it/restart.rs has no test function or test module `helper`: fix the name",
                "ARCHITECTURE.md:8: `proxy/tests/nope.rs` names crates/proxy/tests/nope.rs, which does not exist: fix the reference",
                "ARCHITECTURE.md:8: `proxy/src/limits.rs` is a source file, not a test: name the test, as `proxy/src/limits.rs::test_name`",
            ]
        );
    }
}
