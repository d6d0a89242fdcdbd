//! A pipeline's images: `image:` (the one-image form) or `images:` (several, each built
//! from the same commit, with its own Dockerfile, target, context or arguments over the
//! pipeline's `build`), and where in the repository a build reads from.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::decode::{self, Decoder, Fields};
use super::global::Global;
use super::yaml;
use super::*;

/// The keys of an entry of `images:` besides `repository` and `tags`.
const BUILD_KEYS: [&str; 4] = ["context", "dockerfile", "target", "args"];

/// Where a build reads from, as one section gives it (`None`: not given there).
pub(super) struct Location {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub target: Option<String>,
    pub args: BTreeMap<String, Template>,
}

/// Reads `context`, `dockerfile`, `target` and `args` of the section at `path`.
pub(super) fn read_location(
    decoder: &mut Decoder,
    fields: &Fields,
    path: &str,
    branch: Option<&str>,
) -> Location {
    let mut inside = |key: &str, empty_ok: bool, outside: &str| {
        let text = decoder.optional_string(fields, key)?;
        match normalize_inside(&text) {
            Some(clean) if empty_ok || !clean.is_empty() => Some(clean),
            _ => {
                let position = fields
                    .get(key)
                    .map_or(fields.position(), |node| node.position);
                decoder.error(
                    position,
                    format!("`{path}.{key}`: `{text}` is outside {outside}"),
                );
                None
            }
        }
    };
    let context = inside("context", true, "the repository");
    let dockerfile = inside("dockerfile", false, "the build context");
    let mut args = BTreeMap::new();
    let args_path = decode::join_path(path, "args");
    if let Some(args_node) = fields.get("args") {
        for (name, _, value) in decoder.entries(args_node, &args_path).unwrap_or_default() {
            let path = decode::join_path(&args_path, name);
            let Some(text) = decoder.string(value, &path) else {
                continue;
            };
            match Template::parse(&text) {
                Ok(template) => {
                    if let Err(message) = template.render(&TemplateValues::sample(branch)) {
                        decoder.error(value.position, format!("`{path}`: {message}"));
                    }
                    args.insert(name.to_string(), template);
                }
                Err(message) => decoder.error(value.position, format!("`{path}`: {message}")),
            }
        }
    }
    Location {
        context,
        dockerfile,
        target: decoder.optional_string(fields, "target"),
        args,
    }
}

/// Cleans a relative path (`./a/../b` → `b`); `None` when it leaves its root or is absolute.
fn normalize_inside(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// The pipeline's images from its top-level `image` or `images`, each with its build:
/// the pipeline's `build` with the image's own keys over it.
pub(super) fn read_images(
    decoder: &mut Decoder,
    fields: &Fields,
    pipeline: &str,
    build: Option<&Build>,
    global: &Global,
    branch: Option<&str>,
) -> Option<BTreeMap<String, Image>> {
    let mut images = BTreeMap::new();
    match (fields.get("image"), fields.get("images")) {
        (Some(_), Some(_)) => {
            decoder.error(
                fields.key_position("images"),
                "`image` and `images` exclude each other: `image` is the form for one image",
            );
            return None;
        }
        (None, None) => {
            decoder.missing(fields, "image");
            return None;
        }
        (Some(node), None) => {
            let fields = decoder.mapping(node, "image", &["repository", "tags"])?;
            let (repository, tags) = read_repository_and_tags(decoder, &fields, global, branch)?;
            images.insert(
                pipeline.to_string(),
                Image {
                    name: pipeline.to_string(),
                    repository,
                    tags,
                    build: build?.clone(),
                },
            );
        }
        (None, Some(node)) => {
            let entries = decoder.entries(node, "images")?;
            if entries.is_empty() {
                decoder.error(node.position, "`images` must name at least one image");
            }
            let known = [["repository", "tags"].as_slice(), &BUILD_KEYS].concat();
            let mut repositories: BTreeMap<String, &str> = BTreeMap::new();
            for (name, key, value) in entries {
                let path = decode::join_path("images", name);
                if !is_container_name(name) {
                    decoder.error(
                        key.position,
                        format!("`{path}`: an image name may hold only letters, digits, `-`, `_` and `.`"),
                    );
                }
                let Some(fields) = decoder.mapping(value, &path, &known) else {
                    continue;
                };
                let Some((repository, tags)) =
                    read_repository_and_tags(decoder, &fields, global, branch)
                else {
                    continue;
                };
                if let Some(other) = repositories.insert(repository.to_string(), name) {
                    decoder.error(
                        fields.key_position("repository"),
                        format!(
                            "`{path}.repository`: image `{other}` pushes to {repository} too; give each image its own repository"
                        ),
                    );
                }
                let location = read_location(decoder, &fields, &path, branch);
                let Some(build) = build else { continue };
                let mut build = build.clone();
                build.context = location.context.unwrap_or(build.context);
                build.dockerfile = location.dockerfile.unwrap_or(build.dockerfile);
                build.target = location.target.or(build.target);
                build.args.extend(location.args);
                images.insert(
                    name.to_string(),
                    Image {
                        name: name.to_string(),
                        repository,
                        tags,
                        build,
                    },
                );
            }
        }
    }
    Some(images)
}

/// An image's `repository` (a registry gantry.yaml knows, or one on loopback) and its
/// `tags` (templates that render to tags Docker accepts; the commit's short sha by default).
fn read_repository_and_tags(
    decoder: &mut Decoder,
    fields: &Fields,
    global: &Global,
    branch: Option<&str>,
) -> Option<(ImageRepository, Vec<Template>)> {
    let path = fields.path("repository");
    let repository_node = fields.get("repository");
    let repository_text = decoder.required_string(fields, "repository")?;
    let position = repository_node.map_or(fields.position(), |node| node.position);
    let repository = match ImageRepository::parse(&repository_text) {
        Ok(repository) => repository,
        Err(message) => {
            decoder.error(position, format!("`{path}`: {message}"));
            return None;
        }
    };
    let registry = repository.registry();
    if !global.registries.contains_key(registry) && !is_loopback_registry(registry) {
        decoder.error(
            position,
            format!(
                "`{path}`: registry `{registry}` is not defined in gantry.yaml `registries` \
                 (add `{registry}: {{}}` to use the credentials in ~/.docker/config.json)"
            ),
        );
    }
    let tags_path = fields.path("tags");
    let mut tags = Vec::new();
    let tag_items = if fields.get("tags").is_some() {
        decoder.positioned_list(fields, "tags")
    } else {
        vec![("{{ commit.short }}".to_string(), fields.position())]
    };
    let tags_is_list = fields
        .get("tags")
        .is_none_or(|node| !matches!(node.kind, yaml::NodeKind::Mapping(_)));
    if tag_items.is_empty() && tags_is_list {
        decoder.error(
            fields.key_position("tags"),
            format!("`{tags_path}` must name at least one tag"),
        );
    }
    for (text, tag_position) in tag_items {
        match Template::parse(&text) {
            Ok(template) => {
                match template.render(&TemplateValues::sample(branch)) {
                    Ok(tag) if !is_valid_tag(&tag) => decoder.error(
                        tag_position,
                        format!(
                            "`{tags_path}`: `{text}` gives `{tag}`, which Docker refuses as a tag \
                             (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`)"
                        ),
                    ),
                    Ok(_) => {}
                    Err(message) => decoder.error(tag_position, format!("`{tags_path}`: {message}")),
                }
                tags.push(template);
            }
            Err(message) => decoder.error(tag_position, format!("`{tags_path}`: {message}")),
        }
    }
    Some((repository, tags))
}
