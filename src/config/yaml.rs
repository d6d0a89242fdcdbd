//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Validation must name `file:line:column` for every error it finds, and keep going
//! after the first one. A serde deserializer stops at the first error and forgets
//! positions, so the config is read through this span-keeping tree instead and
//! decoded by hand in `decode`. This module only parses: it knows nothing of
//! gantry's keys and does no IO.
//!
//! A config file comes from whoever may write to the config directory, and the
//! daemon reloads it by itself, so the tree is bounded: how deep it nests and how
//! many nodes it holds once aliases are expanded.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Collections nested deeper than this are refused. Real configs nest fewer than ten
/// levels; every walk of the tree (decoding, cloning, dropping) recurses once per
/// level, and tens of thousands of levels would overflow a thread's stack.
pub const MAX_DEPTH: usize = 64;
/// How big a document may be with its aliases expanded, in nodes: each value counts
/// one, plus one for every `TEXT_PER_NODE` bytes of a scalar's text, and an anchored
/// value counts again for the copy kept to expand its aliases. A large config holds a
/// few thousand; a few hundred bytes of nested aliases (an "alias bomb") expand to
/// billions, which would take all memory.
pub const MAX_NODES: usize = 200_000;
/// Bytes of scalar text that count as one more node towards `MAX_NODES`.
const TEXT_PER_NODE: usize = 32;

/// A 1-based line and column in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn from_span(span: &Span) -> Position {
        Position {
            line: span.start.line(),
            // The parser counts columns from 0; editors and compilers count from 1.
            column: span.start.col() + 1,
        }
    }
}

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false when it was quoted or a block scalar, which
    /// matters for telling the string `"null"` from a null.
    Scalar {
        value: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Key/value pairs in the order they were written.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// Whether the node is YAML's null: `~`, `null` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    /// What kind of node this is, in words for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Sequence(_) => "a list",
            NodeKind::Mapping(_) => "a mapping",
        }
    }
}

/// A syntax error, with the position the parser stopped at.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// Parses the first document of `text`. An empty text is an empty mapping, so
/// that an empty `gantry.yaml` means "all defaults".
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder {
        end: end_of(text),
        ..TreeBuilder::default()
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| SyntaxError {
            position: builder.within(Position {
                line: error.marker().line(),
                column: error.marker().col() + 1,
            }),
            // The parser bounds its own recursion into flow collections (`[[[...`).
            message: match error.info() {
                "recursion limit exceeded" => format!("nested deeper than {MAX_DEPTH} levels"),
                info => info.to_string(),
            },
        })?;
        if let Some(document) = builder.push(event, span)? {
            return Ok(document);
        }
    }
    Ok(Node {
        kind: NodeKind::Mapping(Vec::new()),
        position: Position { line: 1, column: 1 },
    })
}

/// Where `text` ends: its last line, and the column after its last character.
fn end_of(text: &str) -> Position {
    // YAML ends a line at `\n`, `\r\n` or a lone `\r`.
    let lines = text.replace("\r\n", "\n").replace('\r', "\n");
    let last_line = lines.split('\n').next_back().unwrap_or_default();
    Position {
        line: lines.matches('\n').count() + 1,
        column: last_line.chars().count() + 1,
    }
}

/// A collection under construction: where it starts, its anchor id, and how many
/// nodes the document had before it (so its own size is known when it ends).
struct Open {
    position: Position,
    anchor: usize,
    nodes_before: usize,
    items: OpenItems,
}

