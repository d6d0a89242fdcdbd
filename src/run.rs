//! The words of a run: its identity (`RunId`), what it does (`RunKind`), where it
//! stands (`RunState`), what started it (`Trigger`), its stages (`Stage`) and how a
//! stage ended (`Outcome`).
//!
//! Every module speaks these types; they become text only where they are stored
//! (`store`'s SQL) and shown (JSON, the dashboard, the command line), always through
//! `as_str`/`Display` and `FromStr` here, so a `match` anywhere names every case.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's identity: the row id and the per-pipeline number users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunId {
    pub id: i64,
    pub number: i64,
}

/// Text that names none of a vocabulary's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {what}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub text: String,
}

/// Declares a closed set of words: the enum, its text, and parsing back.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<$name, UnknownWord> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord { what: $what, text: text.to_string() }),
                }
            }
        }
    };
}

vocabulary!(
    /// What a run does.
    RunKind, "run kind", {
        /// Checkout, context, build, push.
        Build => "build",
        /// A build, then a deploy of what it pushed.
        Run => "run",
        /// A deploy of an image built before.
        Deploy => "deploy",
        /// A deploy of an earlier deployment's image, which pins the pipeline.
        Rollback => "rollback",
    }
);

vocabulary!(
    /// Where a run stands.
    RunState, "run state", {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// A newer trigger of the pipeline replaced it while it waited.
        Coalesced => "coalesced",
        /// The pipeline is pinned: it was recorded, not done.
        Held => "held",
        /// Nothing to do: its commit is deployed already, or older than the deployed one.
        Skipped => "skipped",
        /// gantry stopped while it went; it was queued again.
        Interrupted => "interrupted",
    }
);

impl RunState {
    /// Whether the run has ended.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }

    /// Whether it ended having done nothing to the instances.
    pub fn did_nothing(self) -> bool {
        matches!(
            self,
            RunState::Coalesced | RunState::Skipped | RunState::Held
        )
    }
}

vocabulary!(
    /// How a stage (or a run, or a deployment) ended.
    Outcome, "outcome", {
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

vocabulary!(
    /// The stages of runs, in the order they go.
    Stage, "stage", {
        /// Fetch into the cache and resolve the commit.
        Checkout => "checkout",
        /// The build context's tar.
        Context => "context",
        Build => "build",
        /// Every tag, then the digest confirmed with the registry.
        Push => "push",
        /// Which image a deploy rolls out (and whether a pin allows it).
        Resolve => "resolve",
        /// The pipeline's deploy lease.
        Lease => "lease",
        /// The image pulled on every host before anything changes.
        Pull => "pull",
        Deploy => "deploy",
        /// Recording the run failed (the state store could not write).
        Record => "record",
    }
);

/// What started a run. Stored and shown as text: `manual`, `api`, `dashboard`,
/// `poll`, `retry`, or `webhook FORGE [DELIVERY]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Trigger {
    /// A `gantry` command in the foreground, or `gantry trigger`.
    #[default]
    Manual,
    Api,
    Dashboard,
    Poll,
    /// A run gantry queued again after it was interrupted.
    Retry,
    Webhook {
        forge: String,
        delivery: Option<String>,
    },
}

impl Trigger {
    /// Whether the trigger is a forge's or the poller's, not a person's: such runs skip
    /// the commit the newest deployment rolled out.
    pub fn is_automatic(&self) -> bool {
        matches!(self, Trigger::Webhook { .. } | Trigger::Poll)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Manual => formatter.write_str("manual"),
            Trigger::Api => formatter.write_str("api"),
            Trigger::Dashboard => formatter.write_str("dashboard"),
            Trigger::Poll => formatter.write_str("poll"),
            Trigger::Retry => formatter.write_str("retry"),
            Trigger::Webhook {
                forge,
                delivery: Some(delivery),
            } => write!(formatter, "webhook {forge} {delivery}"),
            Trigger::Webhook {
                forge,
                delivery: None,
            } => write!(formatter, "webhook {forge}"),
        }
    }
}

impl FromStr for Trigger {
    type Err = UnknownWord;

    fn from_str(text: &str) -> Result<Trigger, UnknownWord> {
        match text {
            "manual" => Ok(Trigger::Manual),
            "api" => Ok(Trigger::Api),
            "dashboard" => Ok(Trigger::Dashboard),
            "poll" => Ok(Trigger::Poll),
            "retry" => Ok(Trigger::Retry),
            _ => {
                let mut words = text.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("webhook"), Some(forge), delivery) if !forge.is_empty() => {
                        Ok(Trigger::Webhook {
                            forge: forge.to_string(),
                            delivery: delivery.map(str::to_string),
                        })
                    }
                    _ => Err(UnknownWord {
                        what: "trigger",
                        text: text.to_string(),
                    }),
                }
            }
        }
    }
}

impl TryFrom<String> for Trigger {
    type Error = UnknownWord;

    fn try_from(text: String) -> Result<Trigger, UnknownWord> {
        text.parse()
    }
}

impl From<Trigger> for String {
    fn from(trigger: Trigger) -> String {
        trigger.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        for kind in [
            RunKind::Build,
            RunKind::Run,
            RunKind::Deploy,
            RunKind::Rollback,
        ] {
            assert_eq!(kind.as_str().parse::<RunKind>(), Ok(kind));
        }
        for state in [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Coalesced,
            RunState::Held,
            RunState::Skipped,
            RunState::Interrupted,
        ] {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        for trigger in [
            Trigger::Manual,
            Trigger::Retry,
            Trigger::Webhook {
                forge: "github".into(),
                delivery: Some("d 1".into()),
            },
            Trigger::Webhook {
                forge: "gitlab".into(),
                delivery: None,
            },
        ] {
            assert_eq!(trigger.to_string().parse::<Trigger>(), Ok(trigger.clone()));
            let json = serde_json::to_string(&trigger).unwrap();
            assert_eq!(serde_json::from_str::<Trigger>(&json).unwrap(), trigger);
        }
        assert_eq!(
            "webhook github d-1".parse::<Trigger>().unwrap().to_string(),
            "webhook github d-1"
        );
        assert!("nobody".parse::<Trigger>().is_err());
        assert!("bogus".parse::<Stage>().is_err());
        assert!(Trigger::Poll.is_automatic() && !Trigger::Api.is_automatic());
    }
}
