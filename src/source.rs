//! Git sources: a fetch cache per repository, resolving a branch or ref to one commit,
//! and reading that commit's files.
//!
//! Each repository is kept as a bare clone under `<state>/git/`, fetched incrementally
//! on every build; nothing is checked out to disk, because the build context is made
//! straight from the commit's tree (so a build never sees a stale or untracked file).
//! git2 is blocking: callers run these functions in `spawn_blocking`.

pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks,
    Repository, TreeWalkMode, TreeWalkResult,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Source, redact_urls, user_info};

/// How long connecting to a remote may take before libgit2 gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a remote may stay silent in the middle of a fetch or listing.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one fetch may take in all, however steadily data comes.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How many times the credentials callback may answer before giving up; libgit2
/// asks again after every refusal and would otherwise loop forever.
const MAX_CREDENTIAL_ATTEMPTS: usize = 3;

/// The refs a fetch brings into the cache: every branch, as remote-tracking refs, and every tag.
const FETCH_REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// Errors name the repository by `display_url`: never with its credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot fetch {repo}: {message}")]
    Fetch { repo: String, message: String },
    #[error("{reference}: no such branch, tag or commit in {repo}")]
    UnknownRef { repo: String, reference: String },
    #[error("commit {commit}: {message}")]
    Tree { commit: String, message: String },
    #[error("git cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// What a fetch did to the cache.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The bare repository that serves as the cache.
    pub cache: PathBuf,
    /// True when the cache did not exist and was made by this fetch.
    pub created: bool,
    /// Objects that came over the wire; zero when nothing changed upstream.
    pub received_objects: usize,
    pub received_bytes: usize,
}

/// One resolved commit.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub sha: String,
    pub short: String,
    pub message: String,
    pub author: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// A file of a commit's tree.
#[derive(Debug, Clone)]
pub struct TreeFile<'a> {
    /// Relative to the directory that was read, `/`-separated.
    pub path: String,
    pub kind: TreeFileKind,
    /// The file's bytes (borrowed from git's copy while it is visited); for a
    /// symlink, its target as written in the repository.
    pub content: std::borrow::Cow<'a, [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeFileKind {
    File { executable: bool },
    Symlink,
}

/// Bounds how long libgit2 waits for a remote: `CONNECT_TIMEOUT` to connect and
/// `SILENCE_TIMEOUT` between reads, so that a remote that stops answering fails a
/// fetch or a poll instead of holding its thread forever.
///
/// # Safety
/// libgit2 keeps these settings in globals without synchronization: call this once,
/// before any thread that uses git starts.
pub unsafe fn bound_network_waits() {
    // libgit2 takes an `int` of milliseconds.
    let millis = |duration: Duration| i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the caller guarantees no other thread uses libgit2 yet.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(CONNECT_TIMEOUT));
        let _ = git2::opts::set_server_timeout_in_milliseconds(millis(SILENCE_TIMEOUT));
    }
}

/// How many characters of a commit id are shown, as `git rev-parse --short` does.
pub const SHORT_COMMIT: usize = 7;

/// The first `chars` characters of `text`, never cut inside a character: for showing
/// commit ids and other ids that arrived from outside and may be anything.
pub fn prefix(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// A commit id as people read it: its first `SHORT_COMMIT` characters.
pub fn short_commit(commit: &str) -> &str {
    prefix(commit, SHORT_COMMIT)
}

/// A full commit id: 40 hex digits (SHA-1), or 64 (SHA-256 repositories).
pub fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// A repository URL as it may be shown: without its user info, which may hold a token.
pub fn display_url(url: &str) -> String {
    redact_urls(url)
}

/// A message about `source` made safe to show: URLs without user info, and the
/// credentials masked wherever the message quotes them without a URL (libgit2 names a
/// `file://` path with its user info, for one). A user name alone (`git`) is left
/// readable unless it is quoted with its `@`, where it may be a token.
fn scrub(source: &Source, message: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some(user_info) = user_info(&source.repo) {
        secrets.push(format!("{user_info}@"));
        if let Some((_, password)) = user_info.split_once(':') {
            secrets.push(password.to_string());
        }
    }
    if let Some(token) = &source.token {
        secrets.push(token.expose_secret().to_string());
    }
    let mut scrubbed = redact_urls(message);
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        let mask = if secret.ends_with('@') { "***@" } else { "***" };
        scrubbed = scrubbed.replace(secret.as_str(), mask);
    }
    scrubbed
}

