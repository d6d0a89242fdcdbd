//! A pipeline's release tasks (`deploy.tasks`): one-off containers of the new image
//! that run once per deploy, before any instance is swapped (database migrations) or
//! after every instance is healthy.
//!
//! This module reads and checks them (the service and host they name, the command,
//! `when`, `timeout`); running them is `deploy::task`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use super::decode::{self, Decoder, closest};
use super::global::Global;
use super::pipeline::check_host;
use super::yaml::{self, Position};
use super::{Service, is_container_name};

/// How long a task may run when its `timeout` is not given: long enough for a slow
/// migration, short enough that a hung one does not hold the deploy lease for hours.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A one-off container of the new image, with its service's env, volumes and network.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    /// The service whose env, volumes, network and limits the container gets.
    pub service: String,
    pub command: Vec<String>,
    pub when: TaskWhen,
    /// A task still running after this long is killed and fails the deploy.
    pub timeout: Duration,
    /// Where it runs: `host`, or the host of the service's first instance as written.
    pub host: String,
}

/// When a task runs in a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskWhen {
    /// After the image is pulled everywhere, before any instance is swapped; a failure
    /// stops the deploy with nothing swapped.
    Before,
    /// Once every instance passed its gate; a failure fails the run, but the new
    /// containers stay.
    After,
}

impl TaskWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskWhen::Before => "before",
            TaskWhen::After => "after",
        }
    }
}

impl super::Pipeline {
    /// The release task of that name.
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.deploy.tasks.iter().find(|task| task.name == name)
    }

    /// A "did you mean" for a task name that does not exist.
    pub fn suggest_task(&self, name: &str) -> Option<&str> {
        closest(
            name,
            self.deploy.tasks.iter().map(|task| task.name.as_str()),
        )
    }
}

/// Reads `deploy.tasks` (a mapping of task names, kept in the order written) against
/// the pipeline's services, which are read already.
pub(super) fn read_tasks(
    decoder: &mut Decoder,
    node: Option<&yaml::Node>,
    services: &BTreeMap<String, Service>,
    global: &Global,
) -> Vec<Task> {
    let Some(node) = node else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    for (name, key, task_node) in decoder.entries(node, "deploy.tasks").unwrap_or_default() {
        if !is_container_name(name) {
            decoder.error(
                key.position,
                format!("task name `{name}` may hold only letters, digits, `-`, `_` and `.`"),
            );
        }
        if let Some(task) = read_task(decoder, name, key.position, task_node, services, global) {
            tasks.push(task);
        }
    }
    tasks
}

