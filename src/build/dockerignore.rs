//! Docker's `.dockerignore` rules, which decide which files of a build context
//! are left out of the tar that is uploaded to the engine.
//!
//! The engine does not apply `.dockerignore` to an uploaded tar: the Docker CLI
//! filters the context on the client side before sending it, so gantry has to
//! do the same and do it with Docker's semantics, not gitignore's. The rules
//! here follow the Docker CLI (buildkit's `dockerignore.ReadAll`) for reading
//! the file and moby's `patternmatcher` for matching:
//!
//! - a line starting with `#` in the first column is a comment, other lines are
//!   trimmed, and lines that end up empty are skipped;
//! - patterns are cleaned like Go's `filepath.Clean` and anchored at the context
//!   root, so `/foo`, `./foo` and `foo` are the same pattern and `*.md` does not
//!   match `docs/x.md`;
//! - matching uses Go's `filepath.Match` syntax (`*`, `?`, `[...]`, `[^...]`,
//!   `\` escapes) plus `**`, which matches any number of directories;
//! - a pattern that matches a directory also matches everything below it;
//! - a leading `!` makes an exception, and the last matching line wins.
//!
//! This module owns only the rules. It must not do any IO: reading the file and
//! walking the context belong to the caller. The caller also has to keep in
//! mind that the Dockerfile and `.dockerignore` are always sent, whatever these
//! rules say, and that an excluded directory can still contain re-included
//! files when the rules have exceptions, so it must not prune such directories.

use regex::Regex;

/// Parsed `.dockerignore` rules.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    /// The rules in file order; order matters because the last match wins.
    rules: Vec<Rule>,
}

/// Why a `.dockerignore` file could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum DockerIgnoreError {
    /// A pattern that cannot be compiled (for example an unclosed `[`); `line` is 1-based.
    #[error("line {line}: bad pattern `{pattern}`: {reason}")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: String,
    },
}

/// One non-comment line of the file.
#[derive(Debug, Clone)]
struct Rule {
    /// True for `!` lines, which re-include what earlier lines excluded.
    is_exception: bool,
    matcher: PathMatcher,
}

/// How one pattern is matched against a path.
///
/// The three literal variants mirror the shortcuts moby's matcher takes. They
/// are kept separate because the suffix shortcut does not behave like the
/// regular expression moby would otherwise build (`**.md` matches `docs/x.md`),
/// and Docker's observable behaviour is what we have to reproduce.
#[derive(Debug, Clone)]
enum PathMatcher {
    /// A pattern without any wildcard, compared as a whole string.
    Exact(String),
    /// A literal followed by a trailing `**`; holds the literal.
    Prefix(String),
    /// A leading `**` followed by a literal; holds the literal.
    Suffix(String),
    /// Anything else, translated into an anchored regular expression.
    Pattern(Regex),
}

/// What moby's pattern compiler has detected so far while scanning a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Pattern,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    ///
    /// # Errors
    ///
    /// Returns [`DockerIgnoreError::BadPattern`] for the first line whose pattern
    /// Docker would refuse, so a broken file fails the build instead of silently
    /// sending files the author meant to keep out.
    pub fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        // Editors on Windows like to start files with a byte order mark, and the
        // Docker CLI strips it so that the first pattern still works.
        let text_without_bom = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (line_index, raw_line) in text_without_bom.lines().enumerate() {
            let Some(normalized_pattern) = normalize_line(raw_line) else {
                continue;
            };
            let rule = compile_rule(&normalized_pattern).map_err(|reason| {
                DockerIgnoreError::BadPattern {
                    line: line_index + 1,
                    pattern: raw_line.trim().to_string(),
                    reason,
                }
            })?;
            rules.push(rule);
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether a path (relative to the context root, `/`-separated, no leading `./` or `/`) is excluded from the context.
    pub fn is_excluded(&self, path: &str) -> bool {
        // Cleaning is cheap insurance against callers that pass `dir/` or
        // `./dir`, which would otherwise silently miss exact patterns.
        let cleaned_path = clean_path(path);
        let relative_path = cleaned_path.strip_prefix('/').unwrap_or(&cleaned_path);
        // Docker never lets the rules exclude the context root itself.
        if relative_path.is_empty() || relative_path == "." {
            return false;
        }
        let parent_directories: Vec<&str> = relative_path
            .match_indices('/')
            .map(|(slash_index, _)| &relative_path[..slash_index])
            .collect();

        let mut excluded = false;
        for rule in &self.rules {
            // An exclusion cannot change an already excluded path and an
            // exception cannot change an included one, so skip the work.
            if rule.is_exception != excluded {
                continue;
            }
            let rule_matches = rule.matcher.matches(relative_path)
                || parent_directories
                    .iter()
                    .any(|parent_directory| rule.matcher.matches(parent_directory));
            if rule_matches {
                excluded = !rule.is_exception;
            }
        }
        excluded
    }
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(literal) => path == literal,
            PathMatcher::Prefix(literal) => path.starts_with(literal.as_str()),
            PathMatcher::Suffix(literal) => {
                // `**/foo` must also match `foo` at the root, where there is no
                // slash in front of it.
                path.ends_with(literal.as_str())
                    || literal
                        .strip_prefix('/')
                        .is_some_and(|without_slash| path == without_slash)
            }
            PathMatcher::Pattern(regex) => regex.is_match(path),
        }
    }
}

