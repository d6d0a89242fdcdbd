//! Property tests of tag templates: random templates with random run values.
//!
//! - Parsing and rendering any template gives text or a message, never a panic.
//! - A render makes at most `MAX_RENDERED_LEN` bytes.
//! - What a template renders passes `is_valid_tag` exactly when Docker's tag rule
//!   takes it, so the engine's check before tagging is Docker's own.
//! - A template refused for what it could build (`*`, loops, `set`) is refused at
//!   parse time, before any render.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::config::is_valid_tag;
use crate::fuzz;

/// Pieces of minijinja syntax and of the values templates use.
const PIECES: &[&str] = &[
    "{{ ",
    " }}",
    "{{- ",
    " -}}",
    "{% ",
    " %}",
    "{# ",
    " #}",
    "if ",
    "else",
    "endif",
    "for ",
    " in ",
    "endfor",
    "set ",
    "with",
    "macro",
    "raw",
    "endraw",
    "commit.sha",
    "commit.short",
    "branch",
    "run.number",
    "nothing",
    "|",
    "lower",
    "upper",
    "title",
    "trim",
    "length",
    "replace('/', '-')",
    "replace('', 'xx')",
    "default('x')",
    "first",
    "last",
    "string",
    "int",
    "reverse",
    "join",
    "range(",
    "range(100000)",
    "lipsum(",
    "namespace(",
    ")",
    "(",
    "[",
    "]",
    "{",
    "}",
    "~",
    " ~ ",
    "+",
    "-",
    "*",
    "**",
    "/",
    "//",
    "%",
    "==",
    " if ",
    " else ",
    "'",
    "\"",
    "'x'",
    "\"y\"",
    "99999999",
    "0",
    "1",
    "-",
    ".",
    "_",
    "x",
    "v",
    "\\",
    "\n",
    " ",
    "feature/x",
    "é",
];

fn template() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(select(PIECES), 0..40).prop_map(|pieces| pieces.concat()),
        1 => ".{0,80}",
    ]
}

fn values() -> impl Strategy<Value = TemplateValues> {
    (
        prop_oneof!["[0-9a-f]{40}", "[0-9a-f]{64}", ".{0,10}"],
        prop_oneof!["[a-z]{1,10}(/[a-z0-9._-]{1,10}){0,2}", ".{0,30}"],
        any::<i64>(),
    )
        .prop_map(|(commit_sha, branch, run_number)| TemplateValues {
            commit_sha,
            branch,
            run_number,
        })
}

/// Docker's tag rule, by hand: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn docker_accepts_tag(tag: &str) -> bool {
    let mut characters = tag.chars();
    characters
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().count() <= 128
        && characters.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[test]
fn any_template_renders_bounded_text_or_fails() {
    fuzz::check(
        "template::any",
        (template(), values()),
        |(source, values)| {
            let Ok(template) = Template::parse(&source) else {
                return Ok(());
            };
            prop_assert!(source.len() <= MAX_TEMPLATE_LEN);
            if let Ok(text) = template.render(&values) {
                prop_assert!(text.len() <= MAX_RENDERED_LEN, "{} bytes", text.len());
                prop_assert_eq!(is_valid_tag(&text), docker_accepts_tag(&text), "{:?}", text);
            }
            Ok(())
        },
    );
}

#[test]
fn branch_tags_render_to_what_docker_takes() {
    // The templates people write for branch tags, with any branch name git allows.
    let sources = select(
        &[
            "{{ branch }}",
            "{{ branch|replace('/', '-') }}",
            "{{ branch|replace('/', '-')|lower }}-{{ commit.short }}",
            "{{ branch }}-{{ run.number }}",
            "v{{ run.number }}",
        ][..],
    );
    let branch = "[A-Za-z0-9._/-]{1,200}".prop_filter("a branch git allows", |branch| {
        crate::config::is_valid_branch(branch)
    });
    fuzz::check(
        "template::branch_tags",
        (sources, branch, any::<i64>()),
        |(source, branch, run_number)| {
            let values = TemplateValues {
                commit_sha: "0123456789abcdef0123456789abcdef01234567".to_string(),
                branch,
                run_number,
            };
            let text = Template::parse(source)
                .and_then(|template| template.render(&values))
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(is_valid_tag(&text), docker_accepts_tag(&text), "{:?}", text);
            Ok(())
        },
    );
}
