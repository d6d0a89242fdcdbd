//! Property tests of `.dockerignore` matching: any file and path, and rules compared
//! with a small matcher written from Docker's documentation.
//!
//! - Any text parses to rules or a bad-pattern error; any path gets an answer.
//! - A pattern that is exactly a path excludes it and everything below it; `!` with
//!   the same pattern after it includes them again.
//! - Rules made of literal names, `*`, `?`, classes and `**` segments decide every path
//!   as the reference matcher does: segment by segment, `**` for any number of
//!   directories (at least one at the end), a directory's match covering what is
//!   below it, the last matching line winning.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::fuzz;

#[test]
fn any_file_and_path_get_an_answer() {
    let pieces = select(
        &[
            "*", "**", "?", "[", "]", "^", "-", "\\", "!", "#", "/", ".", "..", "a", "b", " ",
            "\n", "\r\n", "\t", "\u{feff}", "é", "[a-z]", "[^/]", "(", "|", "$", "{", "+",
        ][..],
    );
    let text = prop_oneof![
        proptest::collection::vec(pieces, 0..40).prop_map(|pieces| pieces.concat()),
        ".{0,100}",
    ];
    let path = prop_oneof!["[ab./]{0,12}", ".{0,30}"];
    fuzz::check(
        "dockerignore::any",
        (text, proptest::collection::vec(path, 1..8)),
        |(text, paths)| {
            match DockerIgnore::parse(&text) {
                Ok(rules) => {
                    for path in &paths {
                        rules.is_excluded(path);
                    }
                    // The context root is never excluded.
                    prop_assert!(!rules.is_excluded(""));
                    prop_assert!(!rules.is_excluded("."));
                }
                Err(DockerIgnoreError::BadPattern { line, reason, .. }) => {
                    prop_assert!(line >= 1 && line <= text.lines().count().max(1));
                    prop_assert!(!reason.is_empty());
                }
            }
            Ok(())
        },
    );
}

/// A file or directory name without anything `.dockerignore` reads as syntax.
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_.,@%+=~-]{0,8}"
        .prop_filter("not `.` or `..`", |name| name != "." && name != "..")
}

#[test]
fn an_exact_path_excludes_itself_and_what_is_below_until_it_is_excepted() {
    let path = proptest::collection::vec(name(), 1..5).prop_map(|names| names.join("/"));
    fuzz::check(
        "dockerignore::exact",
        (path, name(), any::<bool>()),
        |(path, below, leading_slash)| {
            let pattern = if leading_slash {
                format!("/{path}")
            } else {
                path.clone()
            };
            let inside = format!("{path}/{below}");
            let beside = format!("{path}{below}");
            let parse = |text: String| {
                DockerIgnore::parse(&text).map_err(|error| TestCaseError::fail(error.to_string()))
            };
            let rules = parse(pattern.clone())?;
            prop_assert!(rules.is_excluded(&path));
            prop_assert!(rules.is_excluded(&inside));
            prop_assert!(!rules.is_excluded(&beside));
            let excepted = parse(format!("{pattern}\n!{path}"))?;
            prop_assert!(!excepted.is_excluded(&path));
            prop_assert!(!excepted.is_excluded(&inside));
            let again = parse(format!("{pattern}\n!{path}\n{inside}"))?;
            prop_assert!(again.is_excluded(&inside));
            prop_assert!(!again.is_excluded(&path));
            Ok(())
        },
    );
}

/// One segment of a pattern in the reference's subset.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`: any number of whole segments.
    AnyDirectories,
    /// Glob atoms within one segment.
    Atoms(Vec<Atom>),
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Literal(char),
    /// `*`
    Star,
    /// `?`
    One,
    /// `[ab]`. (A negated class, `[^ab]`, matches `/` too, as in Go's `filepath.Match`,
    /// which a segment-by-segment reference cannot say; the other tests cover it.)
    Class(Vec<char>),
}

/// Names are made of these, so that patterns and paths meet often.
const ALPHABET: [char; 4] = ['a', 'b', 'c', '.'];

fn atom() -> impl Strategy<Value = Atom> {
    let member = select(&ALPHABET[..]);
    prop_oneof![
        4 => member.clone().prop_map(Atom::Literal),
        1 => Just(Atom::Star),
        1 => Just(Atom::One),
        1 => proptest::collection::vec(member, 1..3).prop_map(Atom::Class),
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        1 => Just(Segment::AnyDirectories),
        5 => proptest::collection::vec(atom(), 1..4)
            .prop_filter("a literal `.` or `..` segment is cleaned away", |atoms| {
                !matches!(atoms.as_slice(), [Atom::Literal('.')] | [Atom::Literal('.'), Atom::Literal('.')])
            })
            // Two stars side by side are `**`, another thing; one stands for both.
            .prop_map(|mut atoms| {
                atoms.dedup_by(|one, other| *one == Atom::Star && *other == Atom::Star);
                Segment::Atoms(atoms)
            }),
    ]
}

