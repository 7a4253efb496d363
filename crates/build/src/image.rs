//! The files a build hands to a deploy stage: `imageDetail.json` (CodeDeployToECS, one image) and
//! `imagedefinitions.json` (the ECS standard action, one image per container). Pure: text in,
//! values or diagnostics with file:line:column out.

use spec::syntax::{Cx, Entry, Node, Pos, Value, child_key, quote, suggest};
use spec::{Diagnostic, Errors, Parsed};

use crate::buildspec::{YAML, cx};

/// Largest `imageDetail.json` accepted; the real file is under 1 KiB.
pub const IMAGE_DETAIL_SIZE_MAX: usize = 100 * 1024;
/// Largest `imagedefinitions.json` accepted (CodePipeline's limit, 100 KB).
pub const IMAGE_DEFINITIONS_SIZE_MAX: usize = 100 * 1024;
/// Longest image reference accepted.
pub const IMAGE_URI_MAX: usize = 1024;

/// `imageDetail.json`. Only `ImageURI` is required; an ECR source action writes the others.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImageDetail {
    pub image_uri: String,
    pub version: Option<String>,
    pub image_digest: Option<String>,
    pub image_tags: Vec<String>,
    pub repository_name: Option<String>,
    pub registry_id: Option<String>,
    pub image_pushed_at: Option<String>,
    pub image_size_in_bytes: Option<u64>,
}

/// One entry of `imagedefinitions.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDefinition {
    /// The container name in the task definition.
    pub name: String,
    pub image_uri: String,
}

const DETAIL_KEYS: [&str; 8] = [
    "ImageURI",
    "Version",
    "ImageDigest",
    "ImageTags",
    "RepositoryName",
    "RegistryId",
    "ImagePushedAt",
    "ImageSizeInBytes",
];

/// Parses `imageDetail.json`: `{"ImageURI": "registry/repo:tag", …}`.
pub fn parse_image_detail(file: &str, text: &str) -> Result<Parsed<ImageDetail>, Errors> {
    let root = load(file, text, IMAGE_DETAIL_SIZE_MAX, DETAIL_EXAMPLE)?;
    let mut cx = cx(file);
    let value = read_detail(&mut cx, &root);
    cx.finish(value)
}

const DETAIL_EXAMPLE: &str = "a build writes it with printf '{\"ImageURI\":\"%s\"}' \"$REPOSITORY_URI:$IMAGE_TAG\" > imageDetail.json";
const DEFINITIONS_EXAMPLE: &str = "a build writes it with printf '[{\"name\":\"%s\",\"imageUri\":\"%s\"}]' \"$CONTAINER_NAME\" \"$REPOSITORY_URI:$IMAGE_TAG\" > imagedefinitions.json";

fn read_detail(cx: &mut Cx<'_>, root: &Node) -> Option<ImageDetail> {
    let entries = match &root.value {
        Value::Map(entries) => entries,
        Value::Seq(_) => {
            cx.error(
                root.pos,
                "",
                "this is a list, the shape of imagedefinitions.json (ECS standard deploy); \
                 imageDetail.json (CodeDeploy blue/green) is one object: \
                 {\"ImageURI\": \"<registry>/<repository>:<tag>\"}",
            );
            return None;
        }
        _ => {
            cx.type_error(root, "", "a JSON object like {\"ImageURI\": \"…\"}");
            return None;
        }
    };
    let mut detail = ImageDetail::default();
    let mut seen_uri = false;
    for entry in entries {
        let path = child_key("", &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "ImageURI" => {
                seen_uri = true;
                if let Some(uri) = image_uri(cx, node, &path) {
                    detail.image_uri = uri;
                }
            }
            "Version" => detail.version = opt_text(cx, node, &path),
            "ImageDigest" => detail.image_digest = opt_text(cx, node, &path),
            "RepositoryName" => detail.repository_name = opt_text(cx, node, &path),
            "RegistryId" => detail.registry_id = opt_text(cx, node, &path),
            "ImagePushedAt" => detail.image_pushed_at = opt_text(cx, node, &path),
            "ImageTags" => match &node.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(tag) = cx.text(item, &format!("{path}[{i}]")) {
                            detail.image_tags.push(tag);
                        }
                    }
                }
                Value::Null => {}
                _ => cx.type_error(node, &path, "a list of tags"),
            },
            "ImageSizeInBytes" => {
                let n = match &node.value {
                    Value::Int(i) => u64::try_from(*i).ok(),
                    Value::Str(s) => s.trim().parse().ok(),
                    Value::Null => continue,
                    _ => None,
                };
                match n {
                    Some(n) => detail.image_size_in_bytes = Some(n),
                    None => cx.type_error(node, &path, "a number of bytes"),
                }
            }
            _ => unknown(cx, entry, &DETAIL_KEYS, ""),
        }
    }
    if !seen_uri {
        let near = entries.iter().any(|e| suggest(&e.key, ["ImageURI"]).is_some());
        if !near {
            cx.error(
                root.pos,
                "ImageURI",
                format!("missing required field `ImageURI`; {DETAIL_EXAMPLE}"),
            );
        }
    }
    (cx.error_count() == 0).then_some(detail)
}

