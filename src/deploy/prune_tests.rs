//! `deploy::prune`'s decisions, without Docker: which images are the pipeline's, which
//! of them stay and why, and which `.previous` containers go.

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, ImageSummary};

use super::prune::*;
use crate::config::ImageRepository;

const REPOSITORY: &str = "127.0.0.1:5115/team/app";

fn summary(labels: &[(&str, &str)], tags: &[&str], digests: &[&str]) -> ImageSummary {
    ImageSummary {
        id: "sha256:image".into(),
        labels: labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        repo_tags: tags.iter().map(|tag| tag.to_string()).collect(),
        repo_digests: digests.iter().map(|digest| digest.to_string()).collect(),
        created: 100,
        ..ImageSummary::default()
    }
}

fn check_image(summary: ImageSummary, expected: Option<(&str, &[&str], bool)>) {
    let repository = ImageRepository::parse(REPOSITORY).unwrap();
    let found = pipeline_image(&summary, "app", &repository, Some("127.0.0.1:5117"));
    let found = found.as_ref().map(|image| {
        (
            image.name.as_str(),
            image.digests.iter().map(String::as_str).collect::<Vec<_>>(),
            image.named_elsewhere,
        )
    });
    let expected = expected.map(|(name, digests, elsewhere)| (name, digests.to_vec(), elsewhere));
    assert_eq!(found, expected, "{summary:?}");
}

#[test]
fn an_image_is_the_pipelines_by_its_labels_and_a_name_in_its_repository() {
    let built = [("gantry.pipeline", "app"), (LABEL_REVISION, "abc")];
    let pulled = "127.0.0.1:5115/team/app@sha256:d1";
    check_image(
        summary(&built, &[], &[pulled]),
        Some((pulled, &["sha256:d1"], false)),
    );
    // Built here and pushed: tags and the digest.
    check_image(
        summary(&built, &["127.0.0.1:5115/team/app:abc1234"], &[pulled]),
        Some((pulled, &["sha256:d1"], false)),
    );
    // Built, not pushed: only its tag.
    check_image(
        summary(&built, &["127.0.0.1:5115/team/app:abc1234"], &[]),
        Some(("127.0.0.1:5115/team/app:abc1234", &[], false)),
    );
    // Someone else's name for it too.
    check_image(
        summary(&built, &["mine:keep"], &[pulled]),
        Some((pulled, &["sha256:d1"], true)),
    );
    // Another pipeline's, no revision label, no labels, another repository.
    let other = [("gantry.pipeline", "other"), (LABEL_REVISION, "abc")];
    check_image(summary(&other, &[], &[pulled]), None);
    check_image(summary(&[("gantry.pipeline", "app")], &[], &[pulled]), None);
    check_image(
        summary(&[], &["127.0.0.1:5115/team/app:x"], &[pulled]),
        None,
    );
    check_image(
        summary(
            &built,
            &["127.0.0.1:5115/team/other:x"],
            &["127.0.0.1:5115/team/other@sha256:d1"],
        ),
        None,
    );
    check_image(summary(&built, &["<none>:<none>"], &[]), None);
    // Pulled through the registry's mirror: known by the mirror's name only.
    check_image(
        summary(&built, &[], &["127.0.0.1:5117/team/app@sha256:d1"]),
        Some((pulled, &["sha256:d1"], false)),
    );
    // Another registry's copy of the same path is not the pipeline's.
    check_image(
        summary(&built, &[], &["127.0.0.1:5118/team/app@sha256:d1"]),
        None,
    );
}

fn image(id: &str, created: u64, digest: &str) -> PipelineImage {
    PipelineImage {
        id: id.into(),
        digests: vec![digest.into()],
        name: format!("{REPOSITORY}@{digest}"),
        created: std::time::UNIX_EPOCH + std::time::Duration::from_secs(created),
        named_elsewhere: false,
    }
}

