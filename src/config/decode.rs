//! Reading typed values out of a YAML tree while collecting every error.
//!
//! A `Decoder` walks one file. Each read either returns a value or records a
//! `Diagnostic` at the node's position and returns `None`, so that one bad key
//! never hides the next. `${VAR}` interpolation happens here, on scalars only,
//! so positions stay those of the file as written.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::Diagnostic;
use super::yaml::{Node, NodeKind, Position};

/// Where environment variables come from: the process environment in gantry,
/// a fixed map in tests.
pub type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The largest file `${file:PATH}` reads.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads one file's tree, collecting diagnostics.
pub struct Decoder<'a> {
    pub file: PathBuf,
    /// The config directory: `${file:PATH}` and `env_file` are relative to it.
    pub dir: PathBuf,
    pub diagnostics: &'a mut Vec<Diagnostic>,
    pub environment: Environment<'a>,
}

/// The entries of a mapping that passed the unknown-key check.
pub struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    /// Where the mapping starts, for "missing key" errors.
    position: Position,
    /// The dotted path of the mapping, for messages (`build`, `deploy.services.web`).
    path: String,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(name, _, value)| *name == key && !value.is_null())
            .map(|(_, _, value)| *value)
    }

    pub fn path(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// The position of a key itself, falling back to the mapping's.
    pub fn key_position(&self, key: &str) -> Position {
        self.entries
            .iter()
            .find(|(name, _, _)| *name == key)
            .map_or(self.position, |(_, key_node, _)| key_node.position)
    }
}