/// Parses `imagedefinitions.json`: `[{"name": "container", "imageUri": "registry/repo:tag"}]`.
pub fn parse_image_definitions(
    file: &str,
    text: &str,
) -> Result<Parsed<Vec<ImageDefinition>>, Errors> {
    let root = load(file, text, IMAGE_DEFINITIONS_SIZE_MAX, DEFINITIONS_EXAMPLE)?;
    let mut cx = cx(file);
    let value = read_definitions(&mut cx, &root);
    cx.finish(value)
}

fn read_definitions(cx: &mut Cx<'_>, root: &Node) -> Option<Vec<ImageDefinition>> {
    let items = match &root.value {
        Value::Seq(items) => items,
        Value::Map(entries) if entries.iter().any(|e| e.key == "ImageURI") => {
            cx.error(
                root.pos,
                "",
                "this is imageDetail.json's shape (CodeDeploy blue/green, one object with \
                 `ImageURI`); imagedefinitions.json (ECS standard deploy) is a list: \
                 [{\"name\": \"<container>\", \"imageUri\": \"<image>\"}]",
            );
            return None;
        }
        _ => {
            cx.type_error(root, "", "a JSON list like [{\"name\": \"…\", \"imageUri\": \"…\"}]");
            return None;
        }
    };
    if items.is_empty() {
        cx.error(
            root.pos,
            "",
            format!("the list is empty; name at least one container and its image: {DEFINITIONS_EXAMPLE}"),
        );
        return None;
    }
    let mut out: Vec<ImageDefinition> = Vec::with_capacity(items.len());
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("[{i}]");
        let Value::Map(entries) = &item.value else {
            cx.type_error(item, &path, "an object like {\"name\": \"…\", \"imageUri\": \"…\"}");
            continue;
        };
        let (mut name, mut uri) = (None, None);
        for entry in entries {
            let field_path = child_key(&path, &entry.key);
            match entry.key.as_str() {
                "name" => name = cx.nonempty_text(&entry.value, &field_path),
                "imageUri" => uri = image_uri(cx, &entry.value, &field_path),
                _ => unknown(cx, entry, &["name", "imageUri"], &path),
            }
        }
        for (key, got) in [("name", name.is_some()), ("imageUri", uri.is_some())] {
            let written = entries.iter().any(|e| e.key == key || suggest(&e.key, [key]).is_some());
            if !got && !written {
                cx.error(
                    item.pos,
                    &child_key(&path, key),
                    format!("missing required field `{key}`"),
                );
            }
        }
        if let (Some(name), Some(image_uri)) = (name, uri) {
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                cx.error(
                    item.pos,
                    &child_key(&path, "name"),
                    format!("container `{name}` is listed twice (first at [{first}]); keep one"),
                );
                continue;
            }
            names.push((name.clone(), i));
            out.push(ImageDefinition { name, image_uri });
        }
    }
    (cx.error_count() == 0).then_some(out)
}

/// A key neither file defines: an error when it is a misspelling of a known one (the deploy
/// would not find the value), a note otherwise (CodePipeline ignores extra keys).
fn unknown(cx: &mut Cx<'_>, entry: &Entry, known: &[&str], parent: &str) {
    let path = child_key(parent, &entry.key);
    match suggest(&entry.key, known.iter().copied()) {
        Some(s) => cx.error(
            entry.key_pos,
            &path,
            format!(
                "unknown field `{}`; did you mean `{s}`? (field names are case-sensitive)",
                entry.key
            ),
        ),
        None => cx.note(
            entry.key_pos,
            &path,
            format!("ignored: `{}` is not read by the deploy", entry.key),
        ),
    }
}