fn read_task(
    decoder: &mut Decoder,
    name: &str,
    key_position: Position,
    node: &yaml::Node,
    services: &BTreeMap<String, Service>,
    global: &Global,
) -> Option<Task> {
    let path = decode::join_path("deploy.tasks", name);
    let fields = decoder.mapping(
        node,
        &path,
        &["service", "command", "when", "timeout", "host"],
    )?;
    let service_name = decoder.required_string(&fields, "service");
    let service = service_name.as_deref().and_then(|service_name| {
        let found = services.get(service_name);
        if found.is_none() {
            let suggestion = closest(service_name, services.keys().map(String::as_str))
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            decoder.error(
                fields
                    .get("service")
                    .map_or(fields.position(), |node| node.position),
                format!("`{path}.service`: service `{service_name}` is not defined{suggestion}"),
            );
        }
        if found.is_some_and(|service| service.accessory().is_some()) {
            decoder.error(
                fields
                    .get("service")
                    .map_or(fields.position(), |node| node.position),
                format!(
                    "`{path}.service`: `{service_name}` is an accessory; a task runs an image the pipeline builds"
                ),
            );
        }
        found
    });
    let command = match fields.get("command") {
        Some(command_node) => {
            let command = decoder.string_list(command_node, &fields.path("command"));
            if command.is_empty() {
                decoder.error(
                    command_node.position,
                    format!("`{path}.command` needs a command, like [\"./migrate\", \"up\"]"),
                );
            }
            command
        }
        None => {
            decoder.missing(&fields, "command");
            Vec::new()
        }
    };
    let when = match decoder.optional_string(&fields, "when").as_deref() {
        None | Some("before") => TaskWhen::Before,
        Some("after") => TaskWhen::After,
        Some(other) => {
            decoder.error(
                fields
                    .get("when")
                    .map_or(fields.position(), |node| node.position),
                format!("`{path}.when` must be `before` or `after`, not `{other}`"),
            );
            TaskWhen::Before
        }
    };
    let timeout = decoder
        .optional_duration(&fields, "timeout")
        .unwrap_or(DEFAULT_TASK_TIMEOUT);
    if timeout.is_zero() {
        decoder.error(
            fields.key_position("timeout"),
            format!("`{path}.timeout` must be longer than 0s"),
        );
    }
    let host = match decoder.optional_string(&fields, "host") {
        Some(host) => {
            check_host(
                decoder,
                global,
                &host,
                fields
                    .get("host")
                    .map_or(fields.position(), |node| node.position),
                &format!("{path}.host"),
            );
            Some(host)
        }
        // The host of the service's first instance as written in the file.
        None => service.and_then(|service| {
            let first = service
                .instances
                .values()
                .min_by_key(|instance| (instance.position.line, instance.position.column));
            if first.is_none() {
                decoder.error(
                    key_position,
                    format!(
                        "task `{name}`: service `{}` has no instances to take a host from; give the task a `host`",
                        service.name
                    ),
                );
            }
            first.map(|instance| instance.host.clone())
        }),
    };
    Some(Task {
        name: name.to_string(),
        service: service?.name.clone(),
        command,
        when,
        timeout,
        host: host?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = "\
source: { repo: https://git.example.com/team/hello.git }
image: { repository: 127.0.0.1:5000/team/hello }
deploy:
  services:
    web:
      volumes: [\"data:/data\"]
      instances:
        web-2: { host: h2 }
        web-1: { host: h1 }
    empty:
      instances: {}
  tasks:
";

    const GLOBAL: &str = "\
hosts:
  h1: { docker: \"unix:///h1.sock\" }
  h2: { docker: \"unix:///h2.sock\" }
  db1: { docker: \"tcp://10.0.0.9:2376\" }
";

    /// Loads the pipeline with `tasks` under `deploy.tasks`: its tasks, or every message.
    fn load(tasks: &str) -> Result<Vec<Task>, Vec<String>> {
        let pipeline = format!("{PIPELINE}{tasks}");
        super::super::tests::load_files(
            &[("gantry.yaml", GLOBAL), ("pipelines/hello.yaml", &pipeline)],
            &|_: &str| None,
        )
        .map(|config| config.pipelines["hello"].deploy.tasks.clone())
    }

    fn check_errors(tasks: &str, expected: &[&str]) {
        assert_eq!(
            load(tasks),
            Err(expected.iter().map(|line| line.to_string()).collect())
        );
    }

    #[test]
    fn tasks_keep_their_order_and_take_defaults() {
        let tasks = load(
            "    migrate: { service: web, command: [\"./migrate\", \"up\"], timeout: 5m, host: db1 }\n    \
             seed: { service: web, command: seed }\n    \
             notify: { service: web, command: [notify], when: after }\n",
        )
        .unwrap();
        assert_eq!(
            tasks,
            vec![
                Task {
                    name: "migrate".into(),
                    service: "web".into(),
                    command: vec!["./migrate".into(), "up".into()],
                    when: TaskWhen::Before,
                    timeout: Duration::from_secs(300),
                    host: "db1".into(),
                },
                Task {
                    name: "seed".into(),
                    service: "web".into(),
                    command: vec!["seed".into()],
                    when: TaskWhen::Before,
                    timeout: DEFAULT_TASK_TIMEOUT,
                    // The first instance as written, not the first by name.
                    host: "h2".into(),
                },
                Task {
                    name: "notify".into(),
                    service: "web".into(),
                    command: vec!["notify".into()],
                    when: TaskWhen::After,
                    timeout: DEFAULT_TASK_TIMEOUT,
                    host: "h2".into(),
                },
            ]
        );
        assert_eq!(load("").unwrap(), Vec::new());
    }

    #[test]
    fn each_mistake_is_named_where_it_is() {
        check_errors(
            "    migrate: { service: wbe, command: [x] }\n",
            &[
                "pipelines/hello.yaml:13:25: `deploy.tasks.migrate.service`: service `wbe` is not defined (did you mean `web`?)",
            ],
        );
        check_errors(
            "    migrate: { service: web, command: [x], host: db2 }\n",
            &[
                "pipelines/hello.yaml:13:50: `deploy.tasks.migrate.host`: host `db2` is not defined in gantry.yaml (did you mean `db1`?)",
            ],
        );
        check_errors(
            "    migrate: { service: web, command: [] }\n    other: { service: web }\n",
            &[
                "pipelines/hello.yaml:13:39: `deploy.tasks.migrate.command` needs a command, like [\"./migrate\", \"up\"]",
                "pipelines/hello.yaml:14:12: missing key `command` in `deploy.tasks.other`",
            ],
        );
        check_errors(
            "    migrate: { service: web, command: [x], when: later, timeout: 0s }\n",
            &[
                "pipelines/hello.yaml:13:50: `deploy.tasks.migrate.when` must be `before` or `after`, not `later`",
                "pipelines/hello.yaml:13:57: `deploy.tasks.migrate.timeout` must be longer than 0s",
            ],
        );
        check_errors(
            "    migrate: { service: web, comand: [x] }\n",
            &[
                "pipelines/hello.yaml:13:14: missing key `command` in `deploy.tasks.migrate`",
                "pipelines/hello.yaml:13:30: unknown key `comand` in `deploy.tasks.migrate` (did you mean `command`?)",
            ],
        );
        check_errors(
            "    bad/name: { service: web, command: [x] }\n    seed: { service: empty, command: [x] }\n",
            &[
                "pipelines/hello.yaml:13:5: task name `bad/name` may hold only letters, digits, `-`, `_` and `.`",
                "pipelines/hello.yaml:14:5: task `seed`: service `empty` has no instances to take a host from; give the task a `host`",
            ],
        );
        check_errors(
            "    migrate: { service: web, command: [x] }\n    migrate: { service: web, command: [y] }\n",
            &["pipelines/hello.yaml:14:5: duplicate key `migrate` in `deploy.tasks`"],
        );
    }
}
