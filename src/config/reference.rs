//! Docker image names as Docker itself accepts them.
//!
//! A repository is checked at load time so that a typo fails `gantry validate`
//! instead of a push half-way through a run.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The registry Docker uses for a name without a registry host.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// One path component of a repository, from the distribution reference grammar.
static PATH_COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    // The pattern is a constant known to compile.
    Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("constant regex")
});

/// A registry host with an optional port.
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$")
        .expect("constant regex")
});

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("constant regex"));

/// Whether Docker accepts `tag` as an image tag.
pub fn is_valid_tag(tag: &str) -> bool {
    TAG.is_match(tag)
}

/// Whether `text` is a sha256 digest as registries write it: `sha256:` and 64
/// lowercase hex digits.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `text` as messages may quote it: without the user info of a URL, and without
/// anything before an `@` that does not start a digest (`user:password@host/...`, a
/// token written before a host), since that may be a credential.
pub fn shown_reference(text: &str) -> String {
    let text = super::redact_urls(text);
    match text.rsplit_once('@') {
        Some((before, digest)) if digest.starts_with("sha256:") && !before.contains('@') => text,
        Some((_, after)) => format!("***@{after}"),
        None => text,
    }
}

/// Whether `text` starts with `user:password@host/` (a name with a tag and a digest,
/// `app:v1@sha256:...`, has no path after its `@`).
fn user_info_before_path(text: &str) -> bool {
    let Some((first, _)) = text.split_once('/') else {
        return false;
    };
    first
        .split_once('@')
        .is_some_and(|(before, _)| before.contains(':'))
}

/// An image repository without tag or digest: `registry.example.com/team/hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRepository {
    /// The registry host, `docker.io` when the name has none.
    registry: String,
    /// The path inside the registry (`team/hello`; `library/x` for official Docker Hub images).
    path: String,
    /// The name as written, which is what tags are made from.
    written: String,
}

impl ImageRepository {
    /// The repository of a full reference with a tag or a digest (`caddy:2.8`,
    /// `reg.example.com:5000/caddy@sha256:…`), checked whole.
    pub fn of_reference(written: &str) -> Result<ImageRepository, String> {
        if written.contains("://")
            || user_info_before_path(written)
            || written.matches('@').count() > 1
        {
            return ImageRepository::parse(written);
        }
        let text = written;
        let quoted = shown_reference(written);
        let (repository, digest) = match text.split_once('@') {
            Some((repository, digest)) => (repository, Some(digest)),
            None => (text, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port comes before it).
        let name_start = repository.rfind('/').map_or(0, |slash| slash + 1);
        let (repository, tag) = match repository[name_start..].rfind(':') {
            Some(colon) => (
                &repository[..name_start + colon],
                Some(&repository[name_start + colon + 1..]),
            ),
            None => (repository, None),
        };
        if let Some(tag) = tag
            && !is_valid_tag(tag)
        {
            return Err(format!("`{quoted}`: `{tag}` is not a valid tag"));
        }
        if let Some(digest) = digest
            && !is_sha256_digest(digest)
        {
            return Err(format!("`{quoted}`: `{digest}` is not a sha256 digest"));
        }
        ImageRepository::parse(repository)
    }

    pub fn parse(written: &str) -> Result<ImageRepository, String> {
        // Messages quote the name without any credentials written into it.
        let text = &shown_reference(written);
        if written.len() > 255 {
            return Err(format!("`{text}` is longer than 255 characters"));
        }
        if written.contains("://") {
            return Err(format!(
                "`{text}`: give the repository as HOST/PATH, without a scheme (credentials go in `registries:`)"
            ));
        }
        if written.contains('@') {
            return Err(format!(
                "`{text}` carries a digest or credentials; give the repository only"
            ));
        }
        let text = written;
        let (first, rest) = match text.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (text, None),
        };
        // Docker treats the first component as a registry host when it has a dot,
        // a port, or is `localhost`; otherwise the name lives on Docker Hub.
        let (registry, path) = match rest {
            Some(rest) if first.contains(['.', ':']) || first == "localhost" => {
                if !DOMAIN.is_match(first) {
                    return Err(format!("`{first}` is not a valid registry host"));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), text.to_string()),
        };
        let last = path.rsplit('/').next().unwrap_or_default();
        if last.contains(':') {
            return Err(format!(
                "`{text}` carries a tag; put tags in `image.tags`, not in the repository"
            ));
        }
        for component in path.split('/') {
            if !PATH_COMPONENT.is_match(component) {
                return Err(format!(
                    "`{text}` is not a valid repository: `{component}` must be lowercase letters and \
                     digits, separated by `.`, `_`, `__` or `-`"
                ));
            }
        }
        let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRepository {
            registry,
            path,
            written: text.to_string(),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The path inside the registry, as the registry API names it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `repository:tag`.
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.written)
    }

    /// `repository@digest`.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.written)
    }
}

impl fmt::Display for ImageRepository {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.written)
    }
}

/// Serialised as the reference text, as users write it.
impl serde::Serialize for ImageRepository {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(&str, &str), &str>) {
        let parsed = ImageRepository::parse(text)
            .map(|repository| (repository.registry.clone(), repository.path.clone()));
        match expected {
            Ok((registry, path)) => {
                assert_eq!(
                    parsed,
                    Ok((registry.to_string(), path.to_string())),
                    "{text}"
                )
            }
            Err(fragment) => {
                let message = parsed.unwrap_err();
                assert!(message.contains(fragment), "{text}: {message}");
            }
        }
    }

    #[test]
    fn repositories() {
        check("hello", Ok(("docker.io", "library/hello")));
        check("team/hello", Ok(("docker.io", "team/hello")));
        check(
            "127.0.0.1:5000/team/hello",
            Ok(("127.0.0.1:5000", "team/hello")),
        );
        check("localhost/hello", Ok(("localhost", "hello")));
        check(
            "registry.example.com/a/b-c.d__e",
            Ok(("registry.example.com", "a/b-c.d__e")),
        );
        check(
            "registry.example.com/Team/hello",
            Err("`Team` must be lowercase"),
        );
        check("team/hello:latest", Err("carries a tag"));
        check("team/hello@sha256:abc", Err("carries a digest"));
        check("team//hello", Err("must be lowercase"));
        check("team/-hello", Err("must be lowercase"));
        check("bad_host.:5000/x", Err("not a valid registry host"));
        // Credentials written into a repository are never quoted back.
        for text in [
            "https://user:s3cret-pw@reg.example.com/team/x",
            "user:s3cret-pw@reg.example.com/team/x",
            "user:s3cret/pw@reg.example.com/team/x",
            "user:s3cret-p@w@reg.example.com/team/x",
            "s3cret-pw@reg.example.com/team/x",
        ] {
            let message = ImageRepository::parse(text).unwrap_err();
            assert!(!message.contains("s3cret-pw"), "{message}");
            assert!(message.contains("reg.example.com/team/x"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
            let message = ImageRepository::of_reference(&format!("{text}:v1")).unwrap_err();
            assert!(!message.contains("s3cret"), "{message}");
        }
        check(
            "https://reg.example.com/team/x",
            Err("give the repository as HOST/PATH, without a scheme"),
        );
    }

    #[test]
    fn tags() {
        for tag in ["latest", "1.2.3", "abc1234", "_x", "A-b_c.d"] {
            assert!(is_valid_tag(tag), "{tag}");
        }
        for tag in ["", ".x", "-x", "feature/x", "a:b", &"x".repeat(129)] {
            assert!(!is_valid_tag(tag), "{tag}");
        }
    }
}
