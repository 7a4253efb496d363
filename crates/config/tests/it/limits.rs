//! Hostile and odd input: every limit holds, fails fast and says why.

use std::time::{Duration, Instant};

use config::{FILE_SIZE_MAX, FileKind, detect_kind, text_from_bytes};
use expect_test::expect;

use crate::{check, render};

/// Generous: these all fail in microseconds; the bound only catches an unbounded expansion.
const FAST: Duration = Duration::from_secs(5);

#[test]
fn yaml_bomb_is_refused_before_it_expands() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let started = Instant::now();
    check(
        "cutover.yaml",
        &bomb,
        expect![[r#"
            cutover.yaml:4:4: d: YAML anchors and aliases here copy more than 10000 values (a "billion laughs" file?); write the values out or use fewer aliases
        "#]],
    );
    let appspec = format!("version: 0.0\nResources: []\n{}", bomb.replace("a: &a", "x: &a"));
    check(
        "appspec.yaml",
        &appspec,
        expect![[r#"
            appspec.yaml:6:4: d: YAML anchors and aliases here copy more than 10000 values (a "billion laughs" file?); write the values out or use fewer aliases
        "#]],
    );
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
}

#[test]
fn nested_anchors_are_bounded_without_any_alias() {
    // Each level anchors everything inside it: copying every anchored value would cost
    // depth × size, so anchored copies count against the same budget as aliases.
    let inner: String = (0..5_000).map(|i| format!("{i}, ")).collect();
    let text = format!("services: {}[{inner}]{}\n", "&a [".repeat(50), "]".repeat(50));
    let started = Instant::now();
    let rendered = render(config::validate("cutover.yaml", &text));
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert!(rendered.contains("copy more than 10000 values"), "{rendered}");
}

#[test]
fn a_few_aliases_are_fine() {
    check(
        "cutover.yaml",
        "
target_groups:
  - name: blue
    health_check: &checks { path: /health, interval: 10s, timeout: 2s, healthy_threshold: 2 }
  - name: green
    health_check: *checks
",
        expect![[r#"
            ok
        "#]],
    );
}

#[test]
fn fifty_megabytes_are_refused_before_parsing() {
    let huge = "x".repeat(50 * 1024 * 1024);
    let started = Instant::now();
    let rendered = [
        render(config::validate("taskdef.json", &huge)),
        render(config::parse_task_definition("taskdef.json", &huge).map(|p| p.notes)),
        render(config::parse_appspec("appspec.yaml", &huge).map(|p| p.notes)),
        render(config::parse_cutover_file("cutover.yaml", &huge).map(|p| p.notes)),
        render(text_from_bytes("cutover.yaml", huge.as_bytes()).map(|_| vec![])),
    ]
    .concat();
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
    expect![[r#"
        taskdef.json:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
        taskdef.json:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
        appspec.yaml:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
        cutover.yaml:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
        cutover.yaml:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
    "#]]
    .assert_eq(&rendered);
}

#[test]
fn exactly_the_size_limit_is_accepted() {
    let body = r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "nginx"}]}"#;
    let text = format!("{body}{}", " ".repeat(FILE_SIZE_MAX - body.len()));
    assert_eq!(text.len(), FILE_SIZE_MAX);
    assert!(config::parse_task_definition("taskdef.json", &text).is_ok());
    assert!(config::parse_task_definition("taskdef.json", &format!("{text} ")).is_err());
}

#[test]
fn invalid_utf8_is_refused_with_its_position() {
    let bytes = b"{\n  \"family\": \"caf\xe9\",\n}";
    let rendered = render(text_from_bytes("taskdef.json", bytes).map(|_| vec![]));
    let utf16 = render(text_from_bytes("appspec.yaml", b"\xff\xfev\x00e\x00").map(|_| vec![]));
    expect![[r#"
        taskdef.json:2:17: the file is not valid UTF-8 (byte 0xE9 at offset 18); save it as UTF-8
        appspec.yaml:1:1: the file is UTF-16; save it as UTF-8
    "#]]
    .assert_eq(&(rendered + &utf16));
    assert_eq!(text_from_bytes("a.yaml", "naïve: ✓\n".as_bytes()).unwrap(), "naïve: ✓\n");
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let started = Instant::now();
    let json = format!("{{\"family\": {}", "[".repeat(200_000));
    let yaml_flow = format!("services: {}", "[".repeat(200_000));
    // `- - - x` nests block sequences on one line, so depth does not need indentation.
    let yaml_block = format!("services:\n  {}x\n", "- ".repeat(100_000));
    let rendered = [
        render(config::validate("taskdef.json", &json)),
        render(config::validate("cutover.yaml", &yaml_flow)),
        render(config::validate("cutover.yaml", &yaml_block)),
    ]
    .concat();
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    expect![[r#"
        taskdef.json:1:75: family[0][0][0][0][0][0][0][0][0][0][0]…: nesting is deeper than 64 levels; cutover's files need far fewer
        cutover.yaml:1:266: services[0]: invalid YAML: recursion limit exceeded; the nesting is far deeper than cutover's files need
        cutover.yaml:2:129: services[0][0][0][0][0][0][0][0][0][0][0]…: nesting is deeper than 64 levels; cutover's files need far fewer
    "#]]
    .assert_eq(&rendered);
}

#[test]
fn yaml_features_outside_plain_data_are_refused() {
    check(
        "cutover.yaml",
        "services: []\n---\nservices: []\n",
        expect![[r#"
        cutover.yaml:2:1: a second YAML document (after `---`); a file holds one document
    "#]],
    );
    check(
        "cutover.yaml",
        "services: !Ref Services\n",
        expect![[r#"
        cutover.yaml:1:11: services: YAML tag `!Ref` is not supported; cutover files are plain YAML (no CloudFormation functions like !Ref)
    "#]],
    );
    check(
        "cutover.yaml",
        "base: &b { name: web }\nservices:\n  - <<: *b\n",
        expect![[r#"
        cutover.yaml:3:5: services[0]: YAML merge keys (`<<`) are not supported; use an alias (`*name`) for the whole value instead
    "#]],
    );
    check(
        "cutover.yaml",
        "services: []\nhooks: []\nservices: []\n",
        expect![[r#"
        cutover.yaml:3:1: services: duplicate key `services` (first written on line 1); keep one
    "#]],
    );
    check(
        "cutover.yaml",
        "services:\n\t- name: web\n",
        expect![[r#"
            cutover.yaml:2:1: services: invalid YAML: tabs disallowed within this context (block indentation); indent with spaces, YAML does not allow tabs there
        "#]],
    );
    check(
        "cutover.yaml",
        "# nothing here\n",
        expect![[r#"
        cutover.yaml:1:1: the file has no content (only comments or `null`)
    "#]],
    );
    check(
        "cutover.yaml",
        "",
        expect![[r#"
        cutover.yaml:1:1: the file is empty
    "#]],
    );
}

#[test]
fn many_errors_are_capped() {
    let services: String =
        (0..80).map(|i| format!("  - {{ name: s{i}, task_definition: 'a b' }}\n")).collect();
    let rendered = render(config::validate("cutover.yaml", &format!("services:\n{services}")));
    assert_eq!(rendered.lines().count(), config::ERRORS_MAX + 1);
    expect!["cutover.yaml:52:35: 30 more errors from here on not shown; fix these first"]
        .assert_eq(rendered.lines().last().unwrap());
}

#[test]
fn kinds_are_detected_by_content_then_name() {
    let cases = [
        ("anything.json", r#"{"family": "x", "containerDefinitions": []}"#),
        ("deploy.yml", "version: 0.0\nResources: []\n"),
        ("appspec.json", r#"{"resources": []}"#),
        ("infra.yaml", "services: []\n"),
        ("ci.yml", "version: 0.2\nphases: {}\n"),
        ("taskdef.json", "{}"),
        ("appspec.yaml", "{}"),
        ("cutover.yml", "x: 1"),
        ("buildspec.yaml", "x: 1"),
        ("notes.txt", "hello"),
        ("broken.json", "{"),
    ];
    let detected: Vec<Option<FileKind>> =
        cases.iter().map(|(name, text)| detect_kind(name, text)).collect();
    assert_eq!(
        detected,
        vec![
            Some(FileKind::TaskDefinition),
            Some(FileKind::AppSpec),
            Some(FileKind::AppSpec),
            Some(FileKind::CutoverFile),
            Some(FileKind::Buildspec),
            Some(FileKind::TaskDefinition),
            Some(FileKind::AppSpec),
            Some(FileKind::CutoverFile),
            Some(FileKind::Buildspec),
            None,
            None,
        ]
    );
    check(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [make]\n",
        expect![[r#"
        note: buildspec.yml:1:1: buildspec files are recognised but not validated yet
    "#]],
    );
    check(
        "notes.yaml",
        "hello: world\n",
        expect![[r#"
        notes.yaml:1:1: cannot tell what kind of file this is; cutover validates task definitions (containerDefinitions), AppSpecs (Resources, version 0.0) and cutover.yaml files (load_balancers, services, deployment_groups…); name the file taskdef.json, appspec.yaml or cutover.yaml
    "#]],
    );
}

#[test]
fn mangled_files_never_panic() {
    let files = [
        ("taskdef.json", include_str!("../data/seeds/000-task-definition.json")),
        ("taskdef.json", include_str!("../data/seeds/001-taskdef.json")),
        ("appspec.yml", include_str!("../data/seeds/000-appspec.yml")),
        ("appspec.json", include_str!("../data/seeds/003-appspec.json")),
        ("cutover.yaml", include_str!("../../../../examples/quickstart/cutover.yaml")),
    ];
    // A fixed linear congruential generator: the same mutations on every run.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |bound: usize| {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % bound.max(1)
    };
    const PIECES: [&str; 16] =
        ["{", "}", "[", "]", ":", ",", "\"", "'", "\n", "  ", "-", "&a", "*a", "0", "é", "\t"];
    let mut outcomes = [0usize; 2];
    for (name, text) in files {
        for _ in 0..150 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..1 + next(4) {
                let at = next(chars.len() + 1);
                match next(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.splice(at..at, PIECES[next(PIECES.len())].chars()).for_each(drop),
                    _ if at < chars.len() => {
                        chars[at] = PIECES[next(PIECES.len())].chars().next().unwrap()
                    }
                    _ => {}
                }
            }
            let mangled: String = chars.into_iter().collect();
            let result = config::validate(name, &mangled);
            outcomes[usize::from(result.is_ok())] += 1;
            if let Err(errors) = result {
                assert!(!errors.0.is_empty());
                assert!(errors.0.iter().all(|d| d.is_error() && !d.message.is_empty()), "{errors}");
            }
            let _ = config::parse_task_definition(name, &mangled);
            let _ = config::parse_appspec(name, &mangled);
            let _ = config::parse_cutover_file(name, &mangled);
        }
    }
    // Both outcomes happen, so the mutations exercise the checks as well as the parsers.
    assert!(outcomes[0] > 50 && outcomes[1] > 50, "{outcomes:?}");
}
