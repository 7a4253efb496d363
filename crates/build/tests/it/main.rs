//! Integration tests of the build crate: buildspec parsing (seeds and mistakes), the image files,
//! and real builds run by bash in temporary directories.

mod artifacts;
mod image;
mod parse;
mod run;
mod seeds;

use expect_test::Expect;

/// Renders a parse result the way `cutover validate` prints it: every diagnostic on its line.
pub fn check_errors(file: &str, text: &str, expect: Expect) {
    match build::parse_buildspec(file, text) {
        Ok(parsed) => panic!("expected errors, parsed: {:#?}", parsed.value),
        Err(errors) => expect.assert_eq(&build::render(&errors.0)),
    }
}

/// The notes of a buildspec that parses.
pub fn check_notes(file: &str, text: &str, expect: Expect) -> build::BuildSpec {
    match build::parse_buildspec(file, text) {
        Ok(parsed) => {
            expect.assert_eq(&build::render(&parsed.notes));
            parsed.value
        }
        Err(errors) => panic!("expected a parse, got:\n{errors}"),
    }
}
