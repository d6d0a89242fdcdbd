//! Registry mirrors (`registries.HOST.mirror`): the reference an image has through a
//! registry's mirror, and the name an engine holds an image under.
//!
//! An image pulled through a mirror by digest is the same content (the digest names
//! it), but the engine knows it only under the mirror's name,
//! `mirror.internal:5000/team/hello@sha256:...`. So a container is created from the
//! name the engine has (`Mirrors::engine_reference`), while its labels, the state
//! store and `gantry status` keep the registry's repository and the digest.

use std::collections::BTreeMap;

use bollard::Docker;

use crate::config::{Config, ImageRepository};

/// Each registry's mirror, from the config.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    /// Registry host → the mirror's `HOST:PORT`.
    by_registry: BTreeMap<String, String>,
}

/// An image reference as it is pulled through a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The mirror's `HOST:PORT`.
    pub mirror: String,
    /// The same path, tag and digest, under the mirror's host.
    pub reference: String,
    pub repository: ImageRepository,
}

impl Mirrors {
    pub fn of(config: &Config) -> Mirrors {
        Mirrors::of_pairs(
            config
                .registries
                .iter()
                .filter_map(|(registry, entry)| Some((registry.clone(), entry.mirror.clone()?))),
        )
    }

    /// Mirrors from (registry, mirror) pairs.
    pub fn of_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Mirrors {
        Mirrors {
            by_registry: pairs.into_iter().collect(),
        }
    }

    /// `reference` through its registry's mirror, when the registry has one.
    pub fn mirrored(&self, reference: &str) -> Option<Mirrored> {
        let repository = ImageRepository::of_reference(reference).ok()?;
        let mirror = self.by_registry.get(repository.registry())?;
        mirrored_reference(reference, &repository, mirror)
    }

    /// The name `docker` holds the image of `reference` under: `reference` itself,
    /// else its name through the mirror, else `None` (the engine lacks it).
    pub async fn held_as(&self, docker: &Docker, reference: &str) -> Option<String> {
        if docker.inspect_image(reference).await.is_ok() {
            return Some(reference.to_string());
        }
        let mirrored = self.mirrored(reference)?;
        docker
            .inspect_image(&mirrored.reference)
            .await
            .is_ok()
            .then_some(mirrored.reference)
    }

    /// What to create a container of `reference` from on `docker`: the name the engine
    /// holds it under (`reference` when it holds none; the engine then says so).
    pub async fn engine_reference(&self, docker: &Docker, reference: &str) -> String {
        // Without a mirror there is one name to ask for: no need to look first.
        if self.mirrored(reference).is_none() {
            return reference.to_string();
        }
        self.held_as(docker, reference)
            .await
            .unwrap_or_else(|| reference.to_string())
    }
}

/// `reference` (of `repository`) with the mirror in place of the registry: the path
/// inside the registry (`library/x` for Docker Hub's official images), then the tag
/// and digest as written.
fn mirrored_reference(
    reference: &str,
    repository: &ImageRepository,
    mirror: &str,
) -> Option<Mirrored> {
    let suffix = reference.strip_prefix(&repository.to_string())?;
    let mirrored = format!("{mirror}/{}{suffix}", repository.path());
    Some(Mirrored {
        mirror: mirror.to_string(),
        repository: ImageRepository::of_reference(&mirrored).ok()?,
        reference: mirrored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check(mirrors: &[(&str, &str)], reference: &str, expected: Option<&str>) {
        let mirrors = Mirrors::of_pairs(
            mirrors
                .iter()
                .map(|(registry, mirror)| (registry.to_string(), mirror.to_string())),
        );
        let mirrored = mirrors.mirrored(reference);
        assert_eq!(
            mirrored
                .as_ref()
                .map(|mirrored| mirrored.reference.as_str()),
            expected,
            "{reference}"
        );
        if let Some(mirrored) = mirrored {
            assert_eq!(mirrored.repository.registry(), mirrored.mirror);
        }
    }

    #[test]
    fn a_reference_through_a_mirror_keeps_its_path_tag_and_digest() {
        let mirrors = [
            ("reg.example.com", "mirror.internal:5000"),
            ("docker.io", "hub-cache:5000"),
        ];
        check(
            &mirrors,
            &format!("reg.example.com/team/hello@{DIGEST}"),
            Some(&format!("mirror.internal:5000/team/hello@{DIGEST}")),
        );
        check(
            &mirrors,
            "reg.example.com/team/hello:v1",
            Some("mirror.internal:5000/team/hello:v1"),
        );
        check(
            &mirrors,
            &format!("reg.example.com/hello:v1@{DIGEST}"),
            Some(&format!("mirror.internal:5000/hello:v1@{DIGEST}")),
        );
        // Docker Hub's names as a mirror of it serves them.
        check(
            &mirrors,
            "postgres:16",
            Some("hub-cache:5000/library/postgres:16"),
        );
        check(
            &mirrors,
            "docker.io/grafana/grafana:11",
            Some("hub-cache:5000/grafana/grafana:11"),
        );
        // Registries without a mirror, and what is not a reference.
        check(&mirrors, "other.example.com/team/hello:v1", None);
        check(&mirrors, "reg.example.com:5000/team/hello:v1", None);
        check(&mirrors, "Not A Reference", None);
    }
}