/// Turns one raw line into the pattern the matcher sees, or `None` for lines
/// that carry no pattern.
///
/// The `!` marker stays in front of the result; `compile_rule` handles it.
fn normalize_line(raw_line: &str) -> Option<String> {
    // Only a `#` in the very first column starts a comment; an indented `#` is
    // part of a pattern, because Docker checks before trimming.
    if raw_line.starts_with('#') {
        return None;
    }
    let trimmed_line = raw_line.trim();
    if trimmed_line.is_empty() {
        return None;
    }
    let (is_exception, pattern_text) = match trimmed_line.strip_prefix('!') {
        Some(after_marker) => (true, after_marker.trim()),
        None => (false, trimmed_line),
    };
    let mut pattern = pattern_text.to_string();
    if !pattern.is_empty() {
        pattern = clean_path(&pattern);
        // Patterns are relative to the context root, so an absolute-looking
        // pattern is the same as a relative one. A lone `/` is kept as Docker
        // keeps it, and then matches nothing.
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
    }
    if is_exception {
        pattern.insert(0, '!');
    }
    Some(pattern)
}

/// Compiles one normalized line, the way moby's matcher does after reading.
fn compile_rule(normalized_pattern: &str) -> Result<Rule, String> {
    // Docker cleans the line a second time with the `!` still attached, which
    // is how `!/` turns into a bare `!`; doing the same keeps those errors.
    let cleaned_pattern = clean_path(normalized_pattern.trim());
    let (is_exception, glob) = match cleaned_pattern.strip_prefix('!') {
        Some("") => return Err("an exception `!` needs a pattern after it".to_string()),
        Some(after_marker) => (true, after_marker),
        None => (false, cleaned_pattern.as_str()),
    };
    Ok(Rule {
        is_exception,
        matcher: compile_glob(glob)?,
    })
}

