//! Tag and build-argument templates: `{{ commit.short }}`, `{{ branch }}`, ...
//!
//! Templates are parsed and test-rendered at load time with sample values, so an
//! unknown variable or a tag Docker would refuse is a config error, not a failed run.
//! The config loader renders them on every reload, so their work is bounded: the
//! source's length, the instructions a render may run (minijinja's fuel), and the
//! length of what it makes.

use minijinja::{Environment, UndefinedBehavior, context};

/// The longest template source: a tag is at most 128 characters, a build argument a
/// short value; a longer template is a mistake or an attack.
pub const MAX_TEMPLATE_LEN: usize = 1024;
/// Instructions one render may run. `{{ branch }}-{{ run.number }}` takes a few
/// dozen; a loop over a large range runs out of fuel instead of stalling the loader.
const TEMPLATE_FUEL: u64 = 10_000;
/// The longest text a render may make (a tag is at most 128 characters).
pub const MAX_RENDERED_LEN: usize = 4096;

/// A parsed template; rendering it needs the run's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
}

/// The values a template may use.
#[derive(Debug, Clone)]
pub struct TemplateValues {
    pub commit_sha: String,
    pub branch: String,
    pub run_number: i64,
}

impl TemplateValues {
    /// Values shaped like a real run's, for checking templates at load time.
    pub fn sample(branch: Option<&str>) -> TemplateValues {
        TemplateValues {
            commit_sha: "0123456789abcdef0123456789abcdef01234567".to_string(),
            branch: branch.unwrap_or("main").to_string(),
            run_number: 1,
        }
    }

    /// The short commit id, as `git rev-parse --short` gives it by default.
    pub fn commit_short(&self) -> &str {
        match self.commit_sha.char_indices().nth(7) {
            Some((index, _)) => &self.commit_sha[..index],
            None => &self.commit_sha,
        }
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        if source.len() > MAX_TEMPLATE_LEN {
            return Err(format!(
                "a template of {} bytes is longer than the {MAX_TEMPLATE_LEN} allowed",
                source.len()
            ));
        }
        environment()
            .template_from_str(source)
            .map_err(|error| format!("bad template `{source}`: {}", error_text(&error)))?;
        Ok(Template {
            source: source.to_string(),
        })
    }

    pub fn render(&self, values: &TemplateValues) -> Result<String, String> {
        let environment = environment();
        let template = environment
            .template_from_str(&self.source)
            .map_err(|error| format!("bad template `{}`: {}", self.source, error_text(&error)))?;
        template
            .render(context! {
                commit => context! { sha => &values.commit_sha, short => values.commit_short() },
                branch => &values.branch,
                run => context! { number => values.run_number },
            })
            .map_err(|error| {
                format!(
                    "template `{}` cannot be rendered: {} (known: commit.sha, commit.short, branch, run.number)",
                    self.source,
                    error_text(&error)
                )
            })
            .and_then(|text| {
                if text.len() > MAX_RENDERED_LEN {
                    return Err(format!(
                        "template `{}` makes {} bytes, more than the {MAX_RENDERED_LEN} allowed",
                        self.source,
                        text.len()
                    ));
                }
                Ok(text.trim().to_string())
            })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Strict: a misspelled variable is an error, not an empty string. Fueled: a render
/// that runs too long stops with an error.
fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(TEMPLATE_FUEL));
    environment
}

fn error_text(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => detail.to_string(),
        None => error.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, expected: Result<&str, &str>) {
        let values = TemplateValues {
            commit_sha: "89abcdef0123456789abcdef0123456789abcdef".to_string(),
            branch: "main".to_string(),
            run_number: 42,
        };
        let rendered = Template::parse(source).and_then(|template| template.render(&values));
        match expected {
            Ok(text) => assert_eq!(rendered.as_deref(), Ok(text)),
            Err(fragment) => {
                let message = rendered.unwrap_err();
                assert!(message.contains(fragment), "{source}: {message}");
            }
        }
    }

    #[test]
    fn templates() {
        check("latest", Ok("latest"));
        check("{{ commit.short }}", Ok("89abcde"));
        check(
            "{{ commit.sha }}",
            Ok("89abcdef0123456789abcdef0123456789abcdef"),
        );
        check("{{ branch }}-{{ run.number }}", Ok("main-42"));
        check("{{ commit.shaa }}", Err("cannot be rendered"));
        check("{{ commit.short", Err("bad template"));
    }

    #[test]
    fn template_work_is_bounded() {
        check(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            Err("cannot be rendered"),
        );
        check("{{ 'x' * 100000000 }}", Err("cannot be rendered"));
        check(&"x".repeat(MAX_TEMPLATE_LEN + 1), Err("longer than"));
        check("{{ 'ab' * 3000 }}", Err("more than the"));
    }
}