/// Joins a parent path and a key the way messages show them.
pub fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Decoder<'_> {
    pub fn error(&mut self, position: Position, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: position.line,
            column: position.column,
            message: message.into(),
        });
    }

    /// Opens a mapping, reporting keys outside `known` (with a suggestion) and duplicates.
    pub fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = self.entries(node, path)?;
        let mut fields = Fields {
            entries: Vec::new(),
            position: node.position,
            path: path.to_string(),
        };
        for (key, key_node, value) in entries {
            if !known.contains(&key) {
                let place = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in `{path}`")
                };
                let suggestion = match closest(key, known.iter().copied()) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => format!(" (expected one of: {})", known.join(", ")),
                };
                self.error(
                    key_node.position,
                    format!("unknown key `{key}`{place}{suggestion}"),
                );
                continue;
            }
            fields.entries.push((key, key_node, value));
        }
        Some(fields)
    }

    /// The entries of a mapping whose keys are names chosen by the user
    /// (hosts, services, instances); reports duplicates and non-string keys.
    pub fn entries<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
    ) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let NodeKind::Mapping(pairs) = &node.kind else {
            if node.is_null() {
                return Some(Vec::new());
            }
            self.error(
                node.position,
                format!(
                    "`{}` must be a mapping, not {}",
                    display_path(path),
                    node.describe()
                ),
            );
            return None;
        };
        let mut entries: Vec<(&str, &Node, &Node)> = Vec::with_capacity(pairs.len());
        // A set, so that a mapping of many keys is checked in linear time.
        let mut seen: HashSet<&str> = HashSet::with_capacity(pairs.len());
        for (key, value) in pairs {
            let NodeKind::Scalar { value: name, .. } = &key.kind else {
                self.error(key.position, "a key must be a plain name");
                continue;
            };
            if !seen.insert(name.as_str()) {
                self.error(
                    key.position,
                    format!("duplicate key `{name}` in `{}`", display_path(path)),
                );
                continue;
            }
            entries.push((name.as_str(), key, value));
        }
        Some(entries)
    }

    /// A scalar as a string, with `${VAR}` filled in.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } => self.interpolate(value, node.position, path),
            _ => {
                self.error(
                    node.position,
                    format!("`{path}` must be a string, not {}", node.describe()),
                );
                None
            }
        }
    }

    pub fn required_string(&mut self, fields: &Fields, key: &str) -> Option<String> {
        match fields.get(key) {
            Some(node) => self.string(node, &fields.path(key)),
            None => {
                self.missing(fields, key);
                None
            }
        }
    }

    pub fn optional_string(&mut self, fields: &Fields, key: &str) -> Option<String> {
        fields
            .get(key)
            .and_then(|node| self.string(node, &fields.path(key)))
    }

    pub fn missing(&mut self, fields: &Fields, key: &str) {
        let message = if fields.path.is_empty() {
            format!("missing key `{key}`")
        } else {
            format!("missing key `{key}` in `{}`", fields.path)
        };
        self.error(fields.position, message);
    }

    /// A secret: interpolated like any string, then kept out of `Debug` output. An
    /// empty (or blank) secret is an error, never "no secret": an unset variable behind
    /// `${VAR:-}` must not turn a token or a signature check into one anybody passes.
    pub fn optional_secret(&mut self, fields: &Fields, key: &str) -> Option<SecretString> {
        let node = fields.get(key)?;
        let text = self.string(node, &fields.path(key))?;
        if text.trim().is_empty() {
            self.error(
                node.position,
                format!(
                    "`{}` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
                    fields.path(key)
                ),
            );
            return None;
        }
        Some(SecretString::from(text))
    }

    pub fn optional_bool(&mut self, fields: &Fields, key: &str) -> Option<bool> {
        let node = fields.get(key)?;
        match self.string(node, &fields.path(key))?.as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            other => {
                self.error(
                    node.position,
                    format!(
                        "`{}` must be true or false, not `{other}`",
                        fields.path(key)
                    ),
                );
                None
            }
        }
    }

    pub fn optional_number<T: std::str::FromStr>(
        &mut self,
        fields: &Fields,
        key: &str,
        what: &str,
    ) -> Option<T> {
        let node = fields.get(key)?;
        let text = self.string(node, &fields.path(key))?;
        match text.parse() {
            Ok(number) => Some(number),
            Err(_) => {
                self.error(
                    node.position,
                    format!("`{}` must be {what}, not `{text}`", fields.path(key)),
                );
                None
            }
        }
    }

    pub fn optional_duration(&mut self, fields: &Fields, key: &str) -> Option<Duration> {
        let node = fields.get(key)?;
        let text = self.string(node, &fields.path(key))?;
        match humantime::parse_duration(&text) {
            Ok(duration) => Some(duration),
            Err(_) => {
                self.error(
                    node.position,
                    format!(
                        "`{}`: `{text}` is not a duration (write it like 30s, 5m or 1h30m)",
                        fields.path(key)
                    ),
                );
                None
            }
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.kind {
            NodeKind::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| self.string(item, &format!("{path}[{index}]")))
                .collect(),
            NodeKind::Scalar { .. } if node.is_null() => Vec::new(),
            NodeKind::Scalar { .. } => self.string(node, path).into_iter().collect(),
            NodeKind::Mapping(_) => {
                self.error(
                    node.position,
                    format!("`{path}` must be a list, not a mapping"),
                );
                Vec::new()
            }
        }
    }

    /// The list under `key`, with each item's position for later checks.
    pub fn positioned_list(&mut self, fields: &Fields, key: &str) -> Vec<(String, Position)> {
        let Some(node) = fields.get(key) else {
            return Vec::new();
        };
        let path = fields.path(key);
        match &node.kind {
            NodeKind::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    self.string(item, &format!("{path}[{index}]"))
                        .map(|value| (value, item.position))
                })
                .collect(),
            _ => self
                .string_list(node, &path)
                .into_iter()
                .map(|value| (value, node.position))
                .collect(),
        }
    }

    /// A mapping of names to strings (`env`, `args`, `labels`).
    pub fn string_map(&mut self, fields: &Fields, key: &str) -> BTreeMap<String, String> {
        let Some(node) = fields.get(key) else {
            return BTreeMap::new();
        };
        let path = fields.path(key);
        let Some(entries) = self.entries(node, &path) else {
            return BTreeMap::new();
        };
        entries
            .into_iter()
            .filter_map(|(name, _, value)| {
                // An empty value is an empty string here, as in docker's `-e NAME=`.
                let text = if value.is_null() {
                    Some(String::new())
                } else {
                    self.string(value, &join_path(&path, name))
                };
                text.map(|text| (name.to_string(), text))
            })
            .collect()
    }

    /// The contents of a file named by `${file:PATH}` (relative to the config
    /// directory), without its final line break: a secret mounted as a file.
    fn secret_file(&self, file: &str) -> Result<String, String> {
        if file.is_empty() {
            return Err("names no file".to_string());
        }
        let path = self.dir.join(file);
        let metadata = std::fs::metadata(&path).map_err(|error| error.to_string())?;
        if !metadata.is_file() {
            return Err("is not a regular file".to_string());
        }
        if metadata.len() > MAX_SECRET_FILE {
            return Err(format!(
                "is larger than {} KiB; a secret file holds one value",
                MAX_SECRET_FILE / 1024
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        Ok(value.strip_suffix('\r').unwrap_or(value).to_string())
    }

    /// Fills in `${VAR}`, `${VAR:-default}` and `${file:PATH}`; `$$` is a literal `$`.
    fn interpolate(&mut self, text: &str, position: Position, path: &str) -> Option<String> {
        if !text.contains('$') {
            return Some(text.to_string());
        }
        let mut output = String::with_capacity(text.len());
        let mut rest = text;
        let mut complete = true;
        while let Some(dollar) = rest.find('$') {
            output.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                output.push('$');
                rest = stripped;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                output.push('$');
                rest = after;
                continue;
            };
            let Some(close) = body.find('}') else {
                self.error(position, format!("`{path}`: `${{` without a closing `}}`"));
                return None;
            };
            let expression = &body[..close];
            if let Some(file) = expression.strip_prefix("file:") {
                match self.secret_file(file) {
                    Ok(value) => output.push_str(&value),
                    Err(reason) => {
                        self.error(position, format!("`{path}`: `${{file:{file}}}`: {reason}"));
                        complete = false;
                    }
                }
                rest = &body[close + 1..];
                continue;
            }
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            if !is_variable_name(name) {
                self.error(
                    position,
                    format!("`{path}`: `${{{expression}}}` is not a valid variable reference"),
                );
                return None;
            }
            match ((self.environment)(name), default) {
                (Some(value), _) => output.push_str(&value),
                (None, Some(default)) => output.push_str(default),
                (None, None) => {
                    self.error(
                        position,
                        format!("environment variable `{name}` is not set (used in `{path}`)"),
                    );
                    complete = false;
                }
            }
            rest = &body[close + 1..];
        }
        output.push_str(rest);
        complete.then_some(output)
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "the file" } else { path }
}

/// A name `${NAME}` may read: a letter or `_`, then letters, digits and `_`.
pub(super) fn is_variable_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn check(text: &str, expected: Result<&str, &str>) {
        let environment = |name: &str| match name {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let mut diagnostics = Vec::new();
        let mut decoder = Decoder {
            file: PathBuf::from("f.yaml"),
            dir: PathBuf::from("."),
            diagnostics: &mut diagnostics,
            environment: &environment,
        };
        let node = yaml::parse(&format!("k: {text}")).unwrap();
        let fields = decoder.mapping(&node, "", &["k"]).unwrap();
        let value = decoder.optional_string(&fields, "k");
        match expected {
            Ok(expected) => {
                assert_eq!(value.as_deref(), Some(expected), "{diagnostics:?}");
                assert!(diagnostics.is_empty());
            }
            Err(message) => {
                assert_eq!(value, None);
                assert_eq!(diagnostics[0].to_string(), message);
            }
        }
    }

    #[test]
    fn interpolation() {
        check("plain", Ok("plain"));
        check("${SET}", Ok("value"));
        check("a-${SET}-b", Ok("a-value-b"));
        check("${EMPTY:-fallback}", Ok(""));
        check("${UNSET:-fallback}", Ok("fallback"));
        check("${UNSET:-}", Ok(""));
        check("$$HOME", Ok("$HOME"));
        check("cost $5", Ok("cost $5"));
        check(
            "${UNSET}",
            Err("f.yaml:1:4: environment variable `UNSET` is not set (used in `k`)"),
        );
        check(
            "${1BAD}",
            Err("f.yaml:1:4: `k`: `${1BAD}` is not a valid variable reference"),
        );
        check("${SET", Err("f.yaml:1:4: `k`: `${` without a closing `}`"));
    }

    #[test]
    fn suggestions() {
        let known = ["context", "dockerfile", "args", "target"];
        assert_eq!(closest("dockerfil", known.into_iter()), Some("dockerfile"));
        assert_eq!(closest("contxt", known.into_iter()), Some("context"));
        assert_eq!(closest("zzz", known.into_iter()), None);
    }
}