/// Where the cache of a repository lives: one directory per URL, named by its hash.
pub fn cache_path(cache_root: &Path, repo: &str) -> PathBuf {
    let digest = Sha256::digest(repo.as_bytes());
    cache_root.join(format!("{}.git", &hex::encode(digest)[..16]))
}

/// Fetches every branch and tag of `source.repo` into its cache, creating the cache the first time.
pub fn fetch(source: &Source, cache_root: &Path) -> Result<FetchReport, SourceError> {
    let path = cache_path(cache_root, &source.repo);
    let cache_error = |message: String| SourceError::Cache {
        path: path.clone(),
        message,
    };
    // One fetch into a cache at a time, across runs and processes: libgit2 refuses
    // to write a ref or the config while another writer holds its lock file.
    std::fs::create_dir_all(cache_root).map_err(|error| cache_error(error.to_string()))?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .map_err(|error| cache_error(error.to_string()))?;
    lock_file
        .lock()
        .map_err(|error| cache_error(format!("locking the cache: {error}")))?;
    let (repository, created) = match Repository::open_bare(&path) {
        Ok(repository) => (repository, false),
        Err(_) => {
            std::fs::create_dir_all(&path).map_err(|error| cache_error(error.to_string()))?;
            let repository = Repository::init_bare(&path)
                .map_err(|error| cache_error(error.message().to_string()))?;
            (repository, true)
        }
    };
    let fetch_error = |message: String| SourceError::Fetch {
        repo: display_url(&source.repo),
        message: scrub(source, &message),
    };
    let mut remote = repository
        .remote_anonymous(&source.repo)
        .map_err(|error| fetch_error(error.message().to_string()))?;
    let mut options = FetchOptions::new();
    let mut remote_callbacks = callbacks(source);
    // A fetch that goes on past its deadline is cancelled at its next progress report.
    let deadline = Instant::now() + FETCH_TIMEOUT;
    remote_callbacks.transfer_progress(move |_| Instant::now() < deadline);
    options.remote_callbacks(remote_callbacks);
    options.download_tags(AutotagOption::All);
    remote
        .fetch(&FETCH_REFSPECS, Some(&mut options), None)
        .map_err(|error| {
            if Instant::now() >= deadline {
                fetch_error(format!(
                    "the fetch took longer than {}",
                    humantime::format_duration(FETCH_TIMEOUT)
                ))
            } else {
                fetch_error(error.message().to_string())
            }
        })?;
    let stats = remote.stats();
    Ok(FetchReport {
        cache: path,
        created,
        received_objects: stats.received_objects(),
        received_bytes: stats.received_bytes(),
    })
}

/// The remote's branch heads (`refs/heads/NAME` → commit id), listed without fetching
/// anything: what a poll asks before deciding whether a fetch is worth it.
pub fn remote_heads(source: &Source) -> Result<Vec<(String, String)>, SourceError> {
    let fetch_error = |message: String| SourceError::Fetch {
        repo: display_url(&source.repo),
        message: scrub(source, &message),
    };
    let mut remote = git2::Remote::create_detached(source.repo.as_str())
        .map_err(|error| fetch_error(error.message().to_string()))?;
    let connection = remote
        .connect_auth(git2::Direction::Fetch, Some(callbacks(source)), None)
        .map_err(|error| fetch_error(error.message().to_string()))?;
    let heads = connection
        .list()
        .map_err(|error| fetch_error(error.message().to_string()))?
        .iter()
        .filter(|head| head.name().starts_with("refs/heads/"))
        .map(|head| (head.name().to_string(), head.oid().to_string()))
        .collect();
    Ok(heads)
}

