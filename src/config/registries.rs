//! `registries:` in gantry.yaml: per registry host, its credentials, whether it speaks
//! plain HTTP, how many pulls may go to it at once, and the mirror pulls go through.
//!
//! A mirror is written `HOST:PORT` (a registry host as Docker names one, and a port),
//! nothing else: no scheme, path or credentials, which belong to the mirror's own
//! `registries` entry when it needs them.

use std::collections::BTreeMap;

use super::decode::{self, Decoder};
use super::yaml::Node;
use super::{ImageRepository, Registry, is_loopback_registry};

/// Reads every entry of `registries:`; problems become diagnostics.
pub(super) fn read_registries(
    decoder: &mut Decoder<'_>,
    registries_node: &Node,
) -> BTreeMap<String, Registry> {
    let mut registries = BTreeMap::new();
    for (name, _, node) in decoder
        .entries(registries_node, "registries")
        .unwrap_or_default()
    {
        let path = decode::join_path("registries", name);
        let Some(entry) = decoder.mapping(
            node,
            &path,
            &["username", "password", "insecure", "max_pulls", "mirror"],
        ) else {
            continue;
        };
        let mut registry = Registry {
            username: decoder.optional_string(&entry, "username"),
            password: decoder.optional_secret(&entry, "password"),
            insecure: decoder
                .optional_bool(&entry, "insecure")
                .unwrap_or_else(|| is_loopback_registry(name)),
            max_pulls: decoder.optional_number(&entry, "max_pulls", "a whole number of pulls"),
            mirror: None,
        };
        if registry.max_pulls == Some(0) {
            decoder.error(
                entry.key_position("max_pulls"),
                format!("`{path}.max_pulls` must be at least 1"),
            );
        }
        if registry.password.is_some() && registry.username.is_none() {
            decoder.error(
                entry.key_position("password"),
                format!("`{path}` has a password but no username"),
            );
        }
        if let Some(text) = decoder.optional_string(&entry, "mirror") {
            let position = entry
                .get("mirror")
                .map_or_else(|| entry.key_position("mirror"), |value| value.position);
            match parse_mirror(&text) {
                Ok(mirror) if mirror == name => decoder.error(
                    position,
                    format!("`{path}.mirror` is the registry itself; name another registry, or leave `mirror` out"),
                ),
                Ok(mirror) => registry.mirror = Some(mirror),
                Err(why) => decoder.error(position, format!("`{path}.mirror`: {why}")),
            }
        }
        registries.insert(name.to_string(), registry);
    }
    registries
}

/// A mirror's address, `HOST:PORT`, checked: the reason it is not one otherwise.
pub fn parse_mirror(text: &str) -> Result<String, String> {
    let hint = "a mirror is written HOST:PORT, e.g. `mirror.internal:5000`";
    // Not shown: what comes before `@` may be a password.
    if text.contains('@') {
        return Err(format!(
            "the address has user info (not shown); {hint}, with the mirror's credentials in its own `registries` entry"
        ));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "`{text}` has a scheme (`{scheme}://`); {hint} (the engine decides between HTTPS and plain HTTP as for any registry)"
        ));
    }
    if text.contains('/') {
        return Err(format!("`{text}` has a path; {hint}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` has no port; {hint}"));
    };
    if host.is_empty() {
        return Err(format!("`{text}` has no host; {hint}"));
    }
    let digits = !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
    if !digits || !port.parse::<u16>().is_ok_and(|port| port > 0) {
        return Err(format!("`{port}` is not a port (1 to 65535); {hint}"));
    }
    // Docker's own grammar for the registry part of an image name.
    match ImageRepository::parse(&format!("{text}/mirrored")) {
        Ok(repository) if repository.registry() == text => Ok(text.to_string()),
        _ => Err(format!("`{host}` is not a valid registry host; {hint}")),
    }
}
#[cfg(test)]
mod tests {
    use super::super::tests::{check, load_files};
    use super::parse_mirror;

