//! Reading Debian binary packages (`.deb`): the `ar` container and its `data.tar.*` member.
//!
//! A `.deb` is an `ar` archive holding `debian-binary` (`2.0\n`), `control.tar.*` and
//! `data.tar.*`, in that order. This module finds members and hands out a reader of the
//! (still compressed) `data.tar` stream plus its compression; unpacking it safely is
//! [`crate::archive`]'s job, deciding which debs to read is [`crate::rootfs`]'s. Maintainer
//! scripts and control files are never looked at.
//!
//! The `ar` format (as written by `dpkg-deb`): the magic `!<arch>\n`, then per member a
//! 60-byte header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10 — decimal ASCII, padded
//! with spaces — and the terminator "\`\n"), the member's bytes, and one `\n` of padding when
//! the size is odd. GNU-style names end with `/`. Nothing else of the format is needed.

use crate::archive::Compression;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: u64 = 60;
/// A .deb has three members; a few more are tolerated (dpkg ignores `_`-prefixed extras), a
/// long list means this is not a .deb.
const MAX_MEMBERS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("could not read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a well-formed `.deb` (`what` says how).
    #[error("{} is not a valid .deb: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
}

/// One member of the `ar` container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name without padding or GNU's trailing `/`.
    pub name: String,
    /// Offset of the member's bytes in the file.
    pub offset: u64,
    pub size: u64,
}

/// Lists the members of the `.deb` at `path`, checking the container's structure and that
/// it starts with `debian-binary` saying format 2.x.
pub fn members(path: &Path) -> Result<Vec<Member>, DebError> {
    let io_err = |source| DebError::Io {
        path: path.to_owned(),
        source,
    };
    let bad = |what: String| DebError::Malformed {
        path: path.to_owned(),
        what,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut magic = [0u8; 8];
    if !read_exact_or(&mut file, &mut magic).map_err(io_err)? {
        return Err(bad("file too short".into()));
    }
    if &magic != MAGIC {
        return Err(bad("missing the ar magic `!<arch>`".into()));
    }
    let mut out = Vec::new();
    let mut pos = MAGIC.len() as u64;
    while pos < len {
        if out.len() == MAX_MEMBERS {
            return Err(bad(format!("more than {MAX_MEMBERS} ar members")));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        if !read_exact_or(&mut file, &mut header).map_err(io_err)? {
            return Err(bad(format!("truncated ar header at offset {pos}")));
        }
        if &header[58..60] != b"`\n" {
            return Err(bad(format!("bad ar header terminator at offset {pos}")));
        }
        let name = std::str::from_utf8(&header[..16])
            .map_err(|_| bad(format!("member name at offset {pos} is not ASCII")))?
            .trim_end_matches(' ')
            .trim_end_matches('/')
            .to_string();
        let size_text = std::str::from_utf8(&header[48..58])
            .map_err(|_| bad(format!("member {name:?}: size is not ASCII")))?
            .trim_end_matches(' ');
        let size: u64 = size_text
            .parse()
            .map_err(|_| bad(format!("member {name:?}: size {size_text:?} is not a decimal number")))?;
        let offset = pos + HEADER_LEN;
        let end = offset.checked_add(size).filter(|end| *end <= len).ok_or_else(|| {
            bad(format!(
                "member {name:?} ({size} bytes) runs past the end of the file ({len} bytes)"
            ))
        })?;
        out.push(Member { name, offset, size });
        // Members start at even offsets.
        pos = end + (end % 2);
    }
    match out.first() {
        Some(m) if m.name == "debian-binary" => {
            let mut version = vec![0u8; m.size.min(16) as usize];
            file.seek(SeekFrom::Start(m.offset)).map_err(io_err)?;
            file.read_exact(&mut version).map_err(io_err)?;
            if !version.starts_with(b"2.") {
                return Err(bad(format!(
                    "unsupported format version {:?} (expected 2.x)",
                    String::from_utf8_lossy(&version).trim_end()
                )));
            }
        }
        _ => return Err(bad("the first ar member is not `debian-binary`".into())),
    }
    Ok(out)
}

/// The `data.tar*` member: a reader limited to its bytes (still compressed), its compression,
/// and the member's name (for messages).
pub fn data(path: &Path) -> Result<(impl Read, Compression, String), DebError> {
    let member = members(path)?
        .into_iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| DebError::Malformed {
            path: path.to_owned(),
            what: "no data.tar member".into(),
        })?;
    let compression = match member.name.as_str() {
        "data.tar" => Compression::None,
        "data.tar.gz" => Compression::Gzip,
        "data.tar.xz" => Compression::Xz,
        "data.tar.zst" => Compression::Zstd,
        "data.tar.bz2" => Compression::Bzip2,
        other => {
            return Err(DebError::Malformed {
                path: path.to_owned(),
                what: format!("unsupported data member {other:?} (expected data.tar, .gz, .xz, .zst or .bz2)"),
            })
        }
    };
    let io_err = |source| DebError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    file.seek(SeekFrom::Start(member.offset)).map_err(io_err)?;
    Ok((file.take(member.size), compression, member.name))
}

/// A decompressing reader of the `data.tar` stream (for callers that read single entries
/// with the `tar` crate instead of unpacking everything with [`crate::archive::unpack`]).
pub fn decoder<'a>(reader: impl Read + 'a, compression: Compression) -> io::Result<Box<dyn Read + 'a>> {
    let raw = BufReader::with_capacity(256 << 10, reader);
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(raw)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
    })
}