fn opt_text(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<String> {
    if matches!(node.value, Value::Null) {
        return None;
    }
    cx.text(node, path)
}

fn image_uri(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<String> {
    let Value::Str(s) = &node.value else {
        cx.type_error(node, path, "an image reference (a string)");
        return None;
    };
    match check_image_uri(s) {
        Ok(()) => Some(s.clone()),
        Err(err) => {
            cx.error(node.pos, path, err.to_string());
            None
        }
    }
}

/// An image reference a build script got wrong, and what to check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageUriError {
    #[error(
        "the image is empty; the variable that should hold it was not set when the file was \
         written"
    )]
    Empty,
    #[error(
        "the image {} contains whitespace; an image reference is one word like \
         registry/repository:tag",
        quote(.0)
    )]
    Whitespace(String),
    #[error("the image reference is longer than {IMAGE_URI_MAX} characters")]
    TooLong,
    #[error("the image {} still contains a `<…>` placeholder; write the real image", quote(.0))]
    Placeholder(String),
    #[error(
        "the image {} ends with `:`, so its tag is empty; was the tag variable (such as \
         IMAGE_TAG) empty when the file was written?",
        quote(.0)
    )]
    EmptyTag(String),
    #[error("the image {} ends with `@`, so its digest is empty", quote(.0))]
    EmptyDigest(String),
    #[error(
        "the image {} has no repository name before `{}`; was the repository variable empty?",
        quote(.0),
        &.0[..1]
    )]
    NoRepository(String),
}

/// Checks the mistakes a build script makes when it writes an image reference: an unset
/// variable (empty value, empty tag), a placeholder left in, stray whitespace.
pub fn check_image_uri(uri: &str) -> Result<(), ImageUriError> {
    let owned = || uri.to_string();
    if uri.trim().is_empty() {
        return Err(ImageUriError::Empty);
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageUriError::Whitespace(owned()));
    }
    if uri.len() > IMAGE_URI_MAX {
        return Err(ImageUriError::TooLong);
    }
    if uri.contains('<') || uri.contains('>') {
        return Err(ImageUriError::Placeholder(owned()));
    }
    // The process runtime's images are directories: an absolute path is a complete reference.
    if uri.starts_with('/') {
        return Ok(());
    }
    if uri.ends_with(':') {
        return Err(ImageUriError::EmptyTag(owned()));
    }
    if uri.ends_with('@') {
        return Err(ImageUriError::EmptyDigest(owned()));
    }
    if uri.starts_with([':', '@', '/']) {
        return Err(ImageUriError::NoRepository(owned()));
    }
    Ok(())
}

/// Size check, JSON syntax check (serde_json's messages are the best for JSON), then the
/// positioned tree for semantic errors.
fn load(file: &str, text: &str, max: usize, example: &str) -> Result<Node, Errors> {
    let one = |pos: Pos, message: String| Errors::one(Diagnostic::error(file, pos, "", message));
    if text.len() > max {
        return Err(one(
            Pos::START,
            format!("the file is {} bytes, more than the {max}-byte limit", text.len()),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(one(Pos::new(1, 1), format!("the file is empty; {example}")));
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            let mut message = format!("invalid JSON: {message}");
            if text.trim_start().starts_with('\'') || text.contains("{'") {
                message.push_str("; JSON strings use double quotes");
            }
            return Err(one(Pos::new(e.line(), e.column()), message));
        }
    };
    // JSON is YAML's flow style, so the YAML reader gives positions; the few JSON texts it
    // refuses (tabs in odd places) still load, without positions.
    Ok(spec::syntax::parse_yaml_with(text, &YAML).unwrap_or_else(|_| from_json(&value)))
}

fn from_json(v: &serde_json::Value) -> Node {
    let node = |value: Value, raw: String| Node { pos: Pos::START, value, raw };
    match v {
        serde_json::Value::Null => node(Value::Null, String::new()),
        serde_json::Value::Bool(b) => node(Value::Bool(*b), b.to_string()),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => node(Value::Int(i.into()), n.to_string()),
            None => node(Value::Float(n.as_f64().unwrap_or(f64::NAN)), n.to_string()),
        },
        serde_json::Value::String(s) => node(Value::Str(s.clone()), s.clone()),
        serde_json::Value::Array(items) => {
            node(Value::Seq(items.iter().map(from_json).collect()), String::new())
        }
        serde_json::Value::Object(map) => node(
            Value::Map(
                map.iter()
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        key_pos: Pos::START,
                        value: from_json(v),
                    })
                    .collect(),
            ),
            String::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_uri_checks_catch_unset_variables() {
        assert!(check_image_uri("123.dkr.ecr.us-east-1.amazonaws.com/app:abc1234").is_ok());
        assert!(check_image_uri("nginx").is_ok());
        assert!(check_image_uri("repo@sha256:abc").is_ok());
        assert!(check_image_uri("repo:").unwrap_err().to_string().contains("tag is empty"));
        assert!(check_image_uri(":latest").unwrap_err().to_string().contains("no repository name"));
        assert!(check_image_uri("").unwrap_err().to_string().contains("not set"));
        assert!(check_image_uri("<IMAGE1_NAME>").unwrap_err().to_string().contains("placeholder"));
        assert!(check_image_uri("a b").unwrap_err().to_string().contains("whitespace"));
    }
}