    #[test]
    fn max_pulls_is_a_positive_number_of_pulls() {
        let no_variables = |_: &str| None;
        let text = "registries:\n  reg.example.com: { max_pulls: 4 }\n  other.example.com: {}\n";
        let config = load_files(&[("gantry.yaml", text)], &no_variables).unwrap();
        assert_eq!(config.registries["reg.example.com"].max_pulls, Some(4));
        assert_eq!(config.registries["other.example.com"].max_pulls, None);
        check(
            &[(
                "gantry.yaml",
                "registries:\n  reg.example.com: { max_pulls: 0 }\n  b.example.com: { max_pulls: many }\n",
            )],
            &[
                "gantry.yaml:2:22: `registries.reg.example.com.max_pulls` must be at least 1",
                "gantry.yaml:3:31: `registries.b.example.com.max_pulls` must be a whole number of pulls, not `many`",
            ],
        );
    }

    #[test]
    fn a_mirror_is_a_host_and_a_port() {
        let no_variables = |_: &str| None;
        let text = "registries:\n  reg.example.com: { mirror: \"mirror.internal:5000\" }\n  other.example.com: {}\n";
        let config = load_files(&[("gantry.yaml", text)], &no_variables).unwrap();
        let mirror = config.registries["reg.example.com"].mirror.as_deref();
        assert_eq!(mirror, Some("mirror.internal:5000"));
        assert_eq!(config.registries["other.example.com"].mirror, None);
        for good in [
            "127.0.0.1:5117",
            "localhost:5000",
            "mirror:443",
            "a-b.c.d:65535",
        ] {
            assert_eq!(parse_mirror(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn a_bad_mirror_is_named_where_it_is_written() {
        check(
            &[(
                "gantry.yaml",
                "registries:\n\
                 \x20 a.example.com: { mirror: \"http://mirror.internal:5000\" }\n\
                 \x20 b.example.com: { mirror: mirror.internal }\n\
                 \x20 c.example.com: { mirror: \"mirror.internal:99999\" }\n\
                 \x20 d.example.com: { mirror: \"mirror.internal:5000/cache\" }\n\
                 \x20 e.example.com: { mirror: \"mirror_internal:5000\" }\n\
                 \x20 f.example.com:5000: { mirror: \"f.example.com:5000\" }\n\
                 \x20 g.example.com: { mirror: [a, b] }\n\
                 \x20 h.example.com: { mirror: \"ci:pw@mirror.internal:5000\" }\n\
                 \x20 i.example.com: { mirror: \":5000\" }\n\
                 \x20 j.example.com: { mirror: \"mirror.internal:+500\" }\n\
                 \x20 k.example.com: { mirorr: \"mirror.internal:5000\" }\n\
                 \x20 l.example.com: { mirror: \"https://ci:pw@mirror.internal:5000\" }\n",
            )],
            &[
                "gantry.yaml:2:28: `registries.a.example.com.mirror`: `http://mirror.internal:5000` has a scheme (`http://`); a mirror is written HOST:PORT, e.g. `mirror.internal:5000` (the engine decides between HTTPS and plain HTTP as for any registry)",
                "gantry.yaml:3:28: `registries.b.example.com.mirror`: `mirror.internal` has no port; a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:4:28: `registries.c.example.com.mirror`: `99999` is not a port (1 to 65535); a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:5:28: `registries.d.example.com.mirror`: `mirror.internal:5000/cache` has a path; a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:6:28: `registries.e.example.com.mirror`: `mirror_internal` is not a valid registry host; a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:7:33: `registries.f.example.com:5000.mirror` is the registry itself; name another registry, or leave `mirror` out",
                "gantry.yaml:8:28: `registries.g.example.com.mirror` must be a string, not a list",
                "gantry.yaml:9:28: `registries.h.example.com.mirror`: the address has user info (not shown); a mirror is written HOST:PORT, e.g. `mirror.internal:5000`, with the mirror's credentials in its own `registries` entry",
                "gantry.yaml:10:28: `registries.i.example.com.mirror`: `:5000` has no host; a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:11:28: `registries.j.example.com.mirror`: `+500` is not a port (1 to 65535); a mirror is written HOST:PORT, e.g. `mirror.internal:5000`",
                "gantry.yaml:12:20: unknown key `mirorr` in `registries.k.example.com` (did you mean `mirror`?)",
                "gantry.yaml:13:28: `registries.l.example.com.mirror`: the address has user info (not shown); a mirror is written HOST:PORT, e.g. `mirror.internal:5000`, with the mirror's credentials in its own `registries` entry",
            ],
        );
    }
}