fn check_plan(
    images: Vec<PipelineImage>,
    keep: usize,
    protected: &[(&str, Keep)],
    in_use: &[&str],
    expected: &[(&str, Option<Keep>)],
) {
    let protected = protected
        .iter()
        .map(|(digest, why)| (digest.to_string(), *why))
        .collect();
    let in_use = in_use.iter().map(|id| id.to_string()).collect();
    let planned: Vec<(String, Option<Keep>)> = plan_images(images, keep, &protected, &in_use)
        .into_iter()
        .map(|(image, keep)| (image.id, keep))
        .collect();
    let expected: Vec<(String, Option<Keep>)> = expected
        .iter()
        .map(|(id, keep)| (id.to_string(), *keep))
        .collect();
    assert_eq!(planned, expected);
}

#[test]
fn the_newest_stay_and_so_does_whatever_is_protected_or_used() {
    let four = || {
        vec![
            image("a", 1, "sha256:1"),
            image("c", 3, "sha256:3"),
            image("b", 2, "sha256:2"),
            image("d", 4, "sha256:4"),
        ]
    };
    check_plan(
        four(),
        2,
        &[],
        &[],
        &[
            ("d", Some(Keep::Newest)),
            ("c", Some(Keep::Newest)),
            ("b", None),
            ("a", None),
        ],
    );
    // Running and rollback target stay even beyond `keep`; a protection names itself
    // before age does.
    check_plan(
        four(),
        1,
        &[
            ("sha256:4", Keep::Deployed),
            ("sha256:1", Keep::RollbackTarget),
        ],
        &["b"],
        &[
            ("d", Some(Keep::Deployed)),
            ("c", None),
            ("b", Some(Keep::InUse)),
            ("a", Some(Keep::RollbackTarget)),
        ],
    );
    let mut elsewhere = four();
    elsewhere[0].named_elsewhere = true;
    check_plan(
        elsewhere,
        3,
        &[],
        &[],
        &[
            ("d", Some(Keep::Newest)),
            ("c", Some(Keep::Newest)),
            ("b", Some(Keep::Newest)),
            ("a", Some(Keep::NamedElsewhere)),
        ],
    );
    // Two builds in one second: the id decides, the same way on every host.
    check_plan(
        vec![image("y", 5, "sha256:y"), image("x", 5, "sha256:x")],
        1,
        &[],
        &[],
        &[("x", Some(Keep::Newest)), ("y", None)],
    );
}

fn container(
    name: &str,
    state: ContainerSummaryStateEnum,
    labels: &[(&str, &str)],
) -> ContainerSummary {
    ContainerSummary {
        id: Some(format!("id-{name}")),
        names: Some(vec![format!("/{name}")]),
        state: Some(state),
        labels: Some(
            labels
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        ),
        ..ContainerSummary::default()
    }
}

#[test]
fn a_leftover_goes_when_it_is_the_pipelines_stopped_and_its_instance_has_a_container() {
    use ContainerSummaryStateEnum::{EXITED, RUNNING};
    let of = |instance: &'static str| [("gantry.pipeline", "app"), ("gantry.instance", instance)];
    let containers = vec![
        container("web-1", RUNNING, &of("web-1")),
        container("web-1.previous", EXITED, &of("web-1")),
        container("web-2", RUNNING, &of("web-2")),
        container("web-2.previous", RUNNING, &of("web-2")),
        // Its instance lost its container: the next deploy brings this one back.
        container("web-3.previous", EXITED, &of("web-3")),
        // Not the pipeline's, or not named after its own instance.
        container("mine.previous", EXITED, &[]),
        container(
            "theirs.previous",
            EXITED,
            &[("gantry.pipeline", "other"), ("gantry.instance", "theirs")],
        ),
        container("web-4.previous", EXITED, &of("web-1")),
        container("web-1-old", EXITED, &of("web-1")),
    ];
    let planned: Vec<(String, Option<Keep>)> = plan_leftovers(&containers, "app")
        .into_iter()
        .map(|leftover| (leftover.name, leftover.keep))
        .collect();
    assert_eq!(
        planned,
        vec![
            ("web-1.previous".to_string(), None),
            ("web-2.previous".to_string(), Some(Keep::Running)),
            ("web-3.previous".to_string(), Some(Keep::OnlyCopy)),
        ]
    );
}
