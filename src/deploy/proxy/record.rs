//! gantry's record of a proxy's routes, a file in the proxy container
//! (`FILES_DIR/routes.json`, in its config volume) that every gantry sharing the host
//! reads and writes through the engine's archive API. Reading a file that way costs the
//! engine a helper process (about 50 ms measured) where a stat of it costs about 1 ms.
//! So every file gantry writes there carries a stamp of its contents as its
//! modification time (31 bits of its SHA-256), and a record this process already holds
//! is read again only when a stat shows another stamp or size. A file written without
//! a stamp (by an older gantry) never matches, and is always read.

use bollard::Docker;
use bollard::query_parameters::{
    ContainerArchiveInfoOptions, DownloadFromContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::routes::Routes;
use super::{FILES_DIR, PROXY_CONTAINER, ROUTES_FILE, failure};
use crate::deploy::container::DockerCallError;
use crate::host::describe_error;

/// A record as this process last read or wrote it.
#[derive(Debug, Clone)]
pub struct Known {
    pub routes: Routes,
    /// The stamp and size of the file that holds it; `None`: unknown, read it again.
    stored: Option<(u64, u64)>,
}

impl Known {
    /// The record written as `stored` (its file's bytes).
    pub fn stored_as(routes: Routes, stored: &[u8]) -> Known {
        Known {
            routes,
            stored: Some((stamp(stored), stored.len() as u64)),
        }
    }

    /// A record whose file is not known: the next look reads it again.
    pub fn unstamped(routes: Routes) -> Known {
        Known {
            routes,
            stored: None,
        }
    }

    /// Whether the proxy's file still is this record, by a stat of it.
    pub async fn is_current(&self, docker: &Docker) -> bool {
        let Some((stamp, size)) = self.stored else {
            return false;
        };
        let options = ContainerArchiveInfoOptions {
            path: format!("{FILES_DIR}/{ROUTES_FILE}"),
        };
        let Ok(stat) = docker
            .get_container_archive_info(PROXY_CONTAINER, Some(options))
            .await
        else {
            return false;
        };
        let modified = stat
            .modification_time
            .as_deref()
            .and_then(|time| humantime::parse_rfc3339_weak(time).ok())
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok());
        modified.map(|since| since.as_secs()) == Some(stamp) && stat.size == size as i64
    }
}

/// The stamp a file's contents give it: the first 31 bits of their SHA-256, as seconds
/// since the epoch (a date before 2038, which every engine and file system keeps).
pub fn stamp(contents: &[u8]) -> u64 {
    let digest = Sha256::digest(contents);
    u64::from(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 1)
}

/// The record in the host's proxy; `None` when the proxy has none (or is gone).
pub async fn read(docker: &Docker) -> Result<Option<Known>, DockerCallError> {
    let options = DownloadFromContainerOptions {
        path: format!("{FILES_DIR}/{ROUTES_FILE}"),
    };
    let mut stream = docker.download_from_container(PROXY_CONTAINER, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(error) => {
                return Err(failure(
                    "reading the proxy's routes",
                    describe_error(&error),
                ));
            }
        }
    }
    let unreadable = |error: String| failure("reading the proxy's routes", error);
    let mut tar = tar::Archive::new(archive.as_slice());
    let mut entries = tar
        .entries()
        .map_err(|error| unreadable(error.to_string()))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut text = Vec::new();
    entry
        .and_then(|mut entry| std::io::Read::read_to_end(&mut entry, &mut text))
        .map_err(|error| unreadable(error.to_string()))?;
    let routes = serde_json::from_slice(&text).map_err(|error| unreadable(error.to_string()))?;
    Ok(Some(Known::stored_as(routes, &text)))
}

/// The record in the host's proxy, or an empty one (unstamped) when it has none.
pub async fn read_or_empty(docker: &Docker) -> Result<Known, DockerCallError> {
    Ok(read(docker)
        .await?
        .unwrap_or_else(|| Known::unstamped(Routes::default())))
}

/// Writes files into the container's `FILES_DIR`, in one archive, each stamped.
pub async fn write(docker: &Docker, files: &[(&str, &[u8])]) -> Result<(), DockerCallError> {
    let mut archive = tar::Builder::new(Vec::new());
    let append = |archive: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], dir: bool| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if dir { 0o755 } else { 0o644 });
        header.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_mtime(if dir { 0 } else { stamp(data) });
        header.set_cksum();
        archive.append_data(&mut header, path, data)
    };
    let write_error =
        |error: std::io::Error| failure("writing the proxy's config", error.to_string());
    append(&mut archive, "gantry/", &[], true).map_err(write_error)?;
    for (name, contents) in files {
        append(&mut archive, &format!("gantry/{name}"), contents, false).map_err(write_error)?;
    }
    let bytes = archive.into_inner().map_err(write_error)?;
    let options = UploadToContainerOptions {
        path: "/config".to_string(),
        ..UploadToContainerOptions::default()
    };
    docker
        .upload_to_container(
            PROXY_CONTAINER,
            Some(options),
            bollard::body_full(bytes.into()),
        )
        .await
        .map_err(|error| failure("writing the proxy's config", describe_error(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_a_date_before_2038_that_changes_with_the_contents() {
        let one = stamp(b"{\"sites\":{}}");
        assert_eq!(one, stamp(b"{\"sites\":{}}"));
        assert_ne!(one, stamp(b"{\"sites\":{ }}"));
        assert!(one < 1 << 31);
    }
}
