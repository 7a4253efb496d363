//! The one glob matcher: `/`-separated paths and branch names, as buildspec `artifacts` and
//! pipeline branch filters write them. `**` as a whole part is any number of parts, `*` and `?`
//! stay within one part, `[abc]`/`[!a-z]` are classes; always relative, never leaving their
//! directory. Pure: matching works on parts; `build`'s artifacts walk the file system with it.

use std::fmt;

/// A compiled pattern such as `**/*.json` or `target/*.jar`.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole directories.
    AnyDirs,
    Name(Vec<Tok>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters within a name (dotfiles included, as CodeBuild's zip does).
    Star,
    /// `?`: one character.
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Glob {
    /// Compiles `pattern`; the error says what to change. A leading `./` and a trailing `/` are
    /// dropped.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let trimmed = pattern.trim();
        let error = |problem| Err(GlobError { pattern: trimmed.to_string(), problem });
        if trimmed.is_empty() {
            return error(Problem::Empty);
        }
        if trimmed.starts_with('/') {
            return error(Problem::Absolute);
        }
        if trimmed.contains('\\') {
            return error(Problem::Backslash);
        }
        let mut rest = trimmed;
        while let Some(r) = rest.strip_prefix("./") {
            rest = r;
        }
        let rest = rest.trim_end_matches('/');
        let mut segments = Vec::new();
        for part in rest.split('/') {
            match part {
                "" | "." => continue,
                ".." => return error(Problem::GoesUp),
                "**" => {
                    // `a/**/**/b` means the same as `a/**/b`.
                    if segments.last() != Some(&Segment::AnyDirs) {
                        segments.push(Segment::AnyDirs);
                    }
                }
                _ => match compile_name(part) {
                    Ok(toks) => segments.push(Segment::Name(toks)),
                    Err(problem) => return error(problem),
                },
            }
        }
        if segments.is_empty() {
            return error(Problem::NamesTheDirectory);
        }
        Ok(Glob { pattern: trimmed.to_string(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern has no wildcard: it names one path.
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| match s {
            Segment::AnyDirs => false,
            Segment::Name(toks) => toks.iter().all(|t| matches!(t, Tok::Lit(_))),
        })
    }

    /// The leading directories that have no wildcard: where a walk for this pattern can start.
    pub fn literal_prefix(&self) -> Vec<String> {
        let mut out = Vec::new();
        // The last segment names files, so it never counts as a directory to start from.
        let dirs = &self.segments[..self.segments.len().saturating_sub(1)];
        for seg in dirs {
            match seg {
                Segment::Name(toks) if toks.iter().all(|t| matches!(t, Tok::Lit(_))) => out.push(
                    toks.iter()
                        .map(|t| match t {
                            Tok::Lit(c) => *c,
                            _ => '?',
                        })
                        .collect(),
                ),
                _ => break,
            }
        }
        out
    }

    /// Whether a relative path, given as its names (`["target", "app.jar"]`), matches.
    pub fn matches(&self, path: &[&str]) -> bool {
        let (p, s) = (self.segments.len(), path.len());
        // ok[i][j]: segments[i..] match path[j..].
        let mut ok = vec![vec![false; s + 1]; p + 1];
        ok[p][s] = true;
        for i in (0..p).rev() {
            for j in (0..=s).rev() {
                ok[i][j] = match &self.segments[i] {
                    Segment::AnyDirs => ok[i + 1][j] || (j < s && ok[i][j + 1]),
                    Segment::Name(toks) => j < s && ok[i + 1][j + 1] && name_matches(toks, path[j]),
                };
            }
        }
        ok[0][0]
    }

    /// Matches a `/`-separated relative path.
    pub fn matches_path(&self, path: &str) -> bool {
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.matches(&names)
    }
}

fn compile_name(part: &str) -> Result<Vec<Tok>, Problem> {
    let mut toks = Vec::new();
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `**` inside a name (`**.js`) means the same as `*`.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::One),
            '[' => {
                let mut negated = false;
                if matches!(chars.peek(), Some('!' | '^')) {
                    negated = true;
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                let mut first = true;
                while let Some(c) = chars.next() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') => {
                                ranges.push((c, c));
                                ranges.push(('-', '-'));
                                closed = true;
                                break;
                            }
                            Some(end) if end >= c => ranges.push((c, end)),
                            Some(end) => return Err(Problem::BackwardsRange { from: c, to: end }),
                            None => break,
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                if !closed {
                    return Err(Problem::UnclosedClass);
                }
                toks.push(Tok::Class { negated, ranges });
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// A pattern [`Glob::new`] refuses, and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError {
    pub pattern: String,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Empty,
    Absolute,
    Backslash,
    GoesUp,
    NamesTheDirectory,
    BackwardsRange { from: char, to: char },
    UnclosedClass,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = &self.pattern;
        match &self.problem {
            Problem::Empty => {
                write!(f, "an empty path; write a file name or a pattern such as `**/*`")
            }
            Problem::Absolute => write!(
                f,
                "`{pattern}` is absolute; paths are relative to the source directory \
                 (CODEBUILD_SRC_DIR) or to base-directory: remove the leading `/`"
            ),
            Problem::Backslash => {
                write!(f, "`{pattern}` contains `\\`; separate directories with `/`")
            }
            Problem::GoesUp => write!(
                f,
                "`{pattern}` goes up with `..`; artifacts must come from inside the source \
                 directory"
            ),
            Problem::NamesTheDirectory => {
                write!(
                    f,
                    "`{pattern}` names the directory itself; write `**/*` for everything in it"
                )
            }
            Problem::BackwardsRange { from, to } => write!(
                f,
                "`{pattern}` has the range `{from}-{to}`, which is backwards; write `{to}-{from}`"
            ),
            Problem::UnclosedClass => write!(
                f,
                "`{pattern}` opens a `[` class that is never closed; add `]` or write `[[]` for a \
                 literal `[`"
            ),
        }
    }
}

impl std::error::Error for GlobError {}

fn name_matches(toks: &[Tok], name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let (t, n) = (toks.len(), chars.len());
    // ok[i][j]: toks[i..] match chars[j..].
    let mut ok = vec![vec![false; n + 1]; t + 1];
    ok[t][n] = true;
    for i in (0..t).rev() {
        for j in (0..=n).rev() {
            ok[i][j] = match &toks[i] {
                Tok::Star => ok[i + 1][j] || (j < n && ok[i][j + 1]),
                Tok::One => j < n && ok[i + 1][j + 1],
                Tok::Lit(c) => j < n && chars[j] == *c && ok[i + 1][j + 1],
                Tok::Class { negated, ranges } => {
                    j < n
                        && ok[i + 1][j + 1]
                        && (ranges.iter().any(|(a, b)| (*a..=*b).contains(&chars[j])) != *negated)
                }
            };
        }
    }
    ok[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().matches_path(path)
    }

    #[test]
    fn double_star_spans_directories() {
        assert!(m("**/*", "a"));
        assert!(m("**/*", "a/b/c.txt"));
        assert!(m("**/*", ".env"));
        assert!(m("dist/**/*", "dist/x/y.js"));
        assert!(m("dist/**/*", "dist/y.js"));
        assert!(!m("dist/**/*", "src/y.js"));
        assert!(m("**/*.json", "imageDetail.json"));
        assert!(m("**/*.json", "a/b/x.json"));
        assert!(!m("**/*.json", "a/b/x.jsonl"));
        assert!(m("a/**/b/*.txt", "a/b/x.txt"));
        assert!(m("a/**/b/*.txt", "a/q/r/b/x.txt"));
    }

    #[test]
    fn single_star_stays_in_one_name() {
        assert!(m("target/*.jar", "target/app.jar"));
        assert!(!m("target/*.jar", "target/lib/app.jar"));
        assert!(m("*", "appspec.yml"));
        assert!(!m("*", "dir/appspec.yml"));
        assert!(m("app-?.[0-9]", "app-x.7"));
        assert!(!m("app-[!x].txt", "app-x.txt"));
        assert!(m("./imageDetail.json", "imageDetail.json"));
    }

    #[test]
    fn bad_patterns_say_what_to_fix() {
        let message = |pattern: &str| Glob::new(pattern).unwrap_err().to_string();
        assert!(message("/etc/passwd").contains("remove the leading `/`"));
        assert!(message("../x").contains("goes up with `..`"));
        assert!(message("a[b").contains("never closed"));
        assert!(message("[z-a]").contains("write `a-z`"));
        assert!(Glob::new("").is_err());
    }

    /// Branch filters (`branches: { includes: [...] }`) match branch names with the same globs.
    #[test]
    fn branch_globs_match_within_and_across_parts() {
        assert!(m("main", "main"));
        assert!(!m("main", "main2"));
        assert!(m("release/*", "release/1.2"));
        assert!(!m("release/*", "release/1.2/hotfix"));
        assert!(m("release/**", "release/1.2/hotfix"));
        assert!(m("feature/**", "feature/"));
        assert!(m("**", "anything/at/all"));
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v/"));
        assert!(m("*-stable", "2024-stable"));
        assert!(!m("*-stable", "a/2024-stable"));
    }

    #[test]
    fn literal_prefixes_bound_the_walk() {
        assert_eq!(Glob::new("dist/assets/**/*").unwrap().literal_prefix(), ["dist", "assets"]);
        assert_eq!(Glob::new("imageDetail.json").unwrap().literal_prefix(), Vec::<String>::new());
        assert!(Glob::new("imageDetail.json").unwrap().is_literal());
        assert!(!Glob::new("*.json").unwrap().is_literal());
    }
}