fn write_pattern(segments: &[Segment]) -> String {
    let written: Vec<String> = segments
        .iter()
        .map(|segment| match segment {
            Segment::AnyDirectories => "**".to_string(),
            Segment::Atoms(atoms) => atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Literal(character) => character.to_string(),
                    Atom::Star => "*".to_string(),
                    Atom::One => "?".to_string(),
                    Atom::Class(members) => format!("[{}]", members.iter().collect::<String>()),
                })
                .collect(),
        })
        .collect();
    written.join("/")
}

/// Whether `atoms` match all of `name`.
fn atoms_match(atoms: &[Atom], name: &[char]) -> bool {
    match atoms.split_first() {
        None => name.is_empty(),
        Some((Atom::Star, rest)) => (0..=name.len()).any(|taken| atoms_match(rest, &name[taken..])),
        Some((atom, rest)) => {
            let Some((first, name_rest)) = name.split_first() else {
                return false;
            };
            let takes = match atom {
                Atom::Literal(character) => first == character,
                Atom::One => true,
                Atom::Class(members) => members.contains(first),
                Atom::Star => unreachable!("handled above"),
            };
            takes && atoms_match(rest, name_rest)
        }
    }
}

/// Whether the pattern's segments match all of the path's names. `**` takes any
/// number of names, but at least one when it ends a longer pattern (`dir/**` is what
/// is inside `dir`, not `dir`).
fn segments_match(segments: &[Segment], names: &[Vec<char>], whole: bool) -> bool {
    match segments.split_first() {
        None => names.is_empty(),
        Some((Segment::AnyDirectories, rest)) => {
            let least = usize::from(rest.is_empty() && !whole);
            (least..=names.len()).any(|taken| segments_match(rest, &names[taken..], false))
        }
        Some((Segment::Atoms(atoms), rest)) => names.split_first().is_some_and(|(name, names)| {
            atoms_match(atoms, name) && segments_match(rest, names, false)
        }),
    }
}

/// The reference: the last rule matching the path or one of its directories decides.
fn reference_excluded(rules: &[(bool, Vec<Segment>)], path: &str) -> bool {
    let names: Vec<Vec<char>> = path.split('/').map(|name| name.chars().collect()).collect();
    let mut excluded = false;
    for (is_exception, segments) in rules {
        let whole = segments.as_slice() == [Segment::AnyDirectories];
        let matches =
            (1..=names.len()).any(|depth| segments_match(segments, &names[..depth], whole));
        if matches {
            excluded = !is_exception;
        }
    }
    excluded
}

#[test]
fn rules_decide_as_the_reference_matcher() {
    let rule = (
        proptest::bool::weighted(0.3),
        // `**/**` is `**`: runs of them are written as one.
        proptest::collection::vec(segment(), 1..4).prop_map(|mut segments| {
            segments.dedup_by(|one, other| {
                *one == Segment::AnyDirectories && *other == Segment::AnyDirectories
            });
            segments
        }),
    );
    let path = proptest::collection::vec(
        proptest::collection::vec(select(&ALPHABET[..]), 1..4)
            .prop_map(|name| name.into_iter().collect::<String>())
            .prop_filter("not `.` or `..`", |name| name != "." && name != ".."),
        1..5,
    )
    .prop_map(|names| names.join("/"));
    fuzz::check(
        "dockerignore::reference",
        (
            proptest::collection::vec(rule, 1..5),
            proptest::collection::vec(path, 1..8),
        ),
        |(rules, paths)| {
            let text: Vec<String> = rules
                .iter()
                .map(|(is_exception, segments)| {
                    format!(
                        "{}{}",
                        if *is_exception { "!" } else { "" },
                        write_pattern(segments)
                    )
                })
                .collect();
            let text = text.join("\n");
            let parsed = DockerIgnore::parse(&text)
                .map_err(|error| TestCaseError::fail(format!("{text:?}: {error}")))?;
            for path in &paths {
                prop_assert_eq!(
                    parsed.is_excluded(path),
                    reference_excluded(&rules, path),
                    "rules {:?}, path {:?}",
                    text,
                    path
                );
            }
            Ok(())
        },
    );
}
