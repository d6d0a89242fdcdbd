//! `images:`: several images from one commit, the services that run them, and what is
//! refused, each with the place it points at.

use super::tests::{check, load_files};

const SOURCE: &str = "\
source: { repo: https://git.example.com/team/shop.git }
build: { args: { VERSION: \"{{ commit.short }}\" }, target: base }
";

fn shop(images: &str, services: &str) -> String {
    format!("{SOURCE}images:\n{images}deploy:\n  services:\n{services}")
}

fn check_shop(images: &str, services: &str, expected: &[&str]) {
    check(
        &[("pipelines/shop.yaml", &shop(images, services))],
        expected,
    );
}

const TWO: &str = "  web: { repository: \"127.0.0.1:5000/shop/web\", target: web, args: { ROLE: web } }
  worker: { repository: \"127.0.0.1:5000/shop/worker\", dockerfile: worker/Dockerfile, context: app, tags: [w] }
";

#[test]
fn each_image_takes_the_pipeline_build_with_its_own_keys_over_it() {
    let services = "    web: { image: web, instances: { w1: {} } }\n    worker: { image: worker, instances: { k1: {} } }\n    db: { image: \"postgres:16\", accessory: true, instances: { db1: {} } }\n";
    let no_variables = |_: &str| None;
    let config = load_files(
        &[("pipelines/shop.yaml", &shop(TWO, services))],
        &no_variables,
    )
    .unwrap();
    let pipeline = &config.pipelines["shop"];
    let web = &pipeline.images["web"];
    assert_eq!(web.repository.to_string(), "127.0.0.1:5000/shop/web");
    assert_eq!(web.build.target.as_deref(), Some("web"));
    assert_eq!(
        web.build.args.keys().collect::<Vec<_>>(),
        ["ROLE", "VERSION"],
        "the pipeline's args and the image's"
    );
    assert_eq!(
        (web.build.context.as_str(), web.build.dockerfile.as_str()),
        ("", "Dockerfile")
    );
    let worker = &pipeline.images["worker"];
    assert_eq!(
        worker.build.target.as_deref(),
        Some("base"),
        "the pipeline's target"
    );
    assert_eq!(
        (
            worker.build.context.as_str(),
            worker.build.dockerfile.as_str()
        ),
        ("app", "worker/Dockerfile")
    );
    assert_eq!(worker.tags.len(), 1);
    let services = &pipeline.deploy.services;
    assert_eq!(pipeline.image_of(&services["web"]).unwrap().name, "web");
    assert_eq!(
        pipeline.image_of(&services["worker"]).unwrap().name,
        "worker"
    );
    assert!(pipeline.image_of(&services["db"]).is_none());
    assert_eq!(services["db"].accessory(), Some("postgres:16"));
}

#[test]
fn the_one_image_form_is_an_image_named_after_the_pipeline() {
    let text = format!(
        "{SOURCE}image: {{ repository: \"127.0.0.1:5000/shop/app\" }}\ndeploy:\n  services:\n    web: {{ instances: {{ w1: {{}} }} }}\n"
    );
    let no_variables = |_: &str| None;
    let config = load_files(&[("pipelines/shop.yaml", &text)], &no_variables).unwrap();
    let pipeline = &config.pipelines["shop"];
    assert_eq!(pipeline.images.keys().collect::<Vec<_>>(), ["shop"]);
    let web = &pipeline.deploy.services["web"];
    assert_eq!(pipeline.image_of(web).unwrap().name, "shop");
}

#[test]
fn a_service_of_a_pipeline_with_several_images_names_one() {
    check_shop(
        TWO,
        "    web: { instances: { w1: {} } }\n",
        &[
            "pipelines/shop.yaml:8:10: `deploy.services.web`: the pipeline builds several images (`web`, `worker`); name the one this service runs (`image: web`)",
        ],
    );
    check_shop(
        TWO,
        "    web: { image: wbe, instances: { w1: {} } }\n",
        &[
            "pipelines/shop.yaml:8:12: `deploy.services.web.image`: `wbe` is not one of the pipeline's images (`web`, `worker`) (did you mean `web`?); a service with an image of its own is an accessory (`accessory: true`)",
        ],
    );
}

#[test]
fn images_are_refused_with_the_place_they_go_wrong() {
    let services = "    web: { image: web, instances: { w1: {} } }\n";
    // Both forms at once.
    let text = format!(
        "{SOURCE}image: {{ repository: \"127.0.0.1:5000/shop/app\" }}\nimages:\n  web: {{ repository: \"127.0.0.1:5000/shop/web\" }}\n"
    );
    check(
        &[("pipelines/shop.yaml", &text)],
        &[
            "pipelines/shop.yaml:4:1: `image` and `images` exclude each other: `image` is the form for one image",
        ],
    );
    // Neither.
    check(
        &[("pipelines/shop.yaml", SOURCE)],
        &["pipelines/shop.yaml:1:1: missing key `image`"],
    );
    check_shop(
        "  {}\n",
        services,
        &[
            "pipelines/shop.yaml:4:3: `images` must name at least one image",
            "pipelines/shop.yaml:7:12: `deploy.services.web.image`: `web` is not one of the pipeline's images (); a service with an image of its own is an accessory (`accessory: true`)",
        ],
    );
    check_shop(
        "  web: { repository: \"127.0.0.1:5000/shop/web\" }\n  api: { repository: \"127.0.0.1:5000/shop/web\" }\n  \"we b\": { repository: \"127.0.0.1:5000/shop/x\", dockerfil: D, context: ../up }\n",
        services,
        &[
            "pipelines/shop.yaml:5:10: `images.api.repository`: image `web` pushes to 127.0.0.1:5000/shop/web too; give each image its own repository",
            "pipelines/shop.yaml:6:3: `images.we b`: an image name may hold only letters, digits, `-`, `_` and `.`",
            "pipelines/shop.yaml:6:50: unknown key `dockerfil` in `images.we b` (did you mean `dockerfile`?)",
            "pipelines/shop.yaml:6:73: `images.we b.context`: `../up` is outside the repository",
        ],
    );
    check_shop(
        "  web: { repository: \"reg.example.com/shop/web\", tags: [\"{{ nope }}\"] }\n",
        services,
        &[
            "pipelines/shop.yaml:4:22: `images.web.repository`: registry `reg.example.com` is not defined in gantry.yaml `registries` (add `reg.example.com: {}` to use the credentials in ~/.docker/config.json)",
            "pipelines/shop.yaml:4:57: `images.web.tags`: template `{{ nope }}` cannot be rendered: `nope` is undefined (known: commit.sha, commit.short, branch, run.number)",
        ],
    );
}

#[test]
fn a_task_runs_a_built_image_not_an_accessory() {
    let text = format!(
        "{SOURCE}image: {{ repository: \"127.0.0.1:5000/shop/app\" }}\ndeploy:\n  services:\n    db: {{ image: \"postgres:16\", accessory: true, instances: {{ db1: {{}} }} }}\n  tasks:\n    seed: {{ service: db, command: [seed] }}\n"
    );
    check(
        &[("pipelines/shop.yaml", &text)],
        &[
            "pipelines/shop.yaml:8:22: `deploy.tasks.seed.service`: `db` is an accessory; a task runs an image the pipeline builds",
        ],
    );
}