/// Translates a Go `filepath.Match` pattern with `**` into a matcher.
///
/// The scan follows moby's compiler step by step, including its decisions on
/// when a pattern is a plain literal, so that every pattern matches exactly
/// what it matches under `docker build`.
fn compile_glob(glob: &str) -> Result<PathMatcher, String> {
    let glob_characters: Vec<char> = glob.chars().collect();
    // `(?s)` lets `.*` cross newlines, which file names may contain.
    let mut regex_source = String::from("(?s)^");
    let mut kind = MatchKind::Exact;
    let mut position = 0;
    let mut is_first_token = true;

    while let Some(&character) = glob_characters.get(position) {
        position += 1;
        match character {
            '*' if glob_characters.get(position) == Some(&'*') => {
                position += 1;
                // `**/` means the same as `**`, so the slash is swallowed.
                if glob_characters.get(position) == Some(&'/') {
                    position += 1;
                }
                if position == glob_characters.len() {
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        regex_source.push_str(".*");
                        kind = MatchKind::Pattern;
                    }
                } else {
                    // Any number of whole directories, including none.
                    regex_source.push_str("(?:.*/)?");
                    kind = MatchKind::Pattern;
                }
                if is_first_token {
                    kind = MatchKind::Suffix;
                }
            }
            '*' => {
                regex_source.push_str("[^/]*");
                kind = MatchKind::Pattern;
            }
            '?' => {
                regex_source.push_str("[^/]");
                kind = MatchKind::Pattern;
            }
            '\\' => {
                let Some(&escaped_character) = glob_characters.get(position) else {
                    return Err("the pattern ends with an unfinished `\\` escape".to_string());
                };
                position += 1;
                regex_source.push_str(&regex::escape(&escaped_character.to_string()));
                kind = MatchKind::Pattern;
            }
            '[' => {
                regex_source.push_str(&translate_character_class(&glob_characters, &mut position)?);
                kind = MatchKind::Pattern;
            }
            // A stray `]` is a literal, but moby stops treating the pattern as
            // plain text when it sees one, which matters for `**` shortcuts.
            ']' => {
                regex_source.push_str(r"\]");
                kind = MatchKind::Pattern;
            }
            literal_character => {
                regex_source.push_str(&regex::escape(&literal_character.to_string()));
            }
        }
        is_first_token = false;
    }

    // The literal variants can use the cleaned text directly: they are only
    // chosen when the pattern contains no wildcard, class or escape.
    let matcher = match kind {
        MatchKind::Exact => PathMatcher::Exact(glob.to_string()),
        MatchKind::Prefix => PathMatcher::Prefix(glob.trim_end_matches('*').to_string()),
        MatchKind::Suffix => PathMatcher::Suffix(glob.get(2..).unwrap_or_default().to_string()),
        MatchKind::Pattern => {
            regex_source.push('$');
            let regex = Regex::new(&regex_source).map_err(|error| error.to_string())?;
            PathMatcher::Pattern(regex)
        }
    };
    Ok(matcher)
}

/// Translates a `[...]` class whose `[` has just been consumed, leaving
/// `position` after its `]`.
///
/// This follows `filepath.Match`: `^` negates, ranges need both ends, `-` and
/// `]` must be escaped, and the class cannot be empty. Every character is
/// escaped for the regex engine so that its own class syntax (`&&`, `--`,
/// `[:alpha:]`) never leaks in.
fn translate_character_class(
    glob_characters: &[char],
    position: &mut usize,
) -> Result<String, String> {
    let mut class_source = String::from("[");
    if glob_characters.get(*position) == Some(&'^') {
        *position += 1;
        class_source.push('^');
    }
    let mut range_count = 0;
    loop {
        if glob_characters.get(*position) == Some(&']') && range_count > 0 {
            *position += 1;
            break;
        }
        let low_character = read_class_character(glob_characters, position)?;
        let mut high_character = low_character;
        if glob_characters.get(*position) == Some(&'-') {
            *position += 1;
            high_character = read_class_character(glob_characters, position)?;
        }
        // `filepath.Match` would accept a reversed range that matches nothing,
        // but moby's regex compiler rejects it when the build runs, so the
        // honest answer is to reject the file up front.
        if low_character > high_character {
            return Err(format!(
                "character range `{low_character}-{high_character}` is out of order"
            ));
        }
        class_source.push_str(&regex::escape(&low_character.to_string()));
        if high_character != low_character {
            class_source.push('-');
            class_source.push_str(&regex::escape(&high_character.to_string()));
        }
        range_count += 1;
    }
    class_source.push(']');
    Ok(class_source)
}

/// Reads one end of a class range, resolving a `\` escape.
fn read_class_character(glob_characters: &[char], position: &mut usize) -> Result<char, String> {
    let unclosed = || "unclosed character class `[`".to_string();
    let mut character = *glob_characters.get(*position).ok_or_else(unclosed)?;
    match character {
        '-' => return Err("a `-` in a character class must be escaped".to_string()),
        ']' => {
            return Err("empty character class or range without an upper bound".to_string());
        }
        '\\' => {
            *position += 1;
            character = *glob_characters.get(*position).ok_or_else(unclosed)?;
        }
        _ => {}
    }
    *position += 1;
    // Go reports a class that runs to the end of the pattern here, before it
    // even looks for the closing `]`.
    if *position >= glob_characters.len() {
        return Err(unclosed());
    }
    Ok(character)
}