/// `read_exact`, but a clean end of file gives `Ok(false)` instead of an error.
fn read_exact_or(file: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Test helper: the bytes of an `ar` archive with `members` (name, content), as dpkg-deb
/// writes them. Used by this module's and [`crate::rootfs`]'s tests to make synthetic debs.
#[cfg(test)]
pub(crate) fn ar_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (name, content) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            content.len()
        );
        assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        if content.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("x.deb");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_members_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &ar_bytes(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", b"abc"),
                ("data.tar.gz", b"hello"),
            ]),
        );
        let m = members(&p).unwrap();
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["debian-binary", "control.tar.xz", "data.tar.gz"]
        );
        // control.tar.xz has an odd size: the next member starts after one padding byte.
        assert_eq!(m[2].offset, m[1].offset + 3 + 1 + HEADER_LEN);
        let (mut r, c, name) = data(&p).unwrap();
        assert_eq!((c, name.as_str()), (Compression::Gzip, "data.tar.gz"));
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn gnu_style_names_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &ar_bytes(&[("debian-binary/", b"2.0\n"), ("data.tar.zst/", b"z")]),
        );
        let (_, c, _) = data(&p).unwrap();
        assert_eq!(c, Compression::Zstd);
    }

    #[test]
    fn malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "too short"),
            (b"PK\x03\x04xxxx".to_vec(), "ar magic"),
            (ar_bytes(&[("data.tar.xz", b"x")]), "first ar member"),
            (ar_bytes(&[("debian-binary", b"3.0\n")]), "format version"),
            (
                ar_bytes(&[("debian-binary", b"2.0\n"), ("control.tar.xz", b"x")]),
                "no data.tar",
            ),
            (
                ar_bytes(&[("debian-binary", b"2.0\n"), ("data.tar.lzma", b"x")]),
                "unsupported data member",
            ),
        ];
        for (bytes, expected) in cases {
            let p = write(dir.path(), &bytes);
            let err = data(&p).err().expect("must fail").to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
        // A size field pointing past the end of the file.
        let mut bytes = ar_bytes(&[("debian-binary", b"2.0\n"), ("data.tar", b"ab")]);
        let at = bytes.len() - 2 - 60 + 48; // the size field of the last header
        bytes[at..at + 4].copy_from_slice(b"9999");
        let p = write(dir.path(), &bytes);
        assert!(data(&p).err().unwrap().to_string().contains("runs past the end"));
    }
}