/// Whether `commit` is `ancestor` or comes after it in history (both must be in the cache).
pub fn is_descendant(cache: &Path, commit: &str, ancestor: &str) -> Result<bool, SourceError> {
    let repository = open(cache)?;
    let tree_error = |message: String| SourceError::Tree {
        commit: commit.to_string(),
        message,
    };
    let commit_id =
        Oid::from_str(commit).map_err(|error| tree_error(error.message().to_string()))?;
    let ancestor_id =
        Oid::from_str(ancestor).map_err(|error| tree_error(error.message().to_string()))?;
    if commit_id == ancestor_id {
        return Ok(true);
    }
    repository
        .graph_descendant_of(commit_id, ancestor_id)
        .map_err(|error| tree_error(error.message().to_string()))
}

/// Credentials for https (token) and ssh (key file, then agent), with a bounded number of tries.
fn callbacks(source: &Source) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if attempts > MAX_CREDENTIAL_ATTEMPTS {
            return Err(git2::Error::from_str(
                "authentication failed: the remote refused every credential gantry has for it",
            ));
        }
        let username = source
            .username
            .as_deref()
            .or(username_from_url)
            .unwrap_or("git");
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &source.token
        {
            return Cred::userpass_plaintext(username, token.expose_secret());
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            return match &source.ssh_key {
                Some(key) => Cred::ssh_key(username, None, key, None),
                None => Cred::ssh_key_from_agent(username),
            };
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username);
        }
        Err(git2::Error::from_str(
            "the remote asks for credentials; set `source.token` (https) or `source.ssh_key` (ssh)",
        ))
    });
    callbacks
}

/// Resolves the branch head (no `reference`) or a given branch, tag or commit id to a commit.
pub fn resolve(
    cache: &Path,
    source: &Source,
    reference: Option<&str>,
) -> Result<Commit, SourceError> {
    let repository = open(cache)?;
    let wanted = reference.unwrap_or(&source.branch);
    let unknown = || SourceError::UnknownRef {
        repo: display_url(&source.repo),
        reference: wanted.to_string(),
    };
    // A branch name wins over a commit id prefix, as in git itself.
    let candidates = [
        format!("refs/remotes/origin/{wanted}"),
        format!("refs/tags/{wanted}"),
        wanted.to_string(),
    ];
    let object = candidates
        .iter()
        .find_map(|candidate| repository.revparse_single(candidate).ok())
        .ok_or_else(unknown)?;
    let commit = object.peel_to_commit().map_err(|_| unknown())?;
    let sha = commit.id().to_string();
    Ok(Commit {
        short: short_commit(&sha).to_string(),
        message: commit
            .summary_bytes()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default(),
        author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
        time: commit.time().seconds(),
        sha,
    })
}

fn open(cache: &Path) -> Result<Repository, SourceError> {
    Repository::open_bare(cache).map_err(|error| SourceError::Cache {
        path: cache.to_path_buf(),
        message: error.message().to_string(),
    })
}

/// Reads one file of a commit, `None` when it does not exist or is not a regular file.
pub fn read_file(cache: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
    let repository = open(cache)?;
    let tree = commit_tree(&repository, commit)?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(None);
    };
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
        return Ok(None);
    }
    let blob = repository
        .find_blob(entry.id())
        .map_err(|error| tree_error(commit, error))?;
    Ok(Some(blob.content().to_vec()))
}

