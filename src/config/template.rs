//! Tag and build-argument templates: `{{ commit.short }}`, `{{ branch }}`, ...
//!
//! Templates are parsed and test-rendered at load time with sample values, so an
//! unknown variable or a tag Docker would refuse is a config error, not a failed run.

use minijinja::{Environment, UndefinedBehavior, context};

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
        &self.commit_sha[..self.commit_sha.len().min(7)]
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
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
            .map(|text| text.trim().to_string())
            .map_err(|error| {
                format!(
                    "template `{}` cannot be rendered: {} (known: commit.sha, commit.short, branch, run.number)",
                    self.source,
                    error_text(&error)
                )
            })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Strict: a misspelled variable is an error, not an empty string.
fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
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
}
