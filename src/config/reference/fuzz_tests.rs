//! Property tests of image references: any text, and references built from Docker's
//! grammar.
//!
//! - Parsing any text gives a repository or a message, never a panic.
//! - What parses is valid by Docker's reference grammar (checked here by hand, not by
//!   the module's regexes), and prints back as it was written.
//! - Every reference built from the grammar parses, with and without a tag or digest.
//! - `is_valid_tag` agrees with Docker's tag rule, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

use proptest::prelude::*;

use super::*;
use crate::fuzz;

/// Docker's path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-`+.
fn is_path_component(text: &str) -> bool {
    let mut runs = Vec::new();
    let mut separators = Vec::new();
    let mut current = String::new();
    let mut separator = String::new();
    for character in text.chars() {
        if character.is_ascii_lowercase() || character.is_ascii_digit() {
            if !separator.is_empty() {
                separators.push(std::mem::take(&mut separator));
            }
            current.push(character);
        } else if matches!(character, '.' | '_' | '-') {
            if !current.is_empty() {
                runs.push(std::mem::take(&mut current));
            }
            separator.push(character);
        } else {
            return false;
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    let separators_valid = separators.iter().all(|separator| {
        matches!(separator.as_str(), "." | "_" | "__") || separator.chars().all(|c| c == '-')
    });
    separator.is_empty()
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && runs.len() == separators.len() + 1
        && separators_valid
}

/// Docker's domain: labels of letters, digits and inner `-`, joined by `.`, and a port.
fn is_domain(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let label = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.split('.').all(label)
        && port.is_none_or(|port| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
}

/// Docker's tag rule, by hand.
fn docker_accepts_tag(tag: &str) -> bool {
    let mut characters = tag.chars();
    let first_ok = characters
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.chars().count() <= 128
        && characters.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn component() -> impl Strategy<Value = String> {
    let run = "[a-z0-9]{1,6}";
    let separator = prop_oneof![Just("."), Just("_"), Just("__"), Just("-"), Just("---")];
    (run, proptest::collection::vec((separator, run), 0..3)).prop_map(|(first, rest)| {
        let mut text = first;
        for (separator, run) in rest {
            text.push_str(separator);
            text.push_str(&run);
        }
        text
    })
}

fn domain() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?";
    (
        proptest::collection::vec(label, 1..4),
        proptest::option::of(0u16..),
    )
        .prop_map(|(labels, port)| {
            let host = labels.join(".");
            match port {
                Some(port) => format!("{host}:{port}"),
                None if labels.len() == 1 => format!("{host}.example"),
                None => host,
            }
        })
}

/// A repository by the grammar, with the registry and path it must parse to.
fn repository() -> impl Strategy<Value = (String, String, String)> {
    (
        proptest::option::of(domain()),
        proptest::collection::vec(component(), 1..4),
    )
        .prop_filter_map("longer than 255", |(domain, components)| {
            let path = components.join("/");
            // Docker reads a first component with a dot as a registry host.
            let looks_like_host = components.len() > 1 && components[0].contains('.');
            if domain.is_none() && looks_like_host {
                return None;
            }
            let (written, registry, expected_path) = match domain {
                Some(domain) => (format!("{domain}/{path}"), domain, path),
                None if components.len() == 1 => (
                    path.clone(),
                    DEFAULT_REGISTRY.to_string(),
                    format!("library/{path}"),
                ),
                None => (path.clone(), DEFAULT_REGISTRY.to_string(), path),
            };
            (written.len() <= 255).then_some((written, registry, expected_path))
        })
}

/// Text close to a reference: pieces of one, and characters that should not be there.
fn almost_reference() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        component(),
        domain(),
        Just("/".to_string()),
        Just(":".to_string()),
        Just("@".to_string()),
        Just("sha256:".to_string()),
        "[0-9a-f]{64}",
        "[A-Za-z0-9_.-]{1,10}",
        ".{1,3}",
    ];
    prop_oneof![
        proptest::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat()),
        ".{0,300}",
    ]
}

#[test]
fn any_text_parses_only_to_a_valid_repository_that_prints_back() {
    fuzz::check("reference::any_text", almost_reference(), |text| {
        if let Ok(repository) = ImageRepository::parse(&text) {
            prop_assert_eq!(repository.to_string(), text.clone());
            prop_assert!(text.len() <= 255);
            let path =
                if repository.registry() == DEFAULT_REGISTRY && !text.starts_with("docker.io/") {
                    text.as_str()
                } else {
                    prop_assert!(is_domain(repository.registry()), "{:?}", repository);
                    text.split_once('/').map_or("", |(_, path)| path)
                };
            prop_assert!(path.split('/').all(is_path_component), "{:?}", repository);
            let again = ImageRepository::parse(&repository.to_string());
            prop_assert_eq!(again, Ok(repository));
        }
        if let Ok(repository) = ImageRepository::of_reference(&text) {
            prop_assert!(text.starts_with(&repository.to_string()));
            let rest = &text[repository.to_string().len()..];
            let (tag, digest) = match rest.split_once('@') {
                Some((tag, digest)) => (tag, Some(digest)),
                None => (rest, None),
            };
            if let Some(tag) = tag.strip_prefix(':') {
                prop_assert!(docker_accepts_tag(tag), "{text:?}");
            } else {
                prop_assert_eq!(tag, "");
            }
            if let Some(digest) = digest {
                prop_assert!(
                    digest.starts_with("sha256:") && digest.len() == 71,
                    "{text:?}"
                );
            }
        }
        Ok(())
    });
}

#[test]
fn every_reference_of_the_grammar_parses() {
    let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"));
    fuzz::check(
        "reference::grammar",
        (
            repository(),
            proptest::option::of(tag),
            proptest::option::of(digest),
        ),
        |((written, registry, path), tag, digest)| {
            let repository = ImageRepository::parse(&written)
                .map_err(|message| TestCaseError::fail(format!("{written}: {message}")))?;
            prop_assert_eq!(repository.registry(), registry.as_str());
            prop_assert_eq!(repository.path(), path.as_str());
            prop_assert_eq!(repository.to_string(), written.clone());
            let mut full = written.clone();
            if let Some(tag) = &tag {
                full = repository.with_tag(tag);
            }
            if let Some(digest) = &digest {
                full = format!("{full}@{digest}");
            }
            prop_assert_eq!(ImageRepository::of_reference(&full), Ok(repository));
            Ok(())
        },
    );
}

#[test]
fn is_valid_tag_is_dockers_tag_rule() {
    let tag = prop_oneof![
        "[A-Za-z0-9_.-]{0,130}",
        "[A-Za-z0-9_][A-Za-z0-9_.-]{126,128}",
        ".{0,20}",
        "[a-z]{1,5}[\n/:@+ ٣ßÅ][a-z]{0,5}\n?",
    ];
    fuzz::check("reference::tags", tag, |tag| {
        prop_assert_eq!(is_valid_tag(&tag), docker_accepts_tag(&tag), "{:?}", tag);
        Ok(())
    });
}
