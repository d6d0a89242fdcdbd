//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Validation must name `file:line:column` for every error it finds, and keep going
//! after the first one. A serde deserializer stops at the first error and forgets
//! positions, so the config is read through this span-keeping tree instead and
//! decoded by hand in `decode`. This module only parses: it knows nothing of
//! gantry's keys and does no IO.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

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
    let mut builder = TreeBuilder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| SyntaxError {
            position: Position {
                line: error.marker().line(),
                column: error.marker().col() + 1,
            },
            message: error.info().to_string(),
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

/// Collections under construction, innermost last.
enum Open {
    Sequence(Position, Vec<Node>, usize),
    Mapping(Position, Vec<(Node, Node)>, Option<Node>, usize),
}

#[derive(Default)]
struct TreeBuilder {
    open: Vec<Open>,
    /// Anchored nodes by anchor id, so that aliases can be expanded.
    anchors: HashMap<usize, Node>,
}

impl TreeBuilder {
    /// Feeds one event; returns the document once its root node is complete.
    fn push(&mut self, event: Event<'_>, span: Span) -> Result<Option<Node>, SyntaxError> {
        let position = Position::from_span(&span);
        let finished = match event {
            Event::Scalar(value, style, anchor, _tag) => {
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    position,
                };
                self.remember(anchor, &node);
                node
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                Some(node) => Node {
                    position,
                    ..node.clone()
                },
                None => {
                    return Err(SyntaxError {
                        position,
                        message: "alias to an unknown anchor".to_string(),
                    });
                }
            },
            Event::SequenceStart(anchor, _tag) => {
                self.open.push(Open::Sequence(position, Vec::new(), anchor));
                return Ok(None);
            }
            Event::MappingStart(anchor, _tag) => {
                self.open
                    .push(Open::Mapping(position, Vec::new(), None, anchor));
                return Ok(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.open.pop() {
                    Some(Open::Sequence(position, items, anchor)) => (
                        Node {
                            kind: NodeKind::Sequence(items),
                            position,
                        },
                        anchor,
                    ),
                    Some(Open::Mapping(position, entries, _, anchor)) => (
                        Node {
                            kind: NodeKind::Mapping(entries),
                            position,
                        },
                        anchor,
                    ),
                    None => return Ok(None),
                };
                self.remember(anchor, &node);
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

    fn remember(&mut self, anchor: usize, node: &Node) {
        // The parser numbers anchors from 1; 0 means "no anchor".
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    /// Puts a finished node into its parent, or returns it when it is the root.
    fn attach(&mut self, node: Node) -> Option<Node> {
        match self.open.last_mut() {
            None => Some(node),
            Some(Open::Sequence(_, items, _)) => {
                items.push(node);
                None
            }
            Some(Open::Mapping(_, entries, pending_key, _)) => {
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
    fn empty_text_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().kind, NodeKind::Mapping(Vec::new()));
    }
}
