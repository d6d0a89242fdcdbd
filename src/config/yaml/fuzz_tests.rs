//! Property tests of the YAML reader: any text, documents built at random, aliases and
//! nesting at random.
//!
//! - Any text is a tree or a syntax error at a line and column inside the text.
//! - A tree written out as YAML (block or flow style) reads back as the same tree.
//! - Aliases and nesting stay within `MAX_NODES` and `MAX_DEPTH`: a document past them
//!   is refused, one well under them is read.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::fuzz;

/// Pieces of YAML syntax, so that random text is mostly almost-YAML.
const TOKENS: &[&str] = &[
    "- ",
    ": ",
    ":",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "!!str ",
    "!tag ",
    "|",
    "|-",
    ">",
    ">+",
    "'",
    "\"",
    "\\",
    "\n",
    "\r\n",
    "\r",
    "  ",
    "\t",
    "# c",
    "---",
    "...",
    "? ",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "<<: ",
    "~",
    "null",
    "key",
    "x",
    "1",
    "-1.5e3",
    "\u{feff}",
    "é",
    "\u{2028}",
    "\0",
    "@",
    "`",
    "%",
];

fn almost_yaml() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        proptest::collection::vec(select(TOKENS), 0..80).prop_map(|tokens| tokens.concat()),
    ]
}

/// The lines of `text` as YAML counts them (`\n`, `\r\n` and a lone `\r` end a line).
fn line_count(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1
}

fn depth(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Sequence(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        NodeKind::Mapping(entries) => {
            1 + entries
                .iter()
                .map(|(key, value)| depth(key).max(depth(value)))
                .max()
                .unwrap_or(0)
        }
    }
}

/// Nodes of the tree (aliases expanded), each checked for a position inside `lines`.
fn count_and_check_positions(node: &Node, lines: usize) -> usize {
    assert!(
        node.position.line >= 1 && node.position.line <= lines && node.position.column >= 1,
        "{:?} outside a text of {lines} lines",
        node.position
    );
    1 + match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Sequence(items) => items
            .iter()
            .map(|item| count_and_check_positions(item, lines))
            .sum(),
        NodeKind::Mapping(entries) => entries
            .iter()
            .map(|(key, value)| {
                count_and_check_positions(key, lines) + count_and_check_positions(value, lines)
            })
            .sum(),
    }
}

#[test]
fn any_text_is_a_tree_or_an_error_at_a_place_in_it() {
    fuzz::check("yaml::any_text", almost_yaml(), |text| {
        let lines = line_count(&text);
        match parse(&text) {
            Ok(root) => {
                prop_assert!(depth(&root) <= MAX_DEPTH + 1);
                prop_assert!(count_and_check_positions(&root, lines) <= MAX_NODES);
            }
            Err(error) => {
                prop_assert!(!error.message.is_empty());
                prop_assert!(error.position.line >= 1 && error.position.column >= 1);
                prop_assert!(
                    error.position.line <= lines,
                    "{error:?} in a text of {lines} lines"
                );
            }
        }
        Ok(())
    });
}

/// A YAML tree without positions, to compare what was written with what was read.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Scalar { value: String, plain: bool },
    Sequence(Vec<Tree>),
    Mapping(Vec<(Tree, Tree)>),
}

impl Tree {
    fn of(node: &Node) -> Tree {
        match &node.kind {
            NodeKind::Scalar { value, plain } => Tree::Scalar {
                value: value.clone(),
                plain: *plain,
            },
            NodeKind::Sequence(items) => Tree::Sequence(items.iter().map(Tree::of).collect()),
            NodeKind::Mapping(entries) => Tree::Mapping(
                entries
                    .iter()
                    .map(|(key, value)| (Tree::of(key), Tree::of(value)))
                    .collect(),
            ),
        }
    }
}

/// A scalar: a plain word, or any text double-quoted.
fn scalar() -> impl Strategy<Value = Tree> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}".prop_map(|value| Tree::Scalar { value, plain: true }),
        ".{0,20}".prop_map(|value| Tree::Scalar {
            value,
            plain: false
        }),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    scalar().prop_recursive(8, 128, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::Sequence),
            proptest::collection::vec((scalar(), inner), 0..6).prop_map(Tree::Mapping),
        ]
    })
}

/// A double-quoted YAML scalar holding `value` exactly.
fn quoted(value: &str) -> String {
    let mut text = String::from("\"");
    for character in value.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            // Printable characters stand for themselves; the rest are escaped.
            ' '..='~' => text.push(character),
            other if (other as u32) > 0xa0 && other != '\u{feff}' && !other.is_control() => {
                text.push(other)
            }
            other => text.push_str(&format!("\\U{:08x}", other as u32)),
        }
    }
    text.push('"');
    text
}

