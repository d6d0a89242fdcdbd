//! The build context: the tar of a commit's files that the engine builds from.
//!
//! Files come from the commit's tree, never from a work tree, and symlinks go into
//! the tar as symlinks: their targets are never read, so a link that points out of
//! the repository cannot bring outside content in (the engine resolves links inside
//! the context only). This module does no IO beyond writing the tar where it is told.

use std::io;

use crate::source::{TreeFile, TreeFileKind};

/// What went into a context.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ContextSummary {
    pub files: usize,
    pub symlinks: usize,
    /// Files left out by `.dockerignore`.
    pub ignored: usize,
    /// Size of the tar.
    pub bytes: usize,
}

/// Packs files into an uncompressed tar written to `W` as they come, so that only
/// one file is in memory at a time; `mtime` is given to every entry so that the same
/// commit always makes the same bytes.
pub struct Packer<W: io::Write> {
    builder: tar::Builder<W>,
    mtime: u64,
    summary: ContextSummary,
}

impl<W: io::Write> Packer<W> {
    pub fn new(writer: W, mtime: u64) -> Packer<W> {
        Packer {
            builder: tar::Builder::new(writer),
            mtime,
            summary: ContextSummary::default(),
        }
    }

    pub fn append(&mut self, file: &TreeFile<'_>) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        match file.kind {
            TreeFileKind::File { executable } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if executable { 0o755 } else { 0o644 });
                header.set_size(file.content.len() as u64);
                self.builder
                    .append_data(&mut header, &file.path, &file.content[..])?;
                self.summary.files += 1;
            }
            TreeFileKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                let target = String::from_utf8_lossy(&file.content).into_owned();
                self.builder.append_link(&mut header, &file.path, target)?;
                self.summary.symlinks += 1;
            }
        }
        Ok(())
    }

    /// Ends the tar; the writer, and what went in (`ignored` and `bytes` are the caller's).
    pub fn finish(self) -> io::Result<(W, ContextSummary)> {
        Ok((self.builder.into_inner()?, self.summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_packed_as_links_without_content() {
        let files = vec![
            TreeFile {
                path: "app/run.sh".to_string(),
                kind: TreeFileKind::File { executable: true },
                content: b"#!/bin/sh\n".as_slice().into(),
            },
            TreeFile {
                path: "leak".to_string(),
                kind: TreeFileKind::Symlink,
                content: b"/etc/shadow".as_slice().into(),
            },
        ];
        let mut packer = Packer::new(Vec::new(), 1_700_000_000);
        for file in &files {
            packer.append(file).unwrap();
        }
        let (tar_bytes, summary) = packer.finish().unwrap();
        assert_eq!((summary.files, summary.symlinks), (1, 1));
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    header.entry_type(),
                    header.mode().unwrap(),
                    header.size().unwrap(),
                    entry
                        .link_name()
                        .unwrap()
                        .map(|link| link.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    "app/run.sh".to_string(),
                    tar::EntryType::Regular,
                    0o755,
                    10,
                    None
                ),
                (
                    "leak".to_string(),
                    tar::EntryType::Symlink,
                    0o777,
                    0,
                    Some("/etc/shadow".to_string())
                ),
            ]
        );
    }
}