enum OpenItems {
    Sequence(Vec<Node>),
    /// The entries so far and a key waiting for its value.
    Mapping(Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct TreeBuilder {
    /// Collections under construction, innermost last.
    open: Vec<Open>,
    /// Anchored nodes by anchor id, with their size in nodes, so that aliases can be
    /// expanded and counted.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes in the document so far, aliases counted as the nodes they expand to.
    nodes: usize,
    /// Where the text ends (`end_of`).
    end: Position,
}

impl TreeBuilder {
    /// `position`, or the end of the text when it lies past it: the parser places some
    /// errors and empty values at the end of the input on the line after the last one,
    /// which no editor can show.
    fn within(&self, position: Position) -> Position {
        if position.line > self.end.line {
            self.end
        } else {
            position
        }
    }

    /// Feeds one event; returns the document once its root node is complete.
    fn push(&mut self, event: Event<'_>, span: Span) -> Result<Option<Node>, SyntaxError> {
        let position = self.within(Position::from_span(&span));
        let finished = match event {
            Event::Scalar(value, style, anchor, _tag) => {
                let size = 1 + value.len() / TEXT_PER_NODE;
                self.count(size, position)?;
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    position,
                };
                self.remember(anchor, &node, size)?;
                node
            }
            Event::Alias(anchor) => {
                let Some(&(_, size)) = self.anchors.get(&anchor) else {
                    return Err(SyntaxError {
                        position,
                        message: "alias to an unknown anchor".to_string(),
                    });
                };
                // Counted before it is copied, so a bomb stops at the first copy too many.
                self.count(size, position)?;
                let node = self.anchors[&anchor].0.clone();
                Node { position, ..node }
            }
            Event::SequenceStart(anchor, _tag) => {
                self.open_collection(position, anchor, OpenItems::Sequence(Vec::new()))?;
                return Ok(None);
            }
            Event::MappingStart(anchor, _tag) => {
                self.open_collection(position, anchor, OpenItems::Mapping(Vec::new(), None))?;
                return Ok(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.open.pop() else {
                    return Ok(None);
                };
                let kind = match open.items {
                    OpenItems::Sequence(items) => NodeKind::Sequence(items),
                    OpenItems::Mapping(entries, _) => NodeKind::Mapping(entries),
                };
                let node = Node {
                    kind,
                    position: open.position,
                };
                let size = self.nodes - open.nodes_before;
                self.remember(open.anchor, &node, size)?;
                node
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => return Ok(None),
        };
        Ok(self.attach(finished))
    }

    fn open_collection(
        &mut self,
        position: Position,
        anchor: usize,
        items: OpenItems,
    ) -> Result<(), SyntaxError> {
        if self.open.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                position,
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        self.count(1, position)?;
        self.open.push(Open {
            position,
            anchor,
            nodes_before: self.nodes - 1,
            items,
        });
        Ok(())
    }

    /// Adds `nodes` to the document's size, refusing a document that grows past `MAX_NODES`.
    fn count(&mut self, nodes: usize, position: Position) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                position,
                message: format!(
                    "the document holds more than {MAX_NODES} values with its aliases expanded"
                ),
            });
        }
        Ok(())
    }

    /// Keeps a copy of an anchored node of `size` for its aliases; the copy counts too.
    fn remember(&mut self, anchor: usize, node: &Node, size: usize) -> Result<(), SyntaxError> {
        // The parser numbers anchors from 1; 0 means "no anchor".
        if anchor != 0 {
            self.count(size, node.position)?;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok(())
    }

    /// Puts a finished node into its parent, or returns it when it is the root.
    fn attach(&mut self, node: Node) -> Option<Node> {
        let Some(open) = self.open.last_mut() else {
            return Some(node);
        };
        match &mut open.items {
            OpenItems::Sequence(items) => {
                items.push(node);
                None
            }
            OpenItems::Mapping(entries, pending_key) => {
                match pending_key.take() {
                    Some(key) => entries.push((key, node)),
                    None => *pending_key = Some(node),
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.kind {
            NodeKind::Scalar { value, .. } => value,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let NodeKind::Mapping(entries) = &root.kind else {
            panic!("root is not a mapping")
        };
        assert_eq!(scalar(&entries[0].0), "a");
        assert_eq!(entries[0].1.position, Position { line: 1, column: 4 });
        let NodeKind::Mapping(inner) = &entries[1].1.kind else {
            panic!("b is not a mapping")
        };
        assert_eq!(inner[0].0.position, Position { line: 3, column: 3 });
        let NodeKind::Sequence(items) = &inner[0].1.kind else {
            panic!("c is not a list")
        };
        assert_eq!(scalar(&items[1]), "y");
        assert_eq!(
            items[1].position,
            Position {
                line: 3,
                column: 10
            }
        );
    }

    #[test]
    fn aliases_expand_and_nulls_are_recognised() {
        let root = parse("a: &x {k: v}\nb: *x\nc:\nd: 'null'\n").unwrap();
        let NodeKind::Mapping(entries) = &root.kind else {
            panic!("root is not a mapping")
        };
        assert!(matches!(entries[1].1.kind, NodeKind::Mapping(_)));
        assert!(entries[2].1.is_null());
        assert!(!entries[3].1.is_null());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let error = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.position.line >= 1, "{error:?}");
        let error = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(error.position.line, 2, "{error:?}");
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_takes_memory() {
        // Nine levels of ten aliases each: 10^9 scalars from a few hundred bytes.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        assert!(text.len() < 600, "{}", text.len());
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("aliases expanded"), "{error:?}");
        // A long scalar copied by aliases counts by its length.
        let long = "y".repeat(10_000);
        let mut copies = format!("s: &s {long}\nl: [");
        copies.push_str(&vec!["*s"; 1_000].join(", "));
        copies.push_str("]\n");
        assert!(parse(&copies).is_err());
        // Aliases used the ordinary way stay fine.
        assert!(parse("base: &base {a: 1}\nweb: *base\nworker: *base\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        for text in [
            format!("{}x", "- ".repeat(60_000)),
            format!("{}{}", "[".repeat(60_000), "]".repeat(60_000)),
            format!("{}x", "{a: ".repeat(60_000)),
        ] {
            let error = parse(&text).unwrap_err();
            assert_eq!(
                error.message,
                format!("nested deeper than {MAX_DEPTH} levels")
            );
            assert_eq!(error.position.line, 1);
        }
        let fine = format!("{}x", "- ".repeat(MAX_DEPTH - 1));
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn a_syntax_error_at_the_end_points_inside_the_text() {
        // The parser reports some errors on the line after the last one.
        let error = parse("%\u{a1}").unwrap_err();
        assert_eq!(error.position, Position { line: 1, column: 3 }, "{error:?}");
        for (text, lines) in [("%x\n", 2), ("%x\r\n%y\r", 3)] {
            let error = parse(text).unwrap_err();
            assert!(error.position.line <= lines, "{text:?}: {error:?}");
        }
        // Nodes too: the empty value of `? ` is placed after the end.
        let root = parse("? ").unwrap();
        let NodeKind::Mapping(entries) = &root.kind else {
            panic!("root is not a mapping")
        };
        assert_eq!(entries[0].1.position, Position { line: 1, column: 3 });
    }

    #[test]
    fn empty_text_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().kind, NodeKind::Mapping(Vec::new()));
    }
}
