//! The last cutover.yaml `apply` parsed. Parsing is a pure function of the file's name and text,
//! and the costliest step of planning a large file (about 40 ms for 1,000 target groups and
//! 10,000 targets in a release build): an `apply` whose routing table the data plane must check
//! first plans twice, and a file applied again unchanged (a CI job, GitOps) is the same text.
//! Only a file that parsed is kept, and one at a time: any other text is parsed anew.

use config::Parsed;

/// One parsed file, with the name and text it was parsed from.
#[derive(Default)]
pub struct LastParsed {
    last: Option<(String, String, Parsed<config::CutoverFile>)>,
}

impl LastParsed {
    /// `text` (named `name`) parsed: a clone of the last parse when the name and text are the
    /// same, else parsed now (and kept when it parses).
    pub fn parse(
        &mut self,
        name: &str,
        text: &str,
    ) -> Result<Parsed<config::CutoverFile>, config::Errors> {
        if let Some((last_name, last_text, parsed)) = &self.last
            && last_name == name
            && last_text == text
        {
            return Ok(parsed.clone());
        }
        let parsed = config::parse_cutover_file(name, text)?;
        self.last = Some((name.to_string(), text.to_string(), parsed.clone()));
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "target_groups:\n  - { name: web, targets: [127.0.0.1:9001] }\n";
    const AFTER: &str = "target_groups:\n  - { name: web, targets: [127.0.0.1:9002] }\n";

    fn targets(parsed: &Parsed<config::CutoverFile>) -> Vec<String> {
        parsed.value.target_groups[0].targets.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_same_text_parsed_again_is_what_parsing_it_gives() {
        let mut last = LastParsed::default();
        let first = last.parse("cutover.yaml", BEFORE).unwrap();
        let again = last.parse("cutover.yaml", BEFORE).unwrap();
        assert_eq!(again, first);
        assert_eq!(again, config::parse_cutover_file("cutover.yaml", BEFORE).unwrap());
    }

    #[test]
    fn a_changed_text_or_name_is_parsed_anew() {
        let mut last = LastParsed::default();
        last.parse("cutover.yaml", BEFORE).unwrap();
        assert_eq!(targets(&last.parse("cutover.yaml", AFTER).unwrap()), ["127.0.0.1:9002"]);
        assert_eq!(targets(&last.parse("cutover.yaml", BEFORE).unwrap()), ["127.0.0.1:9001"]);
        // Positions in notes and errors name the file: another name is another parse.
        let other = last.parse("other.yaml", BEFORE).unwrap();
        assert_eq!(other, config::parse_cutover_file("other.yaml", BEFORE).unwrap());
    }

    #[test]
    fn a_file_that_does_not_parse_is_refused_each_time_and_not_kept() {
        let mut last = LastParsed::default();
        last.parse("cutover.yaml", BEFORE).unwrap();
        let bad = "target_groups:\n  - { name: web, targets: [nowhere] }\n";
        let first = last.parse("cutover.yaml", bad).unwrap_err().to_string();
        assert_eq!(last.parse("cutover.yaml", bad).unwrap_err().to_string(), first);
        assert!(first.contains("cutover.yaml:2:"), "{first}");
        assert_eq!(targets(&last.parse("cutover.yaml", BEFORE).unwrap()), ["127.0.0.1:9001"]);
    }
}
