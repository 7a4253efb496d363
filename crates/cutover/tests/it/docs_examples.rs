//! Every example the docs show is checked by the parsers `cutover validate` uses, so a reader who
//! copies one never gets an error for it.
//!
//! A fenced block whose info string is `yaml` or `json` is a whole file: a cutover.yaml, an
//! AppSpec, a task definition or a buildspec, told apart by content as `cutover validate` does.
//! A block marked `yaml fragment` is a part of a cutover.yaml: it is completed with the sections
//! of `examples/quickstart/cutover.yaml` it does not declare, then validated. Other blocks
//! (`sh`, console output) are not files.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The documents whose examples are checked: the README and every page under `docs/`.
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut docs = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    docs.extend(pages);
    docs
}

/// A fenced code block: where it starts (the line of its opening fence, from 1), its info string
/// and its text.
#[derive(Debug)]
struct Block {
    line: usize,
    info: String,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => {
                open =
                    Some(Block { line: i + 1, info: info.trim().to_string(), text: String::new() })
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a fenced block is never closed");
    blocks
}

/// The top-level keys of a YAML text (`key:` at the start of a line).
fn top_level_keys(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// `base` without its top-level sections named in `keys`.
fn without_sections(base: &str, keys: &[String]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in base.lines() {
        if !line.starts_with([' ', '#']) && !line.is_empty() {
            skipping = line.split_once(':').is_some_and(|(k, _)| keys.iter().any(|x| x == k));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Validates one block; the error names the document and the line of the block.
fn check(doc: &str, block: &Block) -> Result<(), String> {
    let name = format!("{doc}:{} (the block's own lines)", block.line);
    let result = match block.info.as_str() {
        "yaml fragment" => {
            // The fragment first, so the lines of a diagnostic are the block's own.
            let base =
                std::fs::read_to_string(workspace().join("examples/quickstart/cutover.yaml"))
                    .unwrap();
            let completed =
                format!("{}{}", block.text, without_sections(&base, &top_level_keys(&block.text)));
            config::parse_cutover_file(&name, &completed).map(|_| ())
        }
        "yaml" | "json" => match config::detect_kind("", &block.text) {
            Some(config::FileKind::Buildspec) => {
                builder::parse_buildspec(&name, &block.text).map(|_| ())
            }
            Some(_) => config::validate(&name, &block.text).map(|_| ()),
            None => {
                return Err(format!(
                    "{doc}:{}: a ```{} block that is no file cutover reads; mark a part of a \
                     cutover.yaml ```yaml fragment, or use another info string",
                    block.line, block.info
                ));
            }
        },
        _ => return Ok(()),
    };
    result.map_err(|errors| format!("{doc}:{}: the example is invalid:\n{errors}", block.line))
}

#[test]
fn every_yaml_and_json_example_in_the_readme_and_docs_validates() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in documents() {
        let doc = path.strip_prefix(workspace()).unwrap().display().to_string();
        let markdown = std::fs::read_to_string(&path).unwrap();
        for block in fenced_blocks(&markdown) {
            if block.info.starts_with("yaml") || block.info.starts_with("json") {
                checked += 1;
            }
            if let Err(problem) = check(&doc, &block) {
                problems.push(problem);
            }
        }
    }
    assert!(checked >= 8, "only {checked} examples found: is the block syntax still ```yaml?");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn a_fragment_is_checked_against_the_quickstart_file_and_a_bad_one_names_its_block() {
    let block = Block {
        line: 42,
        info: "yaml fragment".into(),
        text: "deployment_configs:\n  - { name: quick-canary, type: TimeBasedCanary, percentage: 200, interval: 5s }\n"
            .into(),
    };
    let error = check("README.md", &block).unwrap_err();
    assert!(
        error.starts_with(
            "README.md:42: the example is invalid:\nREADME.md:42 (the block's own lines):2:"
        ),
        "{error}"
    );
    assert!(error.contains("percentage"), "{error}");
    let ok = Block { text: block.text.replace("200", "20"), ..block };
    assert_eq!(check("README.md", &ok), Ok(()));
}

#[test]
fn the_complete_example_in_the_docs_is_the_quickstart_file() {
    let page = std::fs::read_to_string(workspace().join("docs/cutover-yaml.md")).unwrap();
    let shown = fenced_blocks(&page).into_iter().next().expect("docs/cutover-yaml.md has examples");
    let file =
        std::fs::read_to_string(workspace().join("examples/quickstart/cutover.yaml")).unwrap();
    assert!(
        file.ends_with(&shown.text),
        "docs/cutover-yaml.md:{} says it shows examples/quickstart/cutover.yaml, but differs",
        shown.line
    );
}

#[test]
fn every_file_under_examples_validates() {
    let mut files = Vec::new();
    let mut dirs = vec![workspace().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 7, "examples/ has only {files:?}");
    let mut problems = Vec::new();
    for path in &files {
        let name = path.strip_prefix(workspace()).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let result = match config::detect_kind(&name, &text) {
            Some(config::FileKind::Buildspec) => builder::parse_buildspec(&name, &text).map(|_| ()),
            _ => config::validate(&name, &text).map(|_| ()),
        };
        if let Err(errors) = result {
            problems.push(errors.to_string());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