fn flow(tree: &Tree) -> String {
    match tree {
        Tree::Scalar { value, plain: true } => value.clone(),
        Tree::Scalar { value, .. } => quoted(value),
        Tree::Sequence(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Tree::Mapping(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(key, value)| format!("{}: {}", flow(key), flow(value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `tree` in block style at `indent`; scalars and empty collections in flow style.
fn block(tree: &Tree, indent: usize, text: &mut String) {
    let pad = " ".repeat(indent);
    match tree {
        Tree::Sequence(items) if !items.is_empty() => {
            for item in items {
                text.push_str(&pad);
                text.push('-');
                write_value(item, indent, text);
            }
        }
        Tree::Mapping(entries) if !entries.is_empty() => {
            for (key, value) in entries {
                text.push_str(&pad);
                text.push_str(&flow(key));
                text.push(':');
                write_value(value, indent, text);
            }
        }
        other => {
            text.push_str(&pad);
            text.push_str(&flow(other));
            text.push('\n');
        }
    }
}

/// The value after `- ` or `key:`: on the same line when it is flow, else below, indented.
fn write_value(value: &Tree, indent: usize, text: &mut String) {
    let is_block = match value {
        Tree::Sequence(items) => !items.is_empty(),
        Tree::Mapping(entries) => !entries.is_empty(),
        Tree::Scalar { .. } => false,
    };
    if is_block {
        text.push('\n');
        block(value, indent + 2, text);
    } else {
        text.push(' ');
        text.push_str(&flow(value));
        text.push('\n');
    }
}

#[test]
fn a_tree_written_as_yaml_reads_back_the_same() {
    fuzz::check(
        "yaml::round_trip",
        (tree(), any::<bool>()),
        |(tree, as_flow)| {
            let text = if as_flow {
                flow(&tree)
            } else {
                let mut text = String::new();
                block(&tree, 0, &mut text);
                text
            };
            let root = parse(&text)
                .map_err(|error| TestCaseError::fail(format!("{error:?} reading\n{text}")))?;
            count_and_check_positions(&root, line_count(&text));
            prop_assert_eq!(Tree::of(&root), tree, "read from\n{}", text);
            Ok(())
        },
    );
}

/// A document of anchored lists, each holding scalars and aliases of earlier ones.
fn alias_document() -> impl Strategy<Value = Vec<Vec<Option<prop::sample::Index>>>> {
    proptest::collection::vec(
        proptest::collection::vec(
            proptest::option::weighted(0.8, any::<prop::sample::Index>()),
            0..14,
        ),
        1..14,
    )
}

#[test]
fn aliases_expand_within_the_node_limit() {
    fuzz::check("yaml::aliases", alias_document(), |lists| {
        // Written as `aI: &aI [x, *aJ, ...]`; the expanded size is worked out alongside.
        let mut text = String::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut expanded: usize = 1;
        for (index, items) in lists.iter().enumerate() {
            let mut size: usize = 1;
            let mut written = Vec::new();
            for item in items {
                match item {
                    Some(earlier) if index > 0 => {
                        let earlier = earlier.index(index);
                        size = size.saturating_add(sizes[earlier]);
                        written.push(format!("*a{earlier}"));
                    }
                    _ => {
                        size += 1;
                        written.push("x".to_string());
                    }
                }
            }
            sizes.push(size);
            expanded = expanded.saturating_add(1).saturating_add(size);
            text.push_str(&format!("a{index}: &a{index} [{}]\n", written.join(", ")));
        }
        match parse(&text) {
            Ok(root) => {
                let nodes = count_and_check_positions(&root, line_count(&text));
                prop_assert_eq!(nodes, expanded);
                prop_assert!(nodes <= MAX_NODES);
            }
            Err(error) => {
                prop_assert!(error.message.contains("aliases expanded"), "{:?}", error);
                // Anchored copies count too, so a document refused holds at least half the limit.
                prop_assert!(expanded > MAX_NODES / 2, "{expanded} nodes refused");
            }
        }
        Ok(())
    });
}

/// One level of nesting, written in one of YAML's ways.
#[derive(Debug, Clone, Copy)]
enum Level {
    FlowSequence,
    FlowMapping,
    BlockSequence,
}

#[test]
fn nesting_is_read_up_to_the_limit_and_refused_past_it() {
    let levels = proptest::collection::vec(
        select(
            &[
                Level::FlowSequence,
                Level::FlowMapping,
                Level::BlockSequence,
            ][..],
        ),
        1..(2 * MAX_DEPTH),
    );
    fuzz::check("yaml::nesting", levels, |mut levels| {
        // Block levels can only stand outside flow ones.
        levels.sort_by_key(|level| !matches!(level, Level::BlockSequence));
        let mut text = String::new();
        let mut closing = String::new();
        for level in &levels {
            match level {
                Level::BlockSequence => text.push_str("- "),
                Level::FlowSequence => {
                    text.push('[');
                    closing.insert(0, ']');
                }
                Level::FlowMapping => {
                    text.push_str("{k: ");
                    closing.insert(0, '}');
                }
            }
        }
        text.push('x');
        text.push_str(&closing);
        match parse(&text) {
            Ok(root) => {
                prop_assert!(levels.len() <= MAX_DEPTH, "{} levels read", levels.len());
                prop_assert_eq!(depth(&root), levels.len() + 1);
            }
            Err(error) => {
                prop_assert!(
                    levels.len() > MAX_DEPTH,
                    "{} levels: {error:?}",
                    levels.len()
                );
                prop_assert_eq!(
                    error.message,
                    format!("nested deeper than {MAX_DEPTH} levels")
                );
            }
        }
        Ok(())
    });
}