/// Go's `filepath.Clean` for `/`-separated paths: collapses repeated slashes,
/// drops `.` elements, resolves `..` where possible and removes a trailing
/// slash. An empty result becomes `.`.
fn clean_path(path: &str) -> String {
    let is_rooted = path.starts_with('/');
    let mut kept_elements: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if kept_elements.last().is_some_and(|last| *last != "..") {
                    kept_elements.pop();
                } else if !is_rooted {
                    // A relative path may climb above its start; a rooted one
                    // cannot go above `/`.
                    kept_elements.push("..");
                }
            }
            name => kept_elements.push(name),
        }
    }
    let joined_elements = kept_elements.join("/");
    if is_rooted {
        format!("/{joined_elements}")
    } else if joined_elements.is_empty() {
        ".".to_string()
    } else {
        joined_elements
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts whether `path` is excluded by a `.dockerignore` with `dockerignore_text`.
    fn check(dockerignore_text: &str, path: &str, expected_excluded: bool) {
        let rules = match DockerIgnore::parse(dockerignore_text) {
            Ok(rules) => rules,
            Err(error) => panic!("{dockerignore_text:?} should parse: {error}"),
        };
        assert_eq!(
            rules.is_excluded(path),
            expected_excluded,
            "dockerignore {dockerignore_text:?}, path {path:?}"
        );
    }

    fn check_all(cases: &[(&str, &str, bool)]) {
        for &(dockerignore_text, path, expected_excluded) in cases {
            check(dockerignore_text, path, expected_excluded);
        }
    }

    #[test]
    fn plain_files_and_directories() {
        check_all(&[
            ("secret.txt", "secret.txt", true),
            ("secret.txt", "other.txt", false),
            ("secret.txt", "config/secret.txt", false),
            ("node_modules", "node_modules", true),
            ("node_modules", "node_modules/left-pad/index.js", true),
            ("node_modules", "node_modules_backup/index.js", false),
            ("tmp/", "tmp", true),
            ("tmp/", "tmp/cache/file", true),
            ("tmp/", "src/tmp/file", false),
            ("", "anything", false),
            ("\n\n   \n", "anything", false),
        ]);
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        check_all(&[
            ("*.md", "README.md", true),
            ("*.md", "docs/guide.md", false),
            ("**/*.md", "README.md", true),
            ("**/*.md", "docs/guide.md", true),
            ("**/*.md", "docs/deep/er/guide.md", true),
            ("**/*.md", "docs/guide.txt", false),
            ("/foo/bar", "foo/bar", true),
            ("/foo/bar", "other/foo/bar", false),
            ("./foo", "foo", true),
            ("./foo", "foo/file", true),
            ("foo/../bar", "bar", true),
            ("foo/../bar", "foo/bar", false),
            ("a//b/./c", "a/b/c", true),
            // A lone slash stays `/` and matches nothing, as in Docker.
            ("/", "anything", false),
            // The context root itself is never excluded.
            ("*", "", false),
            ("**", ".", false),
        ]);
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        check_all(&[
            ("*.md\n!README.md", "README.md", false),
            ("*.md\n!README.md", "CHANGELOG.md", true),
            ("!README.md\n*.md", "README.md", true),
            (
                "*.md\n!README*.md\nREADME-secret.md",
                "README-secret.md",
                true,
            ),
            ("*.md\n!README*.md\nREADME-secret.md", "README.md", false),
            (
                "*.md\nREADME-secret.md\n!README*.md",
                "README-secret.md",
                false,
            ),
            ("docs\n!docs/README.md", "docs/README.md", false),
            ("docs\n!docs/README.md", "docs/other.md", true),
            ("docs/\n!docs/README.md", "docs/README.md", false),
            ("docs/*\n!docs/README.md", "docs/README.md", false),
            ("*\n!src", "src/main.rs", false),
            ("*\n!src", "target/debug/gantry", true),
            ("**\n!util/docker/web", "util/docker/web/foo", false),
            (
                "**\n!util/docker/web\nutil/docker/web/foo",
                "util/docker/web/foo",
                true,
            ),
            ("secret\n!/secret", "secret", false),
            ("secret\n! /secret", "secret", false),
            ("secret\n!   secret   ", "secret", false),
        ]);
    }

    #[test]
    fn comments_and_whitespace() {
        check_all(&[
            ("# secret.txt", "# secret.txt", false),
            ("# secret.txt\nsecret.txt", "secret.txt", true),
            // Only the first column starts a comment, as in Docker.
            ("  # literal", "# literal", true),
            ("secret.txt   \t", "secret.txt", true),
            ("   secret.txt", "secret.txt", true),
            ("secret.txt\r\nother.txt\r\n", "secret.txt", true),
            ("secret.txt\r\nother.txt\r\n", "other.txt", true),
            ("\u{feff}secret.txt", "secret.txt", true),
        ]);
    }

    #[test]
    fn single_character_wildcards_and_classes() {
        check_all(&[
            ("temp?", "tempa", true),
            ("temp?", "temp", false),
            ("temp?", "tempab", false),
            ("a?b", "a/b", false),
            ("a?b", "a\u{263a}b", true),
            ("file[a-c].txt", "fileb.txt", true),
            ("file[a-c].txt", "filed.txt", false),
            ("file[^a-c].txt", "filed.txt", true),
            ("file[^a-c].txt", "filea.txt", false),
            ("file[abc].txt", "filec.txt", true),
            ("[a-\u{3b6}]*", "\u{3b1}", true),
            ("*[a-\u{3b6}]", "A", false),
            // `!` does not negate a class in Go patterns; it is a member.
            ("file[!a].txt", "file!.txt", true),
            ("[\\]a]", "]", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            // Regex class syntax must not leak into glob classes.
            ("[a&&b]", "&", true),
            ("[[:alpha:]]", ":]", true),
        ]);
    }

    #[test]
    fn star_wildcards() {
        check_all(&[
            ("*", "README.md", true),
            ("*", "docs/README.md", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("*/temp*", "somedir/temporary.txt", true),
            ("*/temp*", "somedir/temp/nested", true),
            ("*/temp*", "temporary.txt", false),
            ("*/*/temp*", "somedir/subdir/temporary.txt", true),
            ("a/*/c", "a/b/c/d.txt", true),
            (".*", ".env", true),
            (".*", "env", false),
        ]);
    }

    #[test]
    fn double_star_wildcards() {
        check_all(&[
            ("**", "file", true),
            ("**", "dir/file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir", false),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir", "other/dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("**file", "dir/dir/file", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            // Docker treats a leading `**` followed by plain text as "ends
            // with", so this matches Markdown files at any depth.
            ("**.md", "docs/guide.md", true),
        ]);
    }

    #[test]
    fn escapes_and_regex_metacharacters() {
        check_all(&[
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("foo\\?", "foo?", true),
            ("foo\\?", "fooa", false),
            ("\\[x\\]", "[x]", true),
            ("a\\\\", "a\\", true),
            ("\\d", "d", true),
            ("\\d", "1", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            ("a^b*", "a^bc", true),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
        ]);
    }

    #[test]
    fn bad_patterns_report_their_line() {
        let bad_files = [
            ("ok\n[abc", 2, "[abc"),
            ("# comment\n\n!", 3, "!"),
            ("!/", 1, "!/"),
            ("a\\", 1, "a\\"),
            ("[]a]", 1, "[]a]"),
            ("[]", 1, "[]"),
            ("[^", 1, "[^"),
            ("[-x]", 1, "[-x]"),
            ("[x-]", 1, "[x-]"),
            ("[a-b-c]", 1, "[a-b-c]"),
            ("[z-a]", 1, "[z-a]"),
            ("[Local-Only]/", 1, "[Local-Only]/"),
            ("keep\n   a[   ", 2, "a["),
        ];
        for (dockerignore_text, expected_line, expected_pattern) in bad_files {
            match DockerIgnore::parse(dockerignore_text) {
                Err(DockerIgnoreError::BadPattern { line, pattern, .. }) => {
                    assert_eq!(line, expected_line, "line for {dockerignore_text:?}");
                    assert_eq!(
                        pattern, expected_pattern,
                        "pattern for {dockerignore_text:?}"
                    );
                }
                Ok(_) => panic!("{dockerignore_text:?} should not parse"),
            }
        }
    }

    #[test]
    fn clean_path_follows_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/..", "/"),
            ("/a/../../b", "/b"),
            ("!/", "!"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean_path(input), expected, "clean_path({input:?})");
        }
    }
}