/// Visits every file under `directory` (empty for the root) of a commit that `keep`
/// accepts, one at a time, so that only one file's content is in memory at once.
/// Symlinks come as symlinks with their target; they are never followed.
pub fn walk_tree(
    cache: &Path,
    commit: &str,
    directory: &str,
    keep: &dyn Fn(&str) -> bool,
    visit: &mut dyn FnMut(TreeFile<'_>) -> Result<(), String>,
) -> Result<(), SourceError> {
    let repository = open(cache)?;
    let root = commit_tree(&repository, commit)?;
    let tree = if directory.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(directory))
            .map_err(|_| SourceError::Tree {
                commit: commit.to_string(),
                message: format!("the build context `{directory}` does not exist"),
            })?;
        // A symlinked context directory is a blob here, so it can never lead outside.
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(SourceError::Tree {
                commit: commit.to_string(),
                message: format!("the build context `{directory}` is not a directory"),
            });
        }
        repository
            .find_tree(entry.id())
            .map_err(|error| tree_error(commit, error))?
    };

    // The walk only lists (paths and ids); contents are read afterwards, one by one.
    let mut wanted = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            // Trees are walked into; submodule links (commits) have no content here.
            return TreeWalkResult::Ok;
        }
        let path = format!("{parent}{}", entry.name().unwrap_or_default());
        if keep(&path) {
            wanted.push((path, entry.id(), entry.filemode()));
        }
        TreeWalkResult::Ok
    })
    .map_err(|error| tree_error(commit, error))?;

    for (path, id, mode) in wanted {
        let blob = repository
            .find_blob(id)
            .map_err(|error| tree_error(commit, error))?;
        let kind = match mode {
            0o120000 => TreeFileKind::Symlink,
            0o100755 => TreeFileKind::File { executable: true },
            _ => TreeFileKind::File { executable: false },
        };
        visit(TreeFile {
            path,
            kind,
            content: std::borrow::Cow::Borrowed(blob.content()),
        })
        .map_err(|message| SourceError::Tree {
            commit: commit.to_string(),
            message,
        })?;
    }
    Ok(())
}

fn commit_tree<'r>(
    repository: &'r Repository,
    commit: &str,
) -> Result<git2::Tree<'r>, SourceError> {
    let oid = Oid::from_str(commit).map_err(|error| tree_error(commit, error))?;
    repository
        .find_commit(oid)
        .and_then(|found| found.tree())
        .map_err(|error| tree_error(commit, error))
}

fn tree_error(commit: &str, error: git2::Error) -> SourceError {
    SourceError::Tree {
        commit: commit.to_string(),
        message: error.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_about_a_source_never_quote_its_credentials() {
        let source = Source {
            repo: "file://deploy:p4ss@/srv/repo".to_string(),
            branch: "main".to_string(),
            poll: None,
            webhook: None,
            token: Some(secrecy::SecretString::from("tok3n".to_string())),
            username: None,
            ssh_key: None,
        };
        assert_eq!(
            scrub(
                &source,
                "failed to resolve path 'deploy:p4ss@/srv/repo'; token tok3n; file://deploy:p4ss@/srv/repo"
            ),
            "failed to resolve path '***@/srv/repo'; token ***; file:///srv/repo"
        );
    }

    #[test]
    fn scrubbing_masks_a_whole_password_and_leaves_a_plain_user_name_readable() {
        let source = |repo: &str| Source {
            repo: repo.to_string(),
            branch: "main".to_string(),
            poll: None,
            webhook: None,
            token: None,
            username: None,
            ssh_key: None,
        };
        // A password with an `@` in it: user info ends at the authority's last `@`.
        assert_eq!(
            scrub(
                &source("https://ci:p@ss@example.com/team/app.git"),
                "the path p@ss/x of https://ci:p@ss@example.com/team/app.git"
            ),
            "the path ***/x of https://example.com/team/app.git"
        );
        // `git` is an account, not a secret: the message stays as it was.
        let message = "failed to connect to github.com: team/app.git; gitlab too";
        assert_eq!(
            scrub(&source("ssh://git@github.com/team/app.git"), message),
            message
        );
        // A token given as the user name is masked where it is quoted with its `@`.
        assert_eq!(
            scrub(
                &source("https://ghp0123456789abcdef@example.com/app.git"),
                "path 'ghp0123456789abcdef@example.com/app.git' not found"
            ),
            "path '***@example.com/app.git' not found"
        );
    }
}
