//! imageDetail.json and imagedefinitions.json: what builds write, and the mistakes they make.

use builder::{ImageDefinition, parse_image_definitions, parse_image_detail};
use expect_test::{Expect, expect};

fn detail_errors(text: &str, expect: Expect) {
    match parse_image_detail("imageDetail.json", text) {
        Ok(p) => panic!("expected errors, got {:?}", p.value),
        Err(e) => expect.assert_eq(&builder::render(&e.0)),
    }
}

fn definitions_errors(text: &str, expect: Expect) {
    match parse_image_definitions("imagedefinitions.json", text) {
        Ok(p) => panic!("expected errors, got {:?}", p.value),
        Err(e) => expect.assert_eq(&builder::render(&e.0)),
    }
}

#[test]
fn seed_000_image_detail_parses() {
    // What seed 000's post_build printf writes.
    let text = r#"{"Version":"1.0","ImageURI":"123456789012.dkr.ecr.us-east-1.amazonaws.com/d-ecr-blue-green-app:abc1234"}"#;
    let parsed = parse_image_detail("imageDetail.json", text).expect("parses");
    assert_eq!(
        parsed.value.image_uri,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/d-ecr-blue-green-app:abc1234"
    );
    assert_eq!(parsed.value.version.as_deref(), Some("1.0"));
    assert!(parsed.notes.is_empty());
}

#[test]
fn ecr_source_image_detail_parses_every_field() {
    let text = r#"{
  "ImageSizeInBytes": "44728918",
  "ImageDigest": "sha256:EXAMPLE11223344556677889900bfea42ea2d3b8a1ee8329ba7e68694950afd3",
  "Version": "1.0",
  "ImagePushedAt": "Mon Jan 21 20:04:00 UTC 2019",
  "RegistryId": "EXAMPLE12233",
  "RepositoryName": "dk-image-repo",
  "ImageURI": "ACCOUNTID.dkr.ecr.us-west-2.amazonaws.com/dk-image-repo@sha256:example3",
  "ImageTags": ["latest"],
  "Extra": 1
}"#;
    let parsed = parse_image_detail("imageDetail.json", text).expect("parses");
    assert_eq!(parsed.value.image_size_in_bytes, Some(44_728_918));
    assert_eq!(parsed.value.image_tags, ["latest"]);
    assert_eq!(parsed.value.repository_name.as_deref(), Some("dk-image-repo"));
    assert_eq!(
        builder::render(&parsed.notes),
        "note: imageDetail.json:10:3: Extra: ignored: `Extra` is not read by the deploy\n"
    );
}

#[test]
fn image_detail_mistakes() {
    // IMAGE_TAG was empty when the build wrote the file.
    detail_errors(
        r#"{"Version":"1.0","ImageURI":"123.dkr.ecr.us-east-1.amazonaws.com/app:"}"#,
        expect![[r#"
            imageDetail.json:1:29: ImageURI: the image "123.dkr.ecr.us-east-1.amazonaws.com/app:" ends with `:`, so its tag is empty; was the tag variable (such as IMAGE_TAG) empty when the file was written?
        "#]],
    );
    detail_errors(
        "{\n  \"ImageUri\": \"repo:1\"\n}",
        expect![[r#"
            imageDetail.json:2:3: ImageUri: unknown field `ImageUri`; did you mean `ImageURI`? (field names are case-sensitive)
        "#]],
    );
    detail_errors(
        r#"{"Version":"1.0"}"#,
        expect![[r#"
            imageDetail.json:1:1: ImageURI: missing required field `ImageURI`; a build writes it with printf '{"ImageURI":"%s"}' "$REPOSITORY_URI:$IMAGE_TAG" > imageDetail.json
        "#]],
    );
    detail_errors(
        r#"[{"name":"web","imageUri":"nginx"}]"#,
        expect![[r#"
            imageDetail.json:1:1: this is a list, the shape of imagedefinitions.json (ECS standard deploy); imageDetail.json (CodeDeploy blue/green) is one object: {"ImageURI": "<registry>/<repository>:<tag>"}
        "#]],
    );
    detail_errors(
        "{\"ImageURI\": \"a\",\n}",
        expect![[r#"
            imageDetail.json:2:1: invalid JSON: trailing comma
        "#]],
    );
    detail_errors(
        "",
        expect![[r#"
            imageDetail.json:1:1: the file is empty; a build writes it with printf '{"ImageURI":"%s"}' "$REPOSITORY_URI:$IMAGE_TAG" > imageDetail.json
        "#]],
    );
}

#[test]
fn image_definitions_parse_and_reject_mistakes() {
    let parsed = parse_image_definitions(
        "imagedefinitions.json",
        r#"[{"name":"web","imageUri":"repo/web:1"},{"name":"sidecar","imageUri":"repo/side:1"}]"#,
    )
    .expect("parses");
    assert_eq!(
        parsed.value,
        [
            ImageDefinition { name: "web".into(), image_uri: "repo/web:1".into() },
            ImageDefinition { name: "sidecar".into(), image_uri: "repo/side:1".into() },
        ]
    );
    definitions_errors(
        r#"{"ImageURI":"repo/web:1"}"#,
        expect![[r#"
            imagedefinitions.json:1:1: this is imageDetail.json's shape (CodeDeploy blue/green, one object with `ImageURI`); imagedefinitions.json (ECS standard deploy) is a list: [{"name": "<container>", "imageUri": "<image>"}]
        "#]],
    );
    definitions_errors(
        "[\n  {\"name\": \"web\", \"imageURI\": \"repo/web:1\"},\n  {\"name\": \"api\", \"imageUri\": \"repo/api:2\"},\n  {\"imageUri\": \"x\"},\n  {\"name\": \"api\", \"imageUri\": \"repo/api:3\"}\n]",
        expect![[r#"
            imagedefinitions.json:2:19: [0].imageURI: unknown field `imageURI`; did you mean `imageUri`? (field names are case-sensitive)
            imagedefinitions.json:4:3: [2].name: missing required field `name`
            imagedefinitions.json:5:3: [3].name: container `api` is listed twice (first at [1]); keep one
        "#]],
    );
    definitions_errors(
        "[]",
        expect![[r#"
            imagedefinitions.json:1:1: the list is empty; name at least one container and its image: a build writes it with printf '[{"name":"%s","imageUri":"%s"}]' "$CONTAINER_NAME" "$REPOSITORY_URI:$IMAGE_TAG" > imagedefinitions.json
        "#]],
    );
}
