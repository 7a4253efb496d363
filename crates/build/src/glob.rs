//! Path globs as buildspec `artifacts` write them: `**` for any number of directories, `*` and `?`
//! within one name, `[abc]`/`[!a-z]` classes; always relative, never leaving their directory.
//! Pure: matching works on path segments, the walk lives in `artifacts`.

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
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err("an empty path; write a file name or a pattern such as `**/*`".into());
        }
        if trimmed.starts_with('/') {
            return Err(format!(
                "`{trimmed}` is absolute; paths are relative to the source directory \
                 (CODEBUILD_SRC_DIR) or to base-directory: remove the leading `/`"
            ));
        }
        if trimmed.contains('\\') {
            return Err(format!("`{trimmed}` contains `\\`; separate directories with `/`"));
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
                ".." => {
                    return Err(format!(
                        "`{trimmed}` goes up with `..`; artifacts must come from inside the \
                         source directory"
                    ));
                }
                "**" => {
                    // `a/**/**/b` means the same as `a/**/b`.
                    if segments.last() != Some(&Segment::AnyDirs) {
                        segments.push(Segment::AnyDirs);
                    }
                }
                _ => segments.push(Segment::Name(compile_name(part, trimmed)?)),
            }
        }
        if segments.is_empty() {
            return Err(format!(
                "`{trimmed}` names the directory itself; write `**/*` for everything in it"
            ));
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

fn compile_name(part: &str, whole: &str) -> Result<Vec<Tok>, String> {
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
                            Some(end) => {
                                return Err(format!(
                                    "`{whole}` has the range `{c}-{end}`, which is backwards; \
                                     write `{end}-{c}`"
                                ));
                            }
                            None => break,
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                if !closed {
                    return Err(format!(
                        "`{whole}` opens a `[` class that is never closed; add `]` or write \
                         `[[]` for a literal `[`"
                    ));
                }
                toks.push(Tok::Class { negated, ranges });
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

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
        assert!(Glob::new("/etc/passwd").unwrap_err().contains("remove the leading `/`"));
        assert!(Glob::new("../x").unwrap_err().contains("goes up with `..`"));
        assert!(Glob::new("a[b").unwrap_err().contains("never closed"));
        assert!(Glob::new("").is_err());
    }

    #[test]
    fn literal_prefixes_bound_the_walk() {
        assert_eq!(Glob::new("dist/assets/**/*").unwrap().literal_prefix(), ["dist", "assets"]);
        assert_eq!(Glob::new("imageDetail.json").unwrap().literal_prefix(), Vec::<String>::new());
        assert!(Glob::new("imageDetail.json").unwrap().is_literal());
        assert!(!Glob::new("*.json").unwrap().is_literal());
    }
}
