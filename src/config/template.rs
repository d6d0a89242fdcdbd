//! Tag and build-argument templates: `{{ commit.short }}`, `{{ branch }}`, ...
//!
//! Templates are parsed and test-rendered at load time with sample values, so an
//! unknown variable or a tag Docker would refuse is a config error, not a failed run.
//! The config loader renders them on every reload, so their work is bounded: the
//! source's length, the instructions a render may run (minijinja's fuel), and the
//! length of what it makes. Fuel alone does not bound memory: `'x' * 99999999` is one
//! instruction and `{% set a = a ~ a %}` doubles a string in four, so a template holds
//! expressions, filters that cannot grow a value past `MAX_RENDERED_LEN`, and `if`
//! only; no `*`, loops, `set`, macros or functions such as `range`.

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, context};

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
        check_constructs(source).map_err(|reason| format!("bad template `{source}`: {reason}"))?;
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

/// The statements a template may hold. Loops, `set`, `with` and macros would let a
/// template keep a value and grow it, doubling a string in a few instructions.
const STATEMENTS: [&str; 4] = ["if", "elif", "else", "endif"];

/// Refuses what would let a render build values of any size: a statement other than
/// `if`, and `*` (minijinja repeats a string or list up to 100 MB in one instruction).
/// Tags are read the way minijinja's lexer reads them: a tag ends at its closing
/// delimiter outside strings and brackets; what is not closed is left for it to report.
fn check_constructs(source: &str) -> Result<(), String> {
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let (closing, is_statement) = match after.as_bytes().first() {
            Some(b'{') => ("}}", false),
            Some(b'%') => ("%}", true),
            Some(b'#') => match after.find("#}") {
                Some(end) => {
                    rest = &after[end + 2..];
                    continue;
                }
                None => return Ok(()),
            },
            _ => {
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        let mut characters = body.char_indices();
        let mut quote = None;
        let mut brackets = 0usize;
        let mut end = None;
        while let Some((index, character)) = characters.next() {
            if let Some(open_quote) = quote {
                if character == '\\' {
                    characters.next();
                } else if character == open_quote {
                    quote = None;
                }
                continue;
            }
            match character {
                '\'' | '"' => quote = Some(character),
                '*' => return Err("`*` is not allowed in a template".to_string()),
                '(' | '[' | '{' => brackets += 1,
                ')' | ']' => brackets = brackets.saturating_sub(1),
                '}' if brackets > 0 => brackets -= 1,
                _ if brackets == 0 && body[index..].starts_with(closing) => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Ok(());
        };
        if is_statement {
            let statement = body[..end].trim_start_matches(['-', '+']).trim_start();
            let keyword = statement
                .split(|character: char| !character.is_ascii_alphanumeric() && character != '_')
                .next()
                .unwrap_or_default();
            if !STATEMENTS.contains(&keyword) {
                return Err(format!(
                    "`{{% {keyword} %}}` is not allowed in a template (expressions, filters and `if` are)"
                ));
            }
        }
        rest = &body[end + closing.len()..];
    }
    Ok(())
}

/// Strict: a misspelled variable is an error, not an empty string. Fueled: a render
/// that runs too long stops with an error. Its filters keep a value about its size
/// (case, trimming, picking) or, like `replace`, are bounded; nothing else: no `join`,
/// `indent`, `format`, `range` or `lipsum`, which make text of any length.
fn environment() -> Environment<'static> {
    use minijinja::filters;
    let mut environment = Environment::empty();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(TEMPLATE_FUEL));
    environment.add_filter("lower", filters::lower);
    environment.add_filter("upper", filters::upper);
    environment.add_filter("title", filters::title);
    environment.add_filter("capitalize", filters::capitalize);
    environment.add_filter("trim", filters::trim);
    environment.add_filter("length", filters::length);
    environment.add_filter("default", filters::default);
    environment.add_filter("first", filters::first);
    environment.add_filter("last", filters::last);
    environment.add_filter("string", filters::string);
    environment.add_filter("int", filters::int);
    environment.add_filter("reverse", filters::reverse);
    environment.add_filter("replace", bounded_replace);
    environment
}

/// `replace`, refused when its result would pass `MAX_RENDERED_LEN` (a few chained
/// replaces would otherwise grow a value exponentially).
fn bounded_replace(value: String, from: String, to: String) -> Result<String, Error> {
    let found = if from.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(from.as_str()).count()
    };
    let length = (value.len() - found * from.len()).saturating_add(found.saturating_mul(to.len()));
    if length > MAX_RENDERED_LEN {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("replace would make {length} bytes, more than the {MAX_RENDERED_LEN} allowed"),
        ));
    }
    Ok(value.replace(from.as_str(), &to))
}

fn error_text(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => detail.to_string(),
        None => error.kind().to_string(),
    }
}

#[cfg(test)]
mod fuzz_tests;

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
            Err("`{% for %}` is not allowed"),
        );
        check("{{ 'x' * 100000000 }}", Err("`*` is not allowed"));
        check(&"x".repeat(MAX_TEMPLATE_LEN + 1), Err("longer than"));
        // Each replace stays under the limit; the two together pass it.
        let widened = "{{ commit.sha|replace('', '0123456789012345678901234567890123456789012345678901234567890123456789012345678901234') }}";
        check(&widened.repeat(2), Err("more than the"));
        check(
            "{{ 1 if commit.sha else 2 }}{% if branch == 'main' %}-m{% endif %}",
            Ok("1-m"),
        );
        check("{{ branch|replace('/', '-')|upper }}", Ok("MAIN"));
        check("{{ '*' }}{# * #}*", Ok("**"));
    }

    /// Each of these built a value of any size within the fuel, in a few instructions:
    /// a string doubled by `set` forty times (8 TiB), repeated by `*` (100 MB), grown by
    /// chained `replace`s (70 MB for six; each one more is eleven times that).
    #[test]
    fn templates_cannot_build_values_of_any_size() {
        let doubling = format!(
            "{{% set a = 'xxxxxxxx' %}}{}{{{{ a|length }}}}",
            "{% set a = a ~ a %}".repeat(40)
        );
        // Only parsed: rendering it is what must never happen.
        let parsed = Template::parse(&doubling);
        assert!(
            parsed
                .as_ref()
                .is_err_and(|error| error.contains("`{% set %}` is not allowed")),
            "{parsed:?}"
        );
        check("{{ ('x' * 99999999)|length }}", Err("`*` is not allowed"));
        check(
            &format!(
                "{{{{ commit.sha{}|length }}}}",
                "|replace('', 'xxxxxxxxxx')".repeat(6)
            ),
            Err("more than the"),
        );
        check("{{ ([1] * 99999999)|length }}", Err("`*` is not allowed"));
        check("{{ range(10)|join }}", Err("cannot be rendered"));
    }
}
