//! Archives and tree digests: deterministic packing, safe unpacking, and per-file digests of a
//! directory tree.
//!
//! This module owns three jobs:
//!
//! * **Safe unpacking** ([`unpack`], [`unpack_file`]) of tar archives, plain or compressed with
//!   gzip, xz, bzip2 or zstd. Sources come from the internet, so every entry is checked before
//!   anything is written (see [`unpack`] for the exact rules). If unpacking fails, the destination
//!   is left partly populated: **the caller must delete `dest`** (it is never cleaned up here, so
//!   that a failure can be inspected).
//! * **Deterministic packing** ([`pack`]) of one or more trees (package outputs) into a single
//!   archive whose bytes depend only on the trees' names, contents, kinds, normalized modes and the
//!   options, never on mtimes, owners, creation order, inode numbers or the number of cores.
//! * **Tree digests** ([`manifest`], [`Manifest::digest`], [`tree_digest`], [`sha256_file`]): a
//!   sorted per-file listing with SHA-256 of each file, and one digest over its canonical encoding.
//!
//! It does **not** decide the hashing policy of the store (what is hashed to name an output, and
//! whether an archive is identified by its compressed bytes or by the manifest of its contents).
//! A hint for that policy: compressed bytes are reproducible for a given hb build, but may change
//! when a compression library is upgraded; manifest digests do not depend on any of them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size of the buffers used to read files (hashing, packing) and to feed (de)compressors.
const IO_BUF: usize = 1 << 20;
/// Size of the buffers between the tar framing and the (de)compressors.
const STREAM_BUF: usize = 256 << 10;
/// Tar block size.
const BLOCK: u64 = 512;
/// GNU tar pads archives to a multiple of its default record size (20 blocks).
const RECORD: u64 = 20 * BLOCK;
/// The gzip OS byte we write: 3 (Unix), which is what `gzip -n` writes on Linux.
pub const GZIP_OS_BYTE: u8 = 3;
/// Default gzip level (as `gzip` itself).
pub const DEFAULT_GZIP_LEVEL: i32 = 6;
/// Default zstd level: 3 (zstd's own default; fast, with a good ratio).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default xz preset (as `xz` itself).
pub const DEFAULT_XZ_LEVEL: i32 = 6;
/// Default bzip2 block size level (as `bzip2` itself).
pub const DEFAULT_BZIP2_LEVEL: i32 = 9;
/// Longest symlink chain followed when verifying unpacked symlinks (the kernel's limit too).
const MAX_SYMLINK_HOPS: usize = 40;

// ---------------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------------

/// Compression of a tar stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar stream.
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    /// Recognizes a stream from its first bytes (pass at least 262 bytes to recognize a plain
    /// ustar/GNU tar; 6 are enough for the compressed formats). `None` when unrecognized.
    pub fn sniff(first_bytes: &[u8]) -> Option<Compression> {
        let b = first_bytes;
        if b.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if b.starts_with(b"BZh") {
            Some(Compression::Bzip2)
        } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if b.len() >= 262 && &b[257..262] == b"ustar" {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// Guesses the compression from a file name's extension (`.tar.gz`, `.tgz`, `.tar.xz`,
    /// `.txz`, `.tar.bz2`, `.tbz2`, `.tbz`, `.tar.zst`, `.tzst`, `.tar`, and the bare `.gz`,
    /// `.xz`, `.bz2`, `.zst`), case-insensitively.
    pub fn from_file_name(name: &str) -> Option<Compression> {
        let n = name.to_ascii_lowercase();
        let has = |exts: &[&str]| exts.iter().any(|e| n.ends_with(e));
        if has(&[".tgz", ".gz", ".taz"]) {
            Some(Compression::Gzip)
        } else if has(&[".txz", ".xz"]) {
            Some(Compression::Xz)
        } else if has(&[".tbz2", ".tbz", ".bz2"]) {
            Some(Compression::Bzip2)
        } else if has(&[".tzst", ".zst", ".zstd"]) {
            Some(Compression::Zstd)
        } else if has(&[".tar"]) {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// Conventional file extension of a tar stream with this compression (without a dot).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Xz => "tar.xz",
            Compression::Bzip2 => "tar.bz2",
            Compression::Zstd => "tar.zst",
        }
    }

    /// Lowercase name, as used in serde (`none`, `gzip`, `xz`, `bzip2`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// Default level used by [`pack`] when [`PackOptions::level`] is `None`.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(DEFAULT_GZIP_LEVEL),
            Compression::Xz => Some(DEFAULT_XZ_LEVEL),
            Compression::Bzip2 => Some(DEFAULT_BZIP2_LEVEL),
            Compression::Zstd => Some(DEFAULT_ZSTD_LEVEL),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names formats we recognize but do not support, for the error message.
fn describe_unknown_format(b: &[u8]) -> String {
    if b.starts_with(b"PK\x03\x04") {
        "zip archive".into()
    } else if b.starts_with(&[0x1f, 0x9d]) {
        "unix compress (.Z)".into()
    } else if b.starts_with(b"LZIP") {
        "lzip".into()
    } else if b.starts_with(&[0x5d, 0x00, 0x00]) {
        "lzma (legacy .lzma)".into()
    } else if b.is_empty() {
        "empty file".into()
    } else {
        let n = b.len().min(8);
        format!("unrecognized format (starts with {})", hex::encode(&b[..n]))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an archive entry was refused by [`unpack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsafeReason {
    /// The entry's path starts with `/`.
    AbsolutePath,
    /// The entry's path has a `..` component.
    ParentComponent,
    /// A non-directory entry whose path is empty (or only `.`).
    EmptyPath,
    /// A symlink whose target is absolute.
    AbsoluteLinkTarget { target: String },
    /// A symlink whose target resolves outside the destination (lexically, or through other
    /// symlinks of the archive, or after stripping the top directory).
    LinkEscapes { target: String },
    /// A symlink with an empty target.
    EmptyLinkTarget,
    /// A hard link whose target is absolute or has a `..` component.
    HardLinkOutside { target: String },
    /// A hard link whose target is not a file or symlink extracted earlier from this archive.
    HardLinkTargetMissing { target: String },
    /// Character or block device, or fifo.
    SpecialFile { kind: &'static str },
    /// The entry's path goes through a symlink extracted earlier (`symlink` is its path).
    ThroughSymlink { symlink: String },
    /// A parent of the entry is a file, not a directory.
    ParentNotDirectory { parent: String },
    /// A non-directory entry whose path is an already extracted directory.
    ReplacesDirectory,
    /// An entry type we do not extract (the raw type byte).
    UnsupportedEntryType { code: u8 },
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafeReason::AbsolutePath => write!(f, "absolute path"),
            UnsafeReason::ParentComponent => write!(f, "path has a `..` component"),
            UnsafeReason::EmptyPath => write!(f, "empty path"),
            UnsafeReason::AbsoluteLinkTarget { target } => {
                write!(f, "symlink target {target:?} is absolute")
            }
            UnsafeReason::LinkEscapes { target } => {
                write!(f, "symlink target {target:?} escapes the destination")
            }
            UnsafeReason::EmptyLinkTarget => write!(f, "symlink has an empty target"),
            UnsafeReason::HardLinkOutside { target } => {
                write!(f, "hard link target {target:?} is outside the destination")
            }
            UnsafeReason::HardLinkTargetMissing { target } => write!(
                f,
                "hard link target {target:?} is not a file extracted earlier from this archive"
            ),
            UnsafeReason::SpecialFile { kind } => write!(f, "{kind} entries are not allowed"),
            UnsafeReason::ThroughSymlink { symlink } => {
                write!(f, "path goes through symlink {symlink:?}")
            }
            UnsafeReason::ParentNotDirectory { parent } => {
                write!(f, "parent {parent:?} is not a directory")
            }
            UnsafeReason::ReplacesDirectory => write!(f, "would replace a directory"),
            UnsafeReason::UnsupportedEntryType { code } => {
                write!(f, "unsupported entry type {:?}", *code as char)
            }
        }
    }
}

/// Errors of this module. Messages are lowercase; causes are chained with `#[source]`.
#[derive(thiserror::Error, Debug)]
pub enum ArchiveError {
    /// A filesystem operation failed on `path`.
    #[error("i/o error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archive stream could not be read or decoded (corrupt, truncated, bad checksum).
    /// `archive` is the archive's path, or `<stream>` for [`unpack`].
    #[error("cannot read archive {archive}")]
    Read {
        archive: String,
        #[source]
        source: io::Error,
    },
    /// Writing the packed archive to its output failed.
    #[error("cannot write archive")]
    Write {
        #[source]
        source: io::Error,
    },
    /// An archive entry was refused; nothing was written for it.
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: UnsafeReason },
    /// Two roots given to [`pack`] provide the same path with different contents.
    #[error("conflicting entries for {path:?}: {} and {} differ in {what}", first.display(), second.display())]
    Conflict {
        /// Path inside the roots (relative, `/`-separated).
        path: String,
        /// The first root providing it.
        first: PathBuf,
        /// The later root providing a different one.
        second: PathBuf,
        /// What differs: `kind`, `mode`, `content` or `symlink target`.
        what: &'static str,
    },
    /// The archive's compression is not one we support, or could not be recognized.
    #[error("unsupported compression: {what}")]
    UnsupportedCompression { what: String },
    /// A file name (or symlink target) in a tree is not valid UTF-8.
    #[error("file name is not valid utf-8: {}", path.display())]
    NonUtf8Path { path: PathBuf },
    /// A tree contains a file type that cannot be packed or digested (fifo, socket, device).
    #[error("unsupported file type ({kind}) at {}", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// The unpack destination exists and is not an empty directory.
    #[error("destination {} exists and is not an empty directory", path.display())]
    DestNotEmpty { path: PathBuf },
    /// A file changed size while it was packed or hashed.
    #[error("file {} changed while it was being read", path.display())]
    FileChanged { path: PathBuf },
    /// Invalid options (compression level out of range, bad top directory name).
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.into();
    move |source| ArchiveError::Io { path, source }
}

fn write_err(source: io::Error) -> ArchiveError {
    ArchiveError::Write { source }
}

// ---------------------------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------------------------

/// Options of [`unpack`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackOptions {
    /// When every entry lives under one top directory (as in most source tarballs, e.g.
    /// `bzip2-1.0.8/`), put that directory's contents directly in `dest`. Pax global headers
    /// do not count as entries. Archives whose only top-level entry is a file are not stripped.
    pub strip_single_top_dir: bool,
    /// Accept symlinks whose target is absolute or leaves `dest`. Only for trees that are
    /// never used on the host but only as the root of a sandbox (a Debian rootfs, where
    /// `/usr/lib/x/libfoo.so -> /lib/x/libfoo.so.1` is normal): there such links resolve
    /// inside the sandbox. Every other check stays: entry paths are still confined to
    /// `dest`, and nothing is ever written through a symlink.
    pub allow_any_symlink_target: bool,
}

/// What [`unpack`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Non-directory entries created: regular files, symlinks and hard links.
    pub files: u64,
    /// Bytes of regular file contents written.
    pub bytes: u64,
    /// The top directory that was stripped, if [`UnpackOptions::strip_single_top_dir`] applied.
    pub stripped_top_dir: Option<String>,
}

/// Unpacks a tar stream into `dest`, checking every entry.
///
/// `dest` is created if missing; if it exists it must be an empty directory
/// ([`ArchiveError::DestNotEmpty`] otherwise), and nothing else may write into it meanwhile.
///
/// Refused, with [`ArchiveError::UnsafeEntry`] naming the entry and the reason: absolute paths;
/// any `..` component; symlinks whose target is absolute or resolves outside `dest` (lexically
/// from the link's directory while unpacking; then, once everything is extracted and any top
/// directory stripped, every symlink is resolved again following the extracted symlinks, so that
/// chains like `d/up -> ..`, `x -> d/up/..` are caught); hard links whose target is outside or
/// was not extracted earlier from this archive; character/block devices and fifos; any entry
/// whose path goes through an extracted symlink (`a -> .` is accepted, but then `a/f` is not);
/// non-directories replacing an extracted directory; unknown entry types.
///
/// Kept: the archive's mtimes (sub-second ones from pax headers too; atime is set to the
/// mtime) and permission bits (`mode & 0o777`: setuid, setgid and sticky bits are dropped;
/// the umask is not applied). Ignored: ownership, xattrs, ACLs. Directories missing from the
/// archive are created with mode 0o755. Pax global headers (`pax_global_header` of
/// `git archive`) are skipped. Later entries replace earlier ones with the same path (except
/// directories), as with GNU tar. The stream is read to its end, so the compressor's
/// checksum of a truncated or corrupt download is verified.
///
/// On error `dest` is left partly populated: **the caller must delete it**.
pub fn unpack(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, ArchiveError> {
    unpack_inner(reader, compression, dest, opts, "<stream>")
}

/// Unpacks the archive file `archive` into `dest` like [`unpack`]. The compression is sniffed
/// from the file's magic bytes, and guessed from its name if they are not recognized.
/// On error the caller must delete `dest`.
pub fn unpack_file(archive: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, ArchiveError> {
    let mut file = fs::File::open(archive).map_err(io_err(archive))?;
    let mut head = Vec::with_capacity(512);
    (&mut file).take(512).read_to_end(&mut head).map_err(io_err(archive))?;
    let compression = match Compression::sniff(&head) {
        Some(c) => c,
        None => {
            let by_name = archive
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Compression::from_file_name);
            match by_name {
                // A plain tar without ustar magic (old v7 format) is the only case where the
                // name helps: compressed formats always have their magic bytes.
                Some(Compression::None) if !head.is_empty() => Compression::None,
                _ => {
                    return Err(ArchiveError::UnsupportedCompression {
                        what: format!("{}: {}", archive.display(), describe_unknown_format(&head)),
                    })
                }
            }
        }
    };
    let label = archive.display().to_string();
    unpack_inner(io::Cursor::new(head).chain(file), compression, dest, opts, &label)
}

fn unpack_inner(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    opts: &UnpackOptions,
    label: &str,
) -> Result<UnpackStats, ArchiveError> {
    prepare_dest(dest)?;
    let read_err = |source: io::Error| ArchiveError::Read {
        archive: label.to_string(),
        source,
    };
    let raw = BufReader::with_capacity(STREAM_BUF, reader);
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(raw)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(read_err)?),
    };
    let decoded: Box<dyn Read> = if compression == Compression::None {
        decoded
    } else {
        Box::new(BufReader::with_capacity(STREAM_BUF, decoded))
    };
    let mut archive = tar::Archive::new(decoded);
    let mut u = Unpacker::new(dest);
    u.allow_any_symlink_target = opts.allow_any_symlink_target;
    {
        let entries = archive.entries().map_err(read_err)?;
        for entry in entries {
            let entry = entry.map_err(read_err)?;
            u.entry(entry, &read_err)?;
        }
    }
    // Read to the end so that the decompressor verifies its checksum/length trailer.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
    u.finish(opts.strip_single_top_dir)
}

fn prepare_dest(dest: &Path) -> Result<(), ArchiveError> {
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut it = fs::read_dir(dest).map_err(io_err(dest))?;
            if it.next().is_some() {
                return Err(ArchiveError::DestNotEmpty { path: dest.into() });
            }
            Ok(())
        }
        Ok(_) => Err(ArchiveError::DestNotEmpty { path: dest.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dest).map_err(io_err(dest)),
        Err(e) => Err(io_err(dest)(e)),
    }
}

/// Splits an archive path into its normal components, refusing absolute paths and `..`.
fn split_entry_path(raw: &[u8]) -> Result<Vec<&[u8]>, UnsafeReason> {
    if raw.first() == Some(&b'/') {
        return Err(UnsafeReason::AbsolutePath);
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(UnsafeReason::ParentComponent),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn comps_to_path(comps: &[&[u8]]) -> PathBuf {
    comps.iter().map(|c| OsStr::from_bytes(c)).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lossy_path(p: &Path) -> String {
    lossy(p.as_os_str().as_bytes())
}

/// True when `target`, resolved lexically from the directory `parent_depth` levels below the
/// root, goes above the root.
fn lexical_escapes(parent_depth: usize, target: &[u8]) -> bool {
    let mut depth = parent_depth;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

/// Resolves `target` (the content of a symlink living in `dest/parent`) the way the kernel would,
/// following symlinks found under `dest`, and tells whether the walk ever leaves `dest`
/// (absolute target or `..` above the root). Missing components are resolved lexically
/// (conservative: they may be created later). Chains longer than the kernel's limit cannot be
/// followed by anyone, so they are not an escape.
fn resolution_escapes(dest: &Path, parent: &Path, target: &[u8]) -> io::Result<bool> {
    let mut stack: Vec<OsString> = parent.components().map(|c| c.as_os_str().to_owned()).collect();
    let mut queue: VecDeque<OsString> = VecDeque::new();
    if target.first() == Some(&b'/') {
        return Ok(true);
    }
    for c in target.split(|&b| b == b'/') {
        queue.push_back(OsStr::from_bytes(c).to_owned());
    }
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Ok(true);
                }
                continue;
            }
            _ => {}
        }
        stack.push(c);
        let p = dest.join(stack.iter().collect::<PathBuf>());
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Ok(false);
                }
                let t = fs::read_link(&p)?;
                stack.pop();
                let tb = t.as_os_str().as_bytes();
                if tb.first() == Some(&b'/') {
                    return Ok(true);
                }
                for part in tb.split(|&b| b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(part).to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains a nul byte"))
}

fn timespec(secs: i64, nanos: u32) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    }
}

/// Sets atime and mtime of `path` without following a final symlink.
fn set_times_nofollow(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    let c = cstr(path)?;
    let ts = [timespec(secs, nanos), timespec(secs, nanos)];
    // SAFETY: `c` is a valid nul-terminated string and `ts` has the two entries required.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime of an open file.
fn set_times_fd(file: &fs::File, secs: i64, nanos: u32) -> io::Result<()> {
    let ts = [timespec(secs, nanos), timespec(secs, nanos)];
    // SAFETY: the fd is open for the lifetime of `file`; `ts` has the two entries required.
    let r = unsafe { libc::futimens(file.as_raw_fd(), ts.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Final mode and (seconds, nanoseconds) mtime of an extracted directory.
type DirMeta = (u32, Option<(i64, u32)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extracted {
    File,
    Symlink,
    Dir,
}

struct Unpacker<'a> {
    dest: &'a Path,
    /// Relative paths verified to be real directories (created by us or checked with lstat).
    /// Directories are never replaced by anything else, so they stay valid.
    known_dirs: HashSet<PathBuf>,
    extracted: HashMap<PathBuf, Extracted>,
    /// Final mode and mtime of directories, applied at the end (deepest first).
    dir_meta: HashMap<PathBuf, DirMeta>,
    /// Extracted symlinks (relative path, entry name) to verify at the end.
    symlinks: Vec<(PathBuf, String)>,
    first_top: Option<OsString>,
    several_tops: bool,
    stats: UnpackStats,
    buf: Vec<u8>,
    /// See [`UnpackOptions::allow_any_symlink_target`].
    allow_any_symlink_target: bool,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path) -> Self {
        Unpacker {
            dest,
            known_dirs: HashSet::new(),
            extracted: HashMap::new(),
            dir_meta: HashMap::new(),
            symlinks: Vec::new(),
            first_top: None,
            several_tops: false,
            stats: UnpackStats::default(),
            buf: vec![0; STREAM_BUF],
            allow_any_symlink_target: false,
        }
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        read_err: &dyn Fn(io::Error) -> ArchiveError,
    ) -> Result<(), ArchiveError> {
        use tar::EntryType as T;
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let name = lossy(&raw_path);
        let unsafe_entry = |reason: UnsafeReason| ArchiveError::UnsafeEntry {
            entry: name.clone(),
            reason,
        };
        let comps = split_entry_path(&raw_path).map_err(unsafe_entry)?;

        // Classify before touching the filesystem.
        enum Kind {
            File,
            Dir,
            Symlink,
            HardLink,
        }
        let kind = match etype {
            T::Regular | T::Continuous | T::GNUSparse => {
                if raw_path.ends_with(b"/") && entry.size() == 0 {
                    Kind::Dir // old archives mark directories with a trailing slash only
                } else {
                    Kind::File
                }
            }
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::HardLink,
            T::Char => {
                return Err(unsafe_entry(UnsafeReason::SpecialFile {
                    kind: "character device",
                }))
            }
            T::Block => return Err(unsafe_entry(UnsafeReason::SpecialFile { kind: "block device" })),
            T::Fifo => return Err(unsafe_entry(UnsafeReason::SpecialFile { kind: "fifo" })),
            other => {
                return Err(unsafe_entry(UnsafeReason::UnsupportedEntryType {
                    code: other.as_byte(),
                }))
            }
        };
        if comps.is_empty() {
            return match kind {
                Kind::Dir => Ok(()), // `./`: the destination itself
                _ => Err(unsafe_entry(UnsafeReason::EmptyPath)),
            };
        }
        match &self.first_top {
            None => self.first_top = Some(OsStr::from_bytes(comps[0]).to_owned()),
            Some(t) if t.as_bytes() != comps[0] => self.several_tops = true,
            Some(_) => {}
        }
        let rel = comps_to_path(&comps);
        let abs = self.dest.join(&rel);
        let mode = entry.header().mode().map_err(read_err)? & 0o777;
        let mtime = entry_mtime(&mut entry).map_err(read_err)?;

        // Symlink and hard link targets are checked before any directory is created.
        let link_target = match kind {
            Kind::Symlink => {
                let t = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                if t.is_empty() {
                    return Err(unsafe_entry(UnsafeReason::EmptyLinkTarget));
                }
                if t[0] == b'/' && !self.allow_any_symlink_target {
                    return Err(unsafe_entry(UnsafeReason::AbsoluteLinkTarget { target: lossy(&t) }));
                }
                if !self.allow_any_symlink_target && lexical_escapes(comps.len() - 1, &t) {
                    return Err(unsafe_entry(UnsafeReason::LinkEscapes { target: lossy(&t) }));
                }
                Some(t)
            }
            Kind::HardLink => {
                let t = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let outside = || UnsafeReason::HardLinkOutside { target: lossy(&t) };
                let tcomps = split_entry_path(&t).map_err(|_| unsafe_entry(outside()))?;
                if tcomps.is_empty() {
                    return Err(unsafe_entry(outside()));
                }
                let trel = comps_to_path(&tcomps);
                match self.extracted.get(&trel) {
                    Some(Extracted::File) | Some(Extracted::Symlink) => {}
                    _ => return Err(unsafe_entry(UnsafeReason::HardLinkTargetMissing { target: lossy(&t) })),
                }
                Some(trel.into_os_string().as_bytes().to_vec())
            }
            _ => None,
        };

        self.ensure_parents(&comps[..comps.len() - 1], &name)?;

        match kind {
            Kind::Dir => {
                match fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&abs).map_err(io_err(&abs))?;
                        mkdir(&abs)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&abs)?,
                    Err(e) => return Err(io_err(&abs)(e)),
                }
                self.known_dirs.insert(rel.clone());
                self.dir_meta.insert(rel.clone(), (mode, Some(mtime)));
                self.extracted.insert(rel, Extracted::Dir);
            }
            Kind::File => {
                let mut file = self.create_file(&abs, mode, &name)?;
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_err(e)),
                    };
                    file.write_all(&self.buf[..n]).map_err(io_err(&abs))?;
                    written += n as u64;
                }
                if written != entry.size() {
                    return Err(read_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("archive ends inside entry {name:?}"),
                    )));
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(&abs))?;
                set_times_fd(&file, mtime.0, mtime.1).map_err(io_err(&abs))?;
                self.extracted.insert(rel, Extracted::File);
                self.stats.files += 1;
                self.stats.bytes += written;
            }
            Kind::Symlink => {
                let target = link_target.expect("symlink target");
                self.clear_for_non_dir(&abs, &name)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &abs).map_err(io_err(&abs))?;
                set_times_nofollow(&abs, mtime.0, mtime.1).map_err(io_err(&abs))?;
                self.symlinks.push((rel.clone(), name.clone()));
                self.extracted.insert(rel, Extracted::Symlink);
                self.stats.files += 1;
            }
            Kind::HardLink => {
                let trel = PathBuf::from(OsStr::from_bytes(&link_target.expect("link target")));
                if trel == rel {
                    return Ok(()); // a link to itself: already there
                }
                let tkind = self.extracted[&trel];
                if tkind == Extracted::Symlink {
                    // A hard link to a symlink is a symlink (linkat does not follow it) with
                    // the same relative target in another directory: check it again there.
                    let src = self.dest.join(&trel);
                    let target = fs::read_link(&src).map_err(io_err(&src))?;
                    let tb = target.as_os_str().as_bytes();
                    if !self.allow_any_symlink_target && lexical_escapes(comps.len() - 1, tb) {
                        return Err(unsafe_entry(UnsafeReason::LinkEscapes { target: lossy(tb) }));
                    }
                    self.symlinks.push((rel.clone(), name.clone()));
                }
                self.clear_for_non_dir(&abs, &name)?;
                fs::hard_link(self.dest.join(&trel), &abs).map_err(io_err(&abs))?;
                self.extracted.insert(rel, tkind);
                self.stats.files += 1;
            }
        }
        Ok(())
    }

    /// Makes sure every parent of the entry is a real directory (creating missing ones),
    /// refusing to go through symlinks.
    fn ensure_parents(&mut self, parents: &[&[u8]], name: &str) -> Result<(), ArchiveError> {
        if parents.is_empty() {
            return Ok(());
        }
        let full = comps_to_path(parents);
        if self.known_dirs.contains(&full) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for c in parents {
            cur.push(OsStr::from_bytes(c));
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let abs = self.dest.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ArchiveError::UnsafeEntry {
                        entry: name.to_string(),
                        reason: UnsafeReason::ThroughSymlink {
                            symlink: lossy_path(&cur),
                        },
                    })
                }
                Ok(_) => {
                    return Err(ArchiveError::UnsafeEntry {
                        entry: name.to_string(),
                        reason: UnsafeReason::ParentNotDirectory {
                            parent: lossy_path(&cur),
                        },
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    mkdir(&abs)?;
                    self.dir_meta.entry(cur.clone()).or_insert((0o755, None));
                    self.extracted.insert(cur.clone(), Extracted::Dir);
                }
                Err(e) => return Err(io_err(&abs)(e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes whatever non-directory is at `abs` so that a new entry can take its place.
    fn clear_for_non_dir(&self, abs: &Path, name: &str) -> Result<(), ArchiveError> {
        match fs::symlink_metadata(abs) {
            Ok(m) if m.is_dir() => Err(ArchiveError::UnsafeEntry {
                entry: name.to_string(),
                reason: UnsafeReason::ReplacesDirectory,
            }),
            Ok(_) => fs::remove_file(abs).map_err(io_err(abs)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(abs)(e)),
        }
    }

    fn create_file(&self, abs: &Path, mode: u32, name: &str) -> Result<fs::File, ArchiveError> {
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode | 0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(abs)
        };
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear_for_non_dir(abs, name)?;
                open().map_err(io_err(abs))
            }
            Err(e) => Err(io_err(abs)(e)),
        }
    }

    fn finish(mut self, strip: bool) -> Result<UnpackStats, ArchiveError> {
        let dest = self.dest;
        let mut prefix: Option<PathBuf> = None;
        if strip && !self.several_tops {
            if let Some(top) = self.first_top.clone() {
                let top_abs = dest.join(&top);
                let is_dir = fs::symlink_metadata(&top_abs).map(|m| m.is_dir()).unwrap_or(false);
                if is_dir {
                    strip_top(dest, &top)?;
                    self.stats.stripped_top_dir = Some(lossy(top.as_bytes()));
                    prefix = Some(PathBuf::from(top));
                }
            }
        }
        let map = |rel: &Path| -> Option<PathBuf> {
            match &prefix {
                None => Some(rel.to_path_buf()),
                Some(p) => match rel.strip_prefix(p) {
                    Ok(r) if r.as_os_str().is_empty() => None,
                    Ok(r) => Some(r.to_path_buf()),
                    Err(_) => None,
                },
            }
        };

        // Verify every symlink by resolving it for real in its final place.
        let symlinks: &[(PathBuf, String)] = if self.allow_any_symlink_target {
            &[]
        } else {
            &self.symlinks
        };
        for (rel, name) in symlinks {
            let Some(rel) = map(rel) else { continue };
            let abs = dest.join(&rel);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() => {}
                _ => continue, // replaced by a later entry
            }
            let target = fs::read_link(&abs).map_err(io_err(&abs))?;
            let parent = rel.parent().unwrap_or(Path::new(""));
            let escapes = resolution_escapes(dest, parent, target.as_os_str().as_bytes()).map_err(io_err(&abs))?;
            if escapes {
                return Err(ArchiveError::UnsafeEntry {
                    entry: name.clone(),
                    reason: UnsafeReason::LinkEscapes {
                        target: lossy_path(&target),
                    },
                });
            }
        }

        // Directory modes and mtimes last (creating entries changes a directory's mtime, and a
        // read-only directory could not have been filled), deepest first.
        let mut dirs: Vec<(PathBuf, DirMeta)> = self
            .dir_meta
            .iter()
            .filter_map(|(rel, meta)| map(rel).map(|r| (r, *meta)))
            .collect();
        dirs.sort_by(|a, b| {
            b.0.components()
                .count()
                .cmp(&a.0.components().count())
                .then_with(|| a.0.cmp(&b.0))
        });
        for (rel, (mode, mtime)) in dirs {
            let abs = dest.join(&rel);
            fs::set_permissions(&abs, fs::Permissions::from_mode(mode)).map_err(io_err(&abs))?;
            if let Some((s, n)) = mtime {
                set_times_nofollow(&abs, s, n).map_err(io_err(&abs))?;
            }
        }
        Ok(self.stats)
    }
}

fn mkdir(abs: &Path) -> Result<(), ArchiveError> {
    fs::DirBuilder::new().mode(0o755).create(abs).map_err(io_err(abs))?;
    // Independent of the umask.
    fs::set_permissions(abs, fs::Permissions::from_mode(0o755)).map_err(io_err(abs))
}

/// Moves the contents of `dest/top` into `dest` (which contains only `top`).
fn strip_top(dest: &Path, top: &OsStr) -> Result<(), ArchiveError> {
    let top_abs = dest.join(top);
    let mut children = Vec::new();
    for e in fs::read_dir(&top_abs).map_err(io_err(&top_abs))? {
        children.push(e.map_err(io_err(&top_abs))?.file_name());
    }
    let mut tmp = OsString::from(".hb-strip");
    let mut n = 0;
    while tmp.as_os_str() == top || children.contains(&tmp) {
        n += 1;
        tmp = OsString::from(format!(".hb-strip-{n}"));
    }
    let tmp_abs = dest.join(&tmp);
    fs::rename(&top_abs, &tmp_abs).map_err(io_err(&top_abs))?;
    for c in &children {
        let from = tmp_abs.join(c);
        fs::rename(&from, dest.join(c)).map_err(io_err(&from))?;
    }
    fs::remove_dir(&tmp_abs).map_err(io_err(&tmp_abs))
}

/// The entry's mtime: the pax `mtime` record (with its fraction) when present, else the header's.
fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<(i64, u32)> {
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if ext.key_bytes() == b"mtime" {
                if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                    return Ok(t);
                }
            }
        }
    }
    let m = entry.header().mtime()?;
    Ok((i64::try_from(m).unwrap_or(i64::MAX), 0))
}

/// Parses a pax time such as `1700000000.123456789` or `-1.5`.
fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let neg = int.starts_with('-');
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    if neg && nanos > 0 {
        // -1.5 means 1.5 s before the epoch: -2 s + 0.5 s.
        Some((secs - 1, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning trees (shared by pack and manifest)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeKind {
    File,
    Dir,
    Symlink(String),
}

#[derive(Clone, Debug)]
struct Node {
    /// Relative, `/`-separated, no leading `./`.
    rel: String,
    abs: PathBuf,
    kind: NodeKind,
    /// Normalized mode: `& 0o755` for files and directories, 0o777 for symlinks.
    mode: u32,
    size: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
}

/// Normalized permission bits, as stored by [`pack`] and [`manifest`].
fn normalize_mode(kind: &NodeKind, st_mode: u32) -> u32 {
    match kind {
        NodeKind::Symlink(_) => 0o777,
        _ => st_mode & 0o755,
    }
}

/// Lists `root` (not including itself), sorted bytewise by relative path.
fn scan(root: &Path) -> Result<Vec<Node>, ArchiveError> {
    let meta = fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(io_err(root)(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let mut nodes = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.map_err(|err| {
            let path = err.path().unwrap_or(root).to_path_buf();
            let source = err.into_io_error().unwrap_or_else(|| io::Error::other("walk error"));
            ArchiveError::Io { path, source }
        })?;
        let abs = e.path().to_path_buf();
        let rel = abs
            .strip_prefix(root)
            .expect("walkdir yields paths under the root")
            .to_str()
            .ok_or_else(|| ArchiveError::NonUtf8Path { path: abs.clone() })?
            .to_string();
        let m = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File
        } else if ft.is_symlink() {
            let t = fs::read_link(&abs).map_err(io_err(&abs))?;
            let t = t
                .into_os_string()
                .into_string()
                .map_err(|_| ArchiveError::NonUtf8Path { path: abs.clone() })?;
            NodeKind::Symlink(t)
        } else {
            let kind = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "unknown"
            };
            return Err(ArchiveError::UnsupportedFileType { path: abs, kind });
        };
        let mode = normalize_mode(&kind, m.mode());
        nodes.push(Node {
            rel,
            abs,
            size: if kind == NodeKind::File { m.len() } else { 0 },
            kind,
            mode,
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        });
    }
    nodes.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(nodes)
}

fn open_nofollow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads a whole file through `buf`, feeding each chunk to `sink`; returns the byte count.
fn read_chunks(
    path: &Path,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), ArchiveError>,
) -> Result<u64, ArchiveError> {
    let mut f = open_nofollow(path).map_err(io_err(path))?;
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        sink(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

fn files_identical(a: &Path, b: &Path) -> Result<bool, ArchiveError> {
    let mut fa = BufReader::with_capacity(STREAM_BUF, open_nofollow(a).map_err(io_err(a))?);
    let mut fb = BufReader::with_capacity(STREAM_BUF, open_nofollow(b).map_err(io_err(b))?);
    let mut ba = vec![0u8; 64 << 10];
    let mut bb = vec![0u8; 64 << 10];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err(a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err(b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

/// Options of [`pack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// Put every entry under this directory (a single path component), with its own entry.
    pub top_dir: Option<String>,
    /// The mtime of every entry (seconds since the epoch, e.g. `SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    pub compression: Compression,
    /// Compression level; `None` for [`Compression::default_level`]. Ranges: gzip 0–9,
    /// xz 0–9, bzip2 1–9, zstd as the linked libzstd accepts (1–22 and negative levels).
    /// Must be `None` for [`Compression::None`].
    pub level: Option<i32>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            top_dir: None,
            mtime: 0,
            compression: Compression::Gzip,
            level: None,
        }
    }
}

/// What [`pack`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Tar entries written (directories, files, symlinks, hard links; GNU long-name records
    /// are not counted).
    pub entries: u64,
    /// Bytes of file contents read.
    pub bytes_in: u64,
    /// Size of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Bytes written to `out` (after compression).
    pub bytes_out: u64,
}

#[derive(Debug)]
struct Item {
    node: Node,
    root: usize,
    /// For a file that is a hard link to an earlier path of the same root: that path.
    link_to: Option<String>,
}

/// Packs the trees of `roots` (merged) into one deterministic tar archive written to `out`.
///
/// * Entries are sorted bytewise by path (full-path order, so `a-b` comes before `a/x`;
///   GNU tar's `--sort=name` sorts per directory instead), all under `top_dir/` when set
///   (which gets its own entry, mode 0o755). Roots themselves get no entry.
/// * Merging: a directory present in several roots gives one entry (with the first root's
///   mode); the same non-directory path in two roots is [`ArchiveError::Conflict`] unless both
///   are byte-identical files with the same normalized mode, or symlinks with the same target;
///   then one entry (the first root's) is written.
/// * Normalization, in the spirit of `tar --sort=name --mtime=@E --owner=0 --group=0
///   --numeric-owner --format=gnu`: GNU format headers, mtime = `opts.mtime`, uid/gid 0, empty
///   user/group names, mode `& 0o755` for files and directories (group/other write, setuid,
///   setgid and sticky bits cleared; exec bits kept), symlinks stored as links with mode 0o777,
///   no atime/ctime, xattrs or pax headers; names or link targets of 100 bytes or more use GNU
///   long-name records. Files with several links within one root are stored once, the other
///   paths (later in sorted order) as hard-link entries to the first one. The archive ends with
///   two zero blocks and is padded to a multiple of 10240 bytes, as GNU tar does.
/// * Compression is single-threaded (output does not depend on the number of cores). gzip:
///   no file name, mtime 0, OS byte [`GZIP_OS_BYTE`] (3, Unix, as `gzip -n`), level 6 by
///   default. zstd: level 3 by default, with the (deterministic) content checksum. xz: preset 6,
///   CRC64. bzip2: level 9.
///
/// Two packs of the same trees with the same options are byte-identical (for a given build of
/// the compression libraries). Files are opened with `O_NOFOLLOW`; a file whose size changes
/// while it is packed gives [`ArchiveError::FileChanged`].
pub fn pack(roots: &[&Path], out: impl Write, opts: &PackOptions) -> Result<PackStats, ArchiveError> {
    if let Some(top) = &opts.top_dir {
        if top.is_empty() || top == "." || top == ".." || top.contains('/') || top.contains('\0') {
            return Err(ArchiveError::InvalidOption(format!(
                "top directory {top:?} must be a single path component"
            )));
        }
    }
    let level = check_level(opts.compression, opts.level)?;

    // Merge the roots.
    let mut merged: BTreeMap<String, Item> = BTreeMap::new();
    for (ri, root) in roots.iter().enumerate() {
        let mut first_of_inode: HashMap<(u64, u64), String> = HashMap::new();
        for node in scan(root)? {
            let link_to = if node.kind == NodeKind::File && node.nlink > 1 {
                match first_of_inode.entry((node.dev, node.ino)) {
                    std::collections::hash_map::Entry::Occupied(o) => Some(o.get().clone()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(node.rel.clone());
                        None
                    }
                }
            } else {
                None
            };
            match merged.get(&node.rel) {
                None => {
                    merged.insert(
                        node.rel.clone(),
                        Item {
                            node,
                            root: ri,
                            link_to,
                        },
                    );
                }
                Some(existing) => {
                    let what = merge_difference(&existing.node, &node)?;
                    if let Some(what) = what {
                        return Err(ArchiveError::Conflict {
                            path: node.rel.clone(),
                            first: roots[existing.root].to_path_buf(),
                            second: root.to_path_buf(),
                            what,
                        });
                    }
                }
            }
        }
    }

    // Write.
    let counting = Counting {
        inner: BufWriter::with_capacity(STREAM_BUF, out),
        count: 0,
    };
    let encoder = Encoder::new(counting, opts.compression, level).map_err(write_err)?;
    let mut tar = TarWriter {
        w: BufWriter::with_capacity(STREAM_BUF, encoder),
        pos: 0,
    };
    let mut stats = PackStats::default();
    let prefix = opts.top_dir.as_ref().map(|t| format!("{t}/")).unwrap_or_default();
    let mtime = opts.mtime;
    if !prefix.is_empty() {
        tar.header(prefix.as_bytes(), None, tar::EntryType::Directory, 0o755, 0, mtime)
            .map_err(write_err)?;
        stats.entries += 1;
    }
    let mut buf = vec![0u8; IO_BUF];
    for (rel, item) in &merged {
        let name = format!("{prefix}{rel}");
        let n = &item.node;
        match (&n.kind, &item.link_to) {
            (NodeKind::Dir, _) => {
                let name = format!("{name}/");
                tar.header(name.as_bytes(), None, tar::EntryType::Directory, n.mode, 0, mtime)
                    .map_err(write_err)?;
            }
            (NodeKind::Symlink(t), _) => {
                tar.header(
                    name.as_bytes(),
                    Some(t.as_bytes()),
                    tar::EntryType::Symlink,
                    0o777,
                    0,
                    mtime,
                )
                .map_err(write_err)?;
            }
            (NodeKind::File, Some(first)) => {
                let target = format!("{prefix}{first}");
                tar.header(
                    name.as_bytes(),
                    Some(target.as_bytes()),
                    tar::EntryType::Link,
                    n.mode,
                    0,
                    mtime,
                )
                .map_err(write_err)?;
            }
            (NodeKind::File, None) => {
                tar.header(name.as_bytes(), None, tar::EntryType::Regular, n.mode, n.size, mtime)
                    .map_err(write_err)?;
                let mut f = open_nofollow(&n.abs).map_err(io_err(&n.abs))?;
                let mut left = n.size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let got = match f.read(&mut buf[..want]) {
                        Ok(0) => return Err(ArchiveError::FileChanged { path: n.abs.clone() }),
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_err(&n.abs)(e)),
                    };
                    tar.data(&buf[..got]).map_err(write_err)?;
                    left -= got as u64;
                }
                let mut probe = [0u8; 1];
                if f.read(&mut probe).map_err(io_err(&n.abs))? != 0 {
                    return Err(ArchiveError::FileChanged { path: n.abs.clone() });
                }
                tar.pad(n.size).map_err(write_err)?;
                stats.bytes_in += n.size;
            }
        }
        stats.entries += 1;
    }
    tar.finish().map_err(write_err)?;
    stats.tar_bytes = tar.pos;
    let encoder = tar.w.into_inner().map_err(|e| write_err(e.into_error()))?;
    let counting = encoder.finish().map_err(write_err)?;
    stats.bytes_out = counting.count;
    let mut out = counting.inner;
    out.flush().map_err(write_err)?;
    Ok(stats)
}

/// `None` when `a` (kept) and `b` (from a later root) can be merged, else what differs.
fn merge_difference(a: &Node, b: &Node) -> Result<Option<&'static str>, ArchiveError> {
    Ok(match (&a.kind, &b.kind) {
        (NodeKind::Dir, NodeKind::Dir) => None,
        (NodeKind::Symlink(x), NodeKind::Symlink(y)) => (x != y).then_some("symlink target"),
        (NodeKind::File, NodeKind::File) => {
            if a.mode != b.mode {
                Some("mode")
            } else if a.size != b.size || !files_identical(&a.abs, &b.abs)? {
                Some("content")
            } else {
                None
            }
        }
        _ => Some("kind"),
    })
}

fn check_level(c: Compression, level: Option<i32>) -> Result<Option<i32>, ArchiveError> {
    let Some(l) = level else {
        return Ok(c.default_level());
    };
    let ok = match c {
        Compression::None => false,
        Compression::Gzip | Compression::Xz => (0..=9).contains(&l),
        Compression::Bzip2 => (1..=9).contains(&l),
        Compression::Zstd => zstd::compression_level_range().contains(&l),
    };
    if ok {
        Ok(Some(l))
    } else {
        Err(ArchiveError::InvalidOption(format!(
            "compression level {l} is not valid for {c}"
        )))
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(w: W, c: Compression, level: Option<i32>) -> io::Result<Self> {
        let level = level.unwrap_or(0);
        Ok(match c {
            Compression::None => Encoder::None(w),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(GZIP_OS_BYTE)
                    .write(w, flate2::Compression::new(level as u32)),
            ),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(w, level as u32)),
            Compression::Bzip2 => {
                Encoder::Bzip2(bzip2::write::BzEncoder::new(w, bzip2::Compression::new(level as u32)))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, level)?;
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Xz(e) => e.write_all(buf),
            Encoder::Bzip2(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Bzip2(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Writes GNU-format tar records.
struct TarWriter<W: Write> {
    w: W,
    pos: u64,
}

impl<W: Write> TarWriter<W> {
    fn header(
        &mut self,
        name: &[u8],
        link: Option<&[u8]>,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        mtime: u64,
    ) -> io::Result<()> {
        // Names must fit with a terminating NUL; longer ones get a GNU long-name record.
        const FIELD: usize = 100;
        if name.len() >= FIELD {
            self.long_record(b'L', name)?;
        }
        if let Some(l) = link {
            if l.len() >= FIELD {
                self.long_record(b'K', l)?;
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(size);
        h.set_entry_type(kind);
        {
            let old = h.as_old_mut();
            let n = name.len().min(FIELD - 1);
            old.name[..n].copy_from_slice(&name[..n]);
            if let Some(l) = link {
                let n = l.len().min(FIELD - 1);
                old.linkname[..n].copy_from_slice(&l[..n]);
            }
        }
        h.set_cksum();
        self.put(h.as_bytes())
    }

    fn long_record(&mut self, typ: u8, data: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        let name = b"././@LongLink";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64 + 1);
        h.set_entry_type(tar::EntryType::new(typ));
        h.set_cksum();
        self.put(h.as_bytes())?;
        self.put(data)?;
        self.put(&[0])?;
        self.pad(data.len() as u64 + 1)
    }

    fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = size % BLOCK;
        if rem != 0 {
            self.put(&[0u8; BLOCK as usize][..(BLOCK - rem) as usize])?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.put(&[0u8; 2 * BLOCK as usize])?;
        let rem = self.pos % RECORD;
        if rem != 0 {
            let zeros = vec![0u8; (RECORD - rem) as usize];
            self.put(&zeros)?;
        }
        self.w.flush()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests and digests
// ---------------------------------------------------------------------------------------------

/// Kind of a [`ManifestEntry`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
        }
    }
}

/// One path of a tree.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative to the root, `/`-separated, no leading `./`.
    pub path: String,
    pub kind: EntryKind,
    /// Normalized as in [`pack`]: `& 0o755` for files and directories, 0o777 for symlinks.
    pub mode: u32,
    /// File size in bytes; 0 for directories and symlinks.
    pub size: u64,
    /// Lowercase hex SHA-256 of the contents, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The listing of a tree, sorted bytewise by path (the root itself is not listed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Lowercase hex SHA-256 of the canonical encoding of the manifest (version 1):
    ///
    /// ```text
    /// "hb-manifest-v1\0"  u64le(entry count)
    /// per entry, in bytewise path order:
    ///   str(path)  u8(kind: 0 file, 1 dir, 2 symlink)  u32le(mode)  u64le(size)
    ///   opt(sha256)  opt(target)
    /// str(s) = u64le(byte length of s) s
    /// opt(x) = u8(0) when absent, u8(1) str(x) when present
    /// ```
    ///
    /// The encoding is unambiguous for any manifest; entries are sorted here, so the digest does
    /// not depend on the order of `entries`. Hard links are not represented (each path is a file).
    pub fn digest(&self) -> String {
        fn put_str(h: &mut Sha256, s: &str) {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        fn put_opt(h: &mut Sha256, s: &Option<String>) {
            match s {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    put_str(h, s);
                }
            }
        }
        let mut sorted: Vec<&ManifestEntry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        h.update(b"hb-manifest-v1\0");
        h.update((sorted.len() as u64).to_le_bytes());
        for e in sorted {
            put_str(&mut h, &e.path);
            h.update([e.kind.code()]);
            h.update(e.mode.to_le_bytes());
            h.update(e.size.to_le_bytes());
            put_opt(&mut h, &e.sha256);
            put_opt(&mut h, &e.target);
        }
        hex::encode(h.finalize())
    }

    /// Paths that differ between `self` and `other`: present in only one, or with a different
    /// kind, mode, size, digest or target. Sorted bytewise.
    pub fn diff(&self, other: &Manifest) -> Vec<String> {
        let a: BTreeMap<&str, &ManifestEntry> = self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let b: BTreeMap<&str, &ManifestEntry> = other.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut out = Vec::new();
        for (p, ea) in &a {
            if b.get(p) != Some(ea) {
                out.push(p.to_string());
            }
        }
        for p in b.keys() {
            if !a.contains_key(p) {
                out.push(p.to_string());
            }
        }
        out.sort();
        out
    }

    /// Total size of the files listed.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum()
    }
}

/// Lists `root` with the SHA-256 of each file. Paths are relative and `/`-separated; a file
/// name or symlink target that is not UTF-8 is [`ArchiveError::NonUtf8Path`]; fifos, sockets
/// and devices are [`ArchiveError::UnsupportedFileType`]. `root` itself is followed if it is a
/// symlink; symlinks inside are recorded, not followed.
pub fn manifest(root: &Path) -> Result<Manifest, ArchiveError> {
    let nodes = scan(root)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut entries = Vec::with_capacity(nodes.len());
    for n in nodes {
        let (kind, size, sha256, target) = match n.kind {
            NodeKind::Dir => (EntryKind::Dir, 0, None, None),
            NodeKind::Symlink(t) => (EntryKind::Symlink, 0, None, Some(t)),
            NodeKind::File => {
                let mut h = Sha256::new();
                let size = read_chunks(&n.abs, &mut buf, |c| {
                    h.update(c);
                    Ok(())
                })?;
                (EntryKind::File, size, Some(hex::encode(h.finalize())), None)
            }
        };
        entries.push(ManifestEntry {
            path: n.rel,
            kind,
            mode: n.mode,
            size,
            sha256,
            target,
        });
    }
    Ok(Manifest { entries })
}

thread_local! {
    static HASH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Lowercase hex SHA-256 of a file's contents (read with a 1 MiB buffer, reused per thread;
/// sha2 uses the SHA extensions of the CPU when present). A symlink is followed.
pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    HASH_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < IO_BUF {
            buf.resize(IO_BUF, 0);
        }
        let mut f = fs::File::open(path).map_err(io_err(path))?;
        let mut h = Sha256::new();
        loop {
            let n = match f.read(&mut buf[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
}

/// Digest of a tree: `manifest(root)?.digest()`. Used to pin local source directories.
pub fn tree_digest(root: &Path) -> Result<String, ArchiveError> {
    Ok(manifest(root)?.digest())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// Builds tar streams entry by entry, with raw (unvalidated) names.
    struct RawTar {
        buf: Vec<u8>,
    }

    impl RawTar {
        fn new() -> Self {
            RawTar { buf: Vec::new() }
        }

        fn entry(&mut self, name: &[u8], typ: u8, link: &[u8], mode: u32, mtime: u64, data: &[u8]) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_mtime(mtime);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::new(typ));
            h.set_cksum();
            self.buf.extend_from_slice(h.as_bytes());
            self.buf.extend_from_slice(data);
            let rem = data.len() % 512;
            if rem != 0 {
                self.buf.extend(std::iter::repeat_n(0u8, 512 - rem));
            }
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(name.as_bytes(), b'0', b"", 0o644, 1_600_000_000, data)
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name.as_bytes(), b'5', b"", 0o755, 1_600_000_000, b"")
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name.as_bytes(), b'2', target.as_bytes(), 0o777, 1_600_000_000, b"")
        }
        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name.as_bytes(), b'1', target.as_bytes(), 0o644, 1_600_000_000, b"")
        }
        fn pax_global(&mut self) -> &mut Self {
            let rec = pax_record("comment", "0123456789abcdef0123456789abcdef01234567");
            self.entry(b"pax_global_header", b'g', b"", 0o666, 0, rec.as_bytes())
        }
        fn pax_local(&mut self, key: &str, value: &str) -> &mut Self {
            let rec = pax_record(key, value);
            self.entry(b"PaxHeaders/x", b'x', b"", 0o644, 0, rec.as_bytes())
        }
        fn finish(&mut self) -> Vec<u8> {
            let mut out = self.buf.clone();
            out.extend(std::iter::repeat_n(0u8, 1024));
            out
        }
    }

    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let s = format!("{len}{body}");
            if s.len() == len {
                return s;
            }
            len = s.len();
        }
    }

    fn unpack_bytes(bytes: &[u8], dest: &Path, strip: bool) -> Result<UnpackStats, ArchiveError> {
        unpack(
            bytes,
            Compression::None,
            dest,
            &UnpackOptions {
                strip_single_top_dir: strip,
                ..Default::default()
            },
        )
    }

    fn expect_unsafe(r: Result<UnpackStats, ArchiveError>, entry: &str, reason: UnsafeReason) {
        match r {
            Err(ArchiveError::UnsafeEntry { entry: e, reason: r }) => {
                assert_eq!(e, entry);
                assert_eq!(r, reason);
            }
            other => panic!("expected unsafe entry {entry:?} ({reason}), got {other:?}"),
        }
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write(path: &Path, data: &[u8]) {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).unwrap();
        }
        fs::write(path, data).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mtime_of(path: &Path) -> i64 {
        fs::symlink_metadata(path).unwrap().mtime()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    // ----- unpack: rejections -------------------------------------------------------------

    #[test]
    fn rejects_absolute_path() {
        let t = tmp();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("pwned");
        let name = victim.to_str().unwrap().to_string();
        let ar = RawTar::new().file(&name, b"x").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            &name,
            UnsafeReason::AbsolutePath,
        );
        assert!(!victim.exists());
    }

    #[test]
    fn rejects_parent_components() {
        for name in ["../pwned", "a/../../pwned", "a/b/..", "./.."] {
            let t = tmp();
            let ar = RawTar::new().dir("a/").file(name, b"x").finish();
            expect_unsafe(
                unpack_bytes(&ar, &t.path().join("d"), false),
                name,
                UnsafeReason::ParentComponent,
            );
            assert!(!t.path().join("pwned").exists());
        }
    }

    #[test]
    fn rejects_absolute_symlink() {
        let t = tmp();
        let ar = RawTar::new().symlink("etc", "/etc").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "etc",
            UnsafeReason::AbsoluteLinkTarget { target: "/etc".into() },
        );
    }

    #[test]
    fn rootfs_mode_keeps_absolute_links_but_never_writes_through_them() {
        let t = tmp();
        let dest = t.path().join("root");
        let options = UnpackOptions {
            allow_any_symlink_target: true,
            ..Default::default()
        };
        let ar = RawTar::new()
            .symlink("lib64", "/usr/lib64")
            .symlink("up", "../../..")
            .finish();
        unpack(&ar[..], Compression::None, &dest, &options).unwrap();
        assert_eq!(fs::read_link(dest.join("lib64")).unwrap(), Path::new("/usr/lib64"));
        // An entry below such a link is still refused: nothing lands on the host's /usr.
        let dest2 = t.path().join("root2");
        let ar = RawTar::new().symlink("etc", "/etc").file("etc/pwned", b"x").finish();
        let err = unpack(&ar[..], Compression::None, &dest2, &options).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{err}");
        assert!(!Path::new("/etc/pwned").exists());
        // Entry paths stay confined too.
        let dest3 = t.path().join("root3");
        let ar = RawTar::new().file("../pwned", b"x").finish();
        assert!(unpack(&ar[..], Compression::None, &dest3, &options).is_err());
    }

    #[test]
    fn rejects_escaping_relative_symlink() {
        for (name, target) in [("a", "../x"), ("sub/l", "../../x"), ("l", "sub/../../x")] {
            let t = tmp();
            let ar = RawTar::new().dir("sub/").symlink(name, target).finish();
            expect_unsafe(
                unpack_bytes(&ar, &t.path().join("d"), false),
                name,
                UnsafeReason::LinkEscapes { target: target.into() },
            );
        }
    }

    #[test]
    fn accepts_symlinks_that_stay_inside() {
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .symlink("a", ".")
            .dir("sub/")
            .symlink("sub/up", "..")
            .symlink("sub/sib", "../a/x")
            .symlink("dangling", "nothing/here")
            .finish();
        let st = unpack_bytes(&ar, &d, false).unwrap();
        assert_eq!(st.files, 4);
        assert_eq!(fs::read_link(d.join("a")).unwrap(), Path::new("."));
        assert_eq!(fs::read_link(d.join("sub/up")).unwrap(), Path::new(".."));
    }

    #[test]
    fn rejects_escape_through_symlink_chain() {
        // Lexically `d/up/..` is `d`, but `d/up` is a link to the root, so it is the parent of dest.
        let t = tmp();
        let ar = RawTar::new()
            .dir("d/")
            .symlink("x", "d/up/..")
            .symlink("d/up", "..")
            .finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "x",
            UnsafeReason::LinkEscapes {
                target: "d/up/..".into(),
            },
        );
    }

    #[test]
    fn rejects_hardlink_outside() {
        for target in ["../etc/passwd", "/etc/passwd", "a/../../x"] {
            let t = tmp();
            let ar = RawTar::new().file("a", b"x").hardlink("h", target).finish();
            expect_unsafe(
                unpack_bytes(&ar, &t.path().join("d"), false),
                "h",
                UnsafeReason::HardLinkOutside { target: target.into() },
            );
        }
    }

    #[test]
    fn rejects_hardlink_to_missing_or_later_entry() {
        let t = tmp();
        let ar = RawTar::new().hardlink("h", "later").file("later", b"x").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "h",
            UnsafeReason::HardLinkTargetMissing { target: "later".into() },
        );
        // A directory is not a valid hard link target either.
        let t = tmp();
        let ar = RawTar::new().dir("dir/").hardlink("h", "dir").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "h",
            UnsafeReason::HardLinkTargetMissing { target: "dir".into() },
        );
    }

    #[test]
    fn accepts_hardlinks_inside() {
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new().file("./a", b"hello").hardlink("./sub/b", "./a").finish();
        unpack_bytes(&ar, &d, false).unwrap();
        let (ma, mb) = (
            fs::metadata(d.join("a")).unwrap(),
            fs::metadata(d.join("sub/b")).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino());
        assert_eq!(fs::read(d.join("sub/b")).unwrap(), b"hello");
    }

    #[test]
    fn rejects_hardlink_to_symlink_that_escapes_from_its_new_place() {
        // `a/b/l -> ../x` stays inside; a hard link to it at the top is a symlink `h -> ../x`.
        let t = tmp();
        let ar = RawTar::new()
            .dir("a/b/")
            .symlink("a/b/l", "../x")
            .hardlink("h", "a/b/l")
            .finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "h",
            UnsafeReason::LinkEscapes { target: "../x".into() },
        );
        // A hard link to a symlink in the same directory is fine.
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .dir("a/b/")
            .symlink("a/b/l", "../x")
            .hardlink("a/b/h", "a/b/l")
            .finish();
        unpack_bytes(&ar, &d, false).unwrap();
        assert_eq!(fs::read_link(d.join("a/b/h")).unwrap(), Path::new("../x"));
    }

    #[test]
    fn rejects_devices_and_fifos() {
        for (typ, kind) in [(b'3', "character device"), (b'4', "block device"), (b'6', "fifo")] {
            let t = tmp();
            let ar = RawTar::new().entry(b"dev/node", typ, b"", 0o644, 0, b"").finish();
            expect_unsafe(
                unpack_bytes(&ar, &t.path().join("d"), false),
                "dev/node",
                UnsafeReason::SpecialFile { kind },
            );
        }
    }

    #[test]
    fn rejects_write_through_symlink() {
        // `link -> sub`, then `link/file`: refused, nothing written in sub either.
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .dir("sub/")
            .symlink("link", "sub")
            .file("link/file", b"x")
            .finish();
        expect_unsafe(
            unpack_bytes(&ar, &d, false),
            "link/file",
            UnsafeReason::ThroughSymlink { symlink: "link".into() },
        );
        assert!(!d.join("sub/file").exists());
        // `a -> .` is fine by itself, but `a/f` goes through it.
        let t = tmp();
        let ar = RawTar::new().symlink("a", ".").file("a/f", b"x").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "a/f",
            UnsafeReason::ThroughSymlink { symlink: "a".into() },
        );
        // Deeper: a symlink in the middle of the path, and a hard link through a symlink.
        let t = tmp();
        let ar = RawTar::new()
            .dir("x/")
            .symlink("x/l", ".")
            .file("x/l/y/z", b"x")
            .finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "x/l/y/z",
            UnsafeReason::ThroughSymlink { symlink: "x/l".into() },
        );
        let t = tmp();
        let ar = RawTar::new()
            .file("f", b"x")
            .symlink("l", ".")
            .hardlink("l/h", "f")
            .finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "l/h",
            UnsafeReason::ThroughSymlink { symlink: "l".into() },
        );
    }

    #[test]
    fn replacing_a_symlink_does_not_follow_it() {
        // A later entry with the symlink's own path replaces the link, never writes through it.
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .file("real", b"orig")
            .symlink("l", "real")
            .file("l", b"new")
            .finish();
        unpack_bytes(&ar, &d, false).unwrap();
        assert_eq!(fs::read(d.join("real")).unwrap(), b"orig");
        assert_eq!(fs::read(d.join("l")).unwrap(), b"new");
        assert!(!fs::symlink_metadata(d.join("l")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn rejects_file_replacing_directory_and_bad_types() {
        let t = tmp();
        let ar = RawTar::new().dir("a/").file("a/x", b"1").file("a", b"2").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "a",
            UnsafeReason::ReplacesDirectory,
        );
        let t = tmp();
        let ar = RawTar::new().entry(b"weird", b'Z', b"", 0o644, 0, b"").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), false),
            "weird",
            UnsafeReason::UnsupportedEntryType { code: b'Z' },
        );
    }

    #[test]
    fn dest_must_be_empty() {
        let t = tmp();
        write(&t.path().join("d/old"), b"x");
        let ar = RawTar::new().file("a", b"x").finish();
        assert!(matches!(
            unpack_bytes(&ar, &t.path().join("d"), false),
            Err(ArchiveError::DestNotEmpty { .. })
        ));
        // An existing empty directory is fine.
        fs::create_dir(t.path().join("e")).unwrap();
        unpack_bytes(&ar, &t.path().join("e"), false).unwrap();
    }

    #[test]
    fn error_messages_name_entry_and_reason() {
        let t = tmp();
        let ar = RawTar::new().symlink("evil", "../../etc").finish();
        let err = unpack_bytes(&ar, &t.path().join("d"), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsafe archive entry \"evil\": symlink target \"../../etc\" escapes the destination"
        );
    }

    // ----- unpack: strip_single_top_dir ---------------------------------------------------

    #[test]
    fn strips_single_top_dir() {
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .dir("pkg-1.0/")
            .file("pkg-1.0/README", b"hi")
            .dir("pkg-1.0/src/")
            .file("pkg-1.0/src/main.c", b"int main;")
            .symlink("pkg-1.0/link", "src/main.c")
            .finish();
        let st = unpack_bytes(&ar, &d, true).unwrap();
        assert_eq!(st.stripped_top_dir.as_deref(), Some("pkg-1.0"));
        assert_eq!(fs::read(d.join("README")).unwrap(), b"hi");
        assert_eq!(fs::read(d.join("src/main.c")).unwrap(), b"int main;");
        assert_eq!(fs::read(d.join("link")).unwrap(), b"int main;");
        assert!(!d.join("pkg-1.0").exists());
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3);
        // Without the option nothing is stripped.
        let d2 = t.path().join("d2");
        let st = unpack_bytes(&ar, &d2, false).unwrap();
        assert_eq!(st.stripped_top_dir, None);
        assert!(d2.join("pkg-1.0/README").exists());
    }

    #[test]
    fn strips_with_pax_global_header_and_implicit_top() {
        // As produced by `git archive --prefix=pkg/`: a pax global header first, `./` prefixes.
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .pax_global()
            .file("./pkg/a", b"1")
            .file("./pkg/pkg/b", b"2")
            .finish();
        let st = unpack_bytes(&ar, &d, true).unwrap();
        assert_eq!(st.stripped_top_dir.as_deref(), Some("pkg"));
        assert_eq!(fs::read(d.join("a")).unwrap(), b"1");
        assert_eq!(fs::read(d.join("pkg/b")).unwrap(), b"2");
        assert!(!d.join("pax_global_header").exists());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
    }

    #[test]
    fn does_not_strip_several_tops_or_a_single_file() {
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new().file("a/x", b"1").file("b/y", b"2").finish();
        let st = unpack_bytes(&ar, &d, true).unwrap();
        assert_eq!(st.stripped_top_dir, None);
        assert!(d.join("a/x").exists() && d.join("b/y").exists());
        let d = t.path().join("e");
        let ar = RawTar::new().file("only", b"1").finish();
        assert_eq!(unpack_bytes(&ar, &d, true).unwrap().stripped_top_dir, None);
        assert!(d.join("only").exists());
    }

    #[test]
    fn rejects_symlink_escaping_after_strip() {
        // Inside `dest` before stripping, outside after.
        let t = tmp();
        let ar = RawTar::new().dir("pkg/").symlink("pkg/l", "../other").finish();
        expect_unsafe(
            unpack_bytes(&ar, &t.path().join("d"), true),
            "pkg/l",
            UnsafeReason::LinkEscapes {
                target: "../other".into(),
            },
        );
        unpack_bytes(&ar, &t.path().join("e"), false).unwrap();
    }

    // ----- unpack: metadata ---------------------------------------------------------------

    #[test]
    fn keeps_mtimes_and_exec_bits_drops_special_bits() {
        let t = tmp();
        let d = t.path().join("d");
        let ar = RawTar::new()
            .entry(b"dir/", b'5', b"", 0o1777, 1_111_111_111, b"")
            .entry(b"dir/tool", b'0', b"", 0o4755, 1_222_222_222, b"#!/bin/sh\n")
            .entry(b"dir/sgid", b'0', b"", 0o2644, 1_222_222_223, b"x")
            .entry(b"dir/ro", b'0', b"", 0o444, 1_222_222_224, b"x")
            .entry(b"dir/link", b'2', b"tool", 0o777, 1_333_333_333, b"")
            .entry(b"rodir/", b'5', b"", 0o555, 1_444_444_444, b"")
            .entry(b"rodir/f", b'0', b"", 0o600, 1_555_555_555, b"x")
            .finish();
        unpack_bytes(&ar, &d, false).unwrap();
        assert_eq!(mode_of(&d.join("dir")), 0o777);
        assert_eq!(mode_of(&d.join("dir/tool")), 0o755);
        assert_eq!(mode_of(&d.join("dir/sgid")), 0o644);
        assert_eq!(mode_of(&d.join("dir/ro")), 0o444);
        assert_eq!(mode_of(&d.join("rodir")), 0o555);
        assert_eq!(mode_of(&d.join("rodir/f")), 0o600);
        assert_eq!(mtime_of(&d.join("dir")), 1_111_111_111);
        assert_eq!(mtime_of(&d.join("dir/tool")), 1_222_222_222);
        assert_eq!(mtime_of(&d.join("dir/link")), 1_333_333_333);
        assert_eq!(mtime_of(&d.join("rodir")), 1_444_444_444);
        assert_eq!(mtime_of(&d.join("rodir/f")), 1_555_555_555);
        chmod(&d.join("rodir"), 0o755); // so that the tempdir can be removed by non-root
    }

    #[test]
    fn pax_path_and_subsecond_mtime() {
        let t = tmp();
        let d = t.path().join("d");
        let long = format!("{}/file.txt", "x".repeat(150));
        let ar = RawTar::new()
            .pax_local("mtime", "1700000000.25")
            .file("short", b"a")
            .pax_local("path", &long)
            .file("ignored-name", b"b")
            .finish();
        unpack_bytes(&ar, &d, false).unwrap();
        let m = fs::metadata(d.join("short")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
        assert_eq!(fs::read(d.join(&long)).unwrap(), b"b");
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("1.x"), None);
    }

    #[test]
    fn truncated_or_corrupt_streams_are_read_errors() {
        let t = tmp();
        let ar = RawTar::new().file("a", &vec![7u8; 5000]).finish();
        let r = unpack_bytes(&ar[..512 + 1000], &t.path().join("d"), false);
        assert!(matches!(r, Err(ArchiveError::Read { .. })), "{r:?}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&ar).unwrap();
        let gz = gz.finish().unwrap();
        let r = unpack(
            &gz[..gz.len() - 6],
            Compression::Gzip,
            &t.path().join("e"),
            &UnpackOptions::default(),
        );
        assert!(matches!(r, Err(ArchiveError::Read { .. })), "{r:?}");
    }

    // ----- compression --------------------------------------------------------------------

    fn crate_built_archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_mtime(1_234_567_890);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "top/", io::empty()).unwrap();
        let data = (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_234_567_891);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "top/data.bin", &data[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "top/link", "data.bin").unwrap();
        b.into_inner().unwrap()
    }

    fn compress_with_crates(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn all_compressions_round_trip() {
        let tarball = crate_built_archive();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
        ] {
            let t = tmp();
            let file = t.path().join(format!("src.{}", c.extension()));
            fs::write(&file, compress_with_crates(c, &tarball)).unwrap();
            let head = fs::read(&file).unwrap();
            assert_eq!(Compression::sniff(&head[..head.len().min(512)]), Some(c));
            let d = t.path().join("out");
            let st = unpack_file(
                &file,
                &d,
                &UnpackOptions {
                    strip_single_top_dir: true,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(st.files, 2, "{c}");
            assert_eq!(st.bytes, 200_000, "{c}");
            let data = fs::read(d.join("data.bin")).unwrap();
            assert_eq!(data.len(), 200_000);
            assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("data.bin"));
            assert_eq!(mtime_of(&d.join("data.bin")), 1_234_567_891);
        }
    }

    #[test]
    fn pack_unpack_round_trip_every_compression() {
        let t = tmp();
        let src = t.path().join("src");
        sample_tree(&src);
        let want = manifest(&src).unwrap();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
        ] {
            let mut out = Vec::new();
            let opts = PackOptions {
                top_dir: Some("p".into()),
                mtime: 42,
                compression: c,
                level: None,
            };
            let st = pack(&[&src], &mut out, &opts).unwrap();
            assert_eq!(st.bytes_out, out.len() as u64);
            assert_eq!(st.tar_bytes % 10240, 0);
            assert_eq!(Compression::sniff(&out[..out.len().min(512)]), Some(c));
            let d = t.path().join(format!("out-{c}"));
            unpack(
                &out[..],
                c,
                &d,
                &UnpackOptions {
                    strip_single_top_dir: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let got = manifest(&d).unwrap();
            assert_eq!(got.diff(&want), Vec::<String>::new(), "{c}");
            assert_eq!(got, want);
            assert_eq!(mtime_of(&d.join("bin/tool")), 42);
        }
    }

    #[test]
    fn sniff_and_file_names() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(Compression::sniff(b"\xfd7zXZ\0rest"), Some(Compression::Xz));
        assert_eq!(Compression::sniff(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::sniff(&RawTar::new().file("a", b"").finish()),
            Some(Compression::None)
        );
        assert_eq!(Compression::sniff(b"PK\x03\x04"), None);
        assert_eq!(
            Compression::from_file_name("bzip2-1.0.8.tar.gz"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_file_name("x.TGZ"), Some(Compression::Gzip));
        assert_eq!(Compression::from_file_name("x.tar.xz"), Some(Compression::Xz));
        assert_eq!(Compression::from_file_name("x.tbz2"), Some(Compression::Bzip2));
        assert_eq!(Compression::from_file_name("x.tar.zst"), Some(Compression::Zstd));
        assert_eq!(Compression::from_file_name("x.tar"), Some(Compression::None));
        assert_eq!(Compression::from_file_name("x.zip"), None);
        assert_eq!(serde_json::to_string(&Compression::Bzip2).unwrap(), "\"bzip2\"");
    }

    #[test]
    fn unsupported_compression_is_reported() {
        let t = tmp();
        let f = t.path().join("x.zip");
        fs::write(&f, b"PK\x03\x04rest of a zip").unwrap();
        let err = unpack_file(&f, &t.path().join("d"), &UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsupportedCompression { .. }));
        assert!(err.to_string().contains("zip archive"), "{err}");
        assert!(matches!(
            check_level(Compression::Gzip, Some(10)),
            Err(ArchiveError::InvalidOption(_))
        ));
    }

    // ----- pack ---------------------------------------------------------------------------

    /// A small tree with files, an executable, nested dirs, symlinks, a hard link, a long name.
    fn sample_tree(root: &Path) {
        write(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n");
        chmod(&root.join("bin/tool"), 0o775);
        write(&root.join("share/doc/README"), b"readme\n");
        chmod(&root.join("share/doc/README"), 0o664);
        write(&root.join("lib/libx.so.1.2"), &vec![0xabu8; 70_000]);
        symlink("libx.so.1.2", root.join("lib/libx.so.1")).unwrap();
        symlink("../lib/libx.so.1", root.join("bin/lib-link")).unwrap();
        fs::create_dir_all(root.join("empty/dir")).unwrap();
        let long = format!("share/{}/{}.txt", "d".repeat(60), "n".repeat(80));
        write(&root.join(&long), b"long name\n");
        symlink(format!("../../{long}"), root.join("share/doc/long-link-target")).unwrap();
        fs::hard_link(root.join("bin/tool"), root.join("bin/tool-alias")).unwrap();
    }

    /// The same tree built in another order, with other mtimes and group-writable modes.
    fn sample_tree_other_order(root: &Path) {
        fs::create_dir_all(root.join("empty/dir")).unwrap();
        let long = format!("share/{}/{}.txt", "d".repeat(60), "n".repeat(80));
        write(&root.join(&long), b"long name\n");
        write(&root.join("lib/libx.so.1.2"), &vec![0xabu8; 70_000]);
        fs::create_dir_all(root.join("bin")).unwrap();
        symlink("../lib/libx.so.1", root.join("bin/lib-link")).unwrap();
        write(&root.join("bin/tool-alias"), b"#!/bin/sh\necho hi\n");
        fs::hard_link(root.join("bin/tool-alias"), root.join("bin/tool")).unwrap();
        chmod(&root.join("bin/tool"), 0o755);
        symlink("libx.so.1.2", root.join("lib/libx.so.1")).unwrap();
        write(&root.join("share/doc/README"), b"readme\n");
        chmod(&root.join("share/doc/README"), 0o644);
        symlink(format!("../../{long}"), root.join("share/doc/long-link-target")).unwrap();
        chmod(&root.join("share"), 0o775);
        for e in walkdir::WalkDir::new(root) {
            let p = e.unwrap().into_path();
            set_times_nofollow(&p, 1_000_000_000, 123).unwrap();
        }
    }

    #[derive(Debug, PartialEq)]
    struct Listed {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        size: u64,
    }

    fn list(archive: &[u8]) -> Vec<Listed> {
        let mut ar = tar::Archive::new(archive);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert!(h.as_gnu().is_some());
                assert_eq!(h.username_bytes(), Some(&b""[..]));
                assert_eq!(h.groupname_bytes(), Some(&b""[..]));
                Listed {
                    path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()),
                    size: e.size(),
                }
            })
            .collect()
    }

    fn pack_vec(roots: &[&Path], opts: &PackOptions) -> Vec<u8> {
        let mut out = Vec::new();
        pack(roots, &mut out, opts).unwrap();
        out
    }

    #[test]
    fn pack_is_deterministic() {
        let t = tmp();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        sample_tree(&a);
        sample_tree_other_order(&b);
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            let opts = PackOptions {
                top_dir: Some("pkg".into()),
                mtime: 1_700_000_000,
                compression: c,
                level: None,
            };
            let x = pack_vec(&[&a], &opts);
            // Rewrite every file (new mtimes, new inodes) and pack again.
            for e in walkdir::WalkDir::new(&a) {
                let e = e.unwrap();
                if e.file_type().is_file() {
                    let data = fs::read(e.path()).unwrap();
                    fs::write(e.path(), data).unwrap();
                }
            }
            let y = pack_vec(&[&a], &opts);
            let z = pack_vec(&[&b], &opts);
            assert!(x == y, "{c}: repacking the same tree differs");
            assert!(x == z, "{c}: packing an equivalent tree differs");
        }
        assert_eq!(manifest(&a).unwrap(), manifest(&b).unwrap());
    }

    #[test]
    fn pack_normalizes_metadata_and_orders_entries() {
        let t = tmp();
        let a = t.path().join("a");
        sample_tree(&a);
        write(&a.join("a-b"), b"");
        write(&a.join("suid"), b"s");
        chmod(&a.join("suid"), 0o6775);
        let opts = PackOptions {
            top_dir: Some("pkg".into()),
            mtime: 1_700_000_000,
            ..Default::default()
        };
        let out = pack_vec(&[&a], &opts);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut plain).unwrap();
        let entries = list(&plain);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(paths[0], "pkg/");
        assert!(paths.contains(&"pkg/empty/dir/"));
        for e in &entries {
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{e:?}");
        }
        let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
        assert_eq!(get("pkg/bin/tool").mode, 0o755);
        assert_eq!(get("pkg/share/doc/README").mode, 0o644);
        assert_eq!(get("pkg/suid").mode, 0o755);
        assert_eq!(get("pkg/lib/libx.so.1").kind, tar::EntryType::Symlink);
        assert_eq!(get("pkg/lib/libx.so.1").mode, 0o777);
        assert_eq!(get("pkg/lib/libx.so.1").link.as_deref(), Some("libx.so.1.2"));
        // Hard links: the first path in sorted order holds the data.
        assert_eq!(get("pkg/bin/tool").kind, tar::EntryType::Regular);
        assert_eq!(get("pkg/bin/tool-alias").kind, tar::EntryType::Link);
        assert_eq!(get("pkg/bin/tool-alias").link.as_deref(), Some("pkg/bin/tool"));
        let long = format!("pkg/share/{}/{}.txt", "d".repeat(60), "n".repeat(80));
        assert_eq!(get(&long).size, 10);
        let ll = get("pkg/share/doc/long-link-target").link.clone().unwrap();
        assert!(ll.len() > 100);
        // gzip header: no name, mtime 0, OS byte 3.
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, GZIP_OS_BYTE]);
    }

    #[test]
    fn hard_links_are_stable() {
        let t = tmp();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        // a: x is the original, then y and z/w link to it; b: built from z/w.
        write(&a.join("x"), b"same inode");
        fs::create_dir(a.join("z")).unwrap();
        fs::hard_link(a.join("x"), a.join("y")).unwrap();
        fs::hard_link(a.join("x"), a.join("z/w")).unwrap();
        write(&b.join("z/w"), b"same inode");
        fs::hard_link(b.join("z/w"), b.join("y")).unwrap();
        fs::hard_link(b.join("z/w"), b.join("x")).unwrap();
        let opts = PackOptions {
            compression: Compression::None,
            ..Default::default()
        };
        let (pa, pb) = (pack_vec(&[&a], &opts), pack_vec(&[&b], &opts));
        assert!(pa == pb);
        let l = list(&pa);
        let kinds: Vec<(&str, tar::EntryType, Option<&str>)> =
            l.iter().map(|e| (e.path.as_str(), e.kind, e.link.as_deref())).collect();
        assert_eq!(
            kinds,
            vec![
                ("x", tar::EntryType::Regular, None),
                ("y", tar::EntryType::Link, Some("x")),
                ("z/", tar::EntryType::Directory, None),
                ("z/w", tar::EntryType::Link, Some("x")),
            ]
        );
        let d = t.path().join("d");
        unpack(&pa[..], Compression::None, &d, &UnpackOptions::default()).unwrap();
        assert_eq!(
            fs::metadata(d.join("z/w")).unwrap().ino(),
            fs::metadata(d.join("x")).unwrap().ino()
        );
    }

    #[test]
    fn merges_roots() {
        let t = tmp();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join("bin/a"), b"A");
        write(&a.join("share/common"), b"same");
        symlink("a", a.join("bin/same-link")).unwrap();
        write(&b.join("bin/b"), b"B");
        write(&b.join("share/common"), b"same");
        symlink("a", b.join("bin/same-link")).unwrap();
        let opts = PackOptions {
            top_dir: Some("out".into()),
            compression: Compression::None,
            ..Default::default()
        };
        let mut buf = Vec::new();
        let st = pack(&[&a, &b], &mut buf, &opts).unwrap();
        let paths: Vec<String> = list(&buf).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "out/",
                "out/bin/",
                "out/bin/a",
                "out/bin/b",
                "out/bin/same-link",
                "out/share/",
                "out/share/common"
            ]
        );
        assert_eq!(st.entries, 7);
        assert_eq!(st.bytes_in, 6);
        // Root order does not matter when there is no conflict.
        assert!(pack_vec(&[&b, &a], &opts) == buf);
    }

    #[test]
    fn conflicting_roots_are_an_error() {
        let t = tmp();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join("share/f"), b"one");
        write(&b.join("share/f"), b"two");
        let err = pack(&[&a, &b], io::sink(), &PackOptions::default()).unwrap_err();
        match &err {
            ArchiveError::Conflict {
                path,
                first,
                second,
                what,
            } => {
                assert_eq!(path, "share/f");
                assert_eq!((first.as_path(), second.as_path()), (a.as_path(), b.as_path()));
                assert_eq!(*what, "content");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("share/f"));
        fs::write(b.join("share/f"), b"one").unwrap();
        chmod(&b.join("share/f"), 0o755);
        assert!(matches!(
            pack(&[&a, &b], io::sink(), &PackOptions::default()),
            Err(ArchiveError::Conflict { what: "mode", .. })
        ));
        fs::remove_file(b.join("share/f")).unwrap();
        fs::create_dir(b.join("share/f")).unwrap();
        assert!(matches!(
            pack(&[&a, &b], io::sink(), &PackOptions::default()),
            Err(ArchiveError::Conflict { what: "kind", .. })
        ));
        symlink("x", a.join("l")).unwrap();
        symlink("y", b.join("l")).unwrap();
        fs::remove_dir(b.join("share/f")).unwrap();
        assert!(matches!(
            pack(&[&a, &b], io::sink(), &PackOptions::default()),
            Err(ArchiveError::Conflict {
                what: "symlink target",
                ..
            })
        ));
    }

    #[test]
    fn pack_rejects_bad_options_and_special_files() {
        let t = tmp();
        let opts = PackOptions {
            top_dir: Some("a/b".into()),
            ..Default::default()
        };
        assert!(matches!(
            pack(&[t.path()], io::sink(), &opts),
            Err(ArchiveError::InvalidOption(_))
        ));
        let fifo = t.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            pack(&[t.path()], io::sink(), &PackOptions::default()),
            Err(ArchiveError::UnsupportedFileType { kind: "fifo", .. })
        ));
        assert!(matches!(
            manifest(t.path()),
            Err(ArchiveError::UnsupportedFileType { .. })
        ));
    }

    #[test]
    fn gnu_tar_and_gzip_accept_packed_archive() {
        if Command::new("tar").arg("--version").output().is_err() {
            eprintln!("GNU tar not installed; skipping");
            return;
        }
        let t = tmp();
        let a = t.path().join("a");
        sample_tree(&a);
        let file = t.path().join("out.tar.gz");
        let opts = PackOptions {
            top_dir: Some("pkg".into()),
            mtime: 1_700_000_000,
            ..Default::default()
        };
        pack(&[&a], fs::File::create(&file).unwrap(), &opts).unwrap();

        let gz = Command::new("gzip").arg("-t").arg(&file).status().unwrap();
        assert!(gz.success(), "gzip -t rejected the archive");

        let out = Command::new("tar")
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .arg("--numeric-owner")
            .arg("-tvzf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), manifest(&a).unwrap().entries.len() + 1);
        for line in &lines {
            assert!(line.contains(" 0/0 "), "{line}");
            assert!(line.contains(" 2023-11-14 22:13 "), "{line}");
        }
        assert!(
            lines[0].starts_with("drwxr-xr-x 0/0 ") && lines[0].ends_with(" pkg/"),
            "{}",
            lines[0]
        );
        assert!(lines
            .iter()
            .any(|l| l.starts_with("-rwxr-xr-x ") && l.ends_with(" pkg/bin/tool")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("hrwxr-xr-x ") && l.ends_with(" pkg/bin/tool-alias link to pkg/bin/tool")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("lrwxrwxrwx ") && l.ends_with(" pkg/lib/libx.so.1 -> libx.so.1.2")));

        // GNU tar extracts it to the same tree.
        let x = t.path().join("x");
        fs::create_dir(&x).unwrap();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(manifest(&x.join("pkg")).unwrap(), manifest(&a).unwrap());
    }

    #[test]
    fn unpacks_gnu_tar_output() {
        if Command::new("tar").arg("--version").output().is_err() {
            return;
        }
        let t = tmp();
        let a = t.path().join("src-1.0");
        sample_tree(&a);
        let file = t.path().join("gnu.tar.xz");
        let st = Command::new("tar")
            .args(["--sort=name", "--format=posix", "-cJf"])
            .arg(&file)
            .arg("-C")
            .arg(t.path())
            .arg("src-1.0")
            .status()
            .unwrap();
        assert!(st.success());
        let d = t.path().join("d");
        let st = unpack_file(
            &file,
            &d,
            &UnpackOptions {
                strip_single_top_dir: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(st.stripped_top_dir.as_deref(), Some("src-1.0"));
        assert_eq!(manifest(&d).unwrap(), manifest(&a).unwrap());
        let m = fs::metadata(a.join("bin/tool")).unwrap();
        let n = fs::metadata(d.join("bin/tool")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (n.mtime(), n.mtime_nsec()));
    }

    // ----- manifests ----------------------------------------------------------------------

    #[test]
    fn manifest_lists_sorted_relative_paths() {
        let t = tmp();
        let a = t.path().join("a");
        sample_tree(&a);
        let m = manifest(&a).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(paths.iter().all(|p| !p.starts_with('/') && !p.starts_with("./")));
        let tool = m.entries.iter().find(|e| e.path == "bin/tool").unwrap();
        assert_eq!((tool.kind, tool.mode, tool.size), (EntryKind::File, 0o755, 18));
        assert_eq!(
            tool.sha256.as_deref().unwrap(),
            sha256_file(&a.join("bin/tool")).unwrap()
        );
        let link = m.entries.iter().find(|e| e.path == "lib/libx.so.1").unwrap();
        assert_eq!(
            (link.kind, link.mode, link.target.as_deref()),
            (EntryKind::Symlink, 0o777, Some("libx.so.1.2"))
        );
        let dir = m.entries.iter().find(|e| e.path == "empty/dir").unwrap();
        assert_eq!((dir.kind, dir.sha256.as_ref()), (EntryKind::Dir, None));
        // JSON round trip.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
        assert_eq!(
            sha256_file(&a.join("share/doc/README")).unwrap(),
            hex::encode(Sha256::digest(b"readme\n"))
        );
    }

    #[test]
    fn manifest_digest_changes_with_one_byte_or_mode_bit() {
        let t = tmp();
        let a = t.path().join("a");
        sample_tree(&a);
        let m0 = manifest(&a).unwrap();
        let d0 = m0.digest();
        assert_eq!(d0.len(), 64);
        assert_eq!(tree_digest(&a).unwrap(), d0);
        // Group write is normalized away: no change.
        chmod(&a.join("share/doc/README"), 0o664);
        assert_eq!(tree_digest(&a).unwrap(), d0);
        // One byte.
        let mut data = fs::read(a.join("lib/libx.so.1.2")).unwrap();
        data[12345] ^= 1;
        fs::write(a.join("lib/libx.so.1.2"), &data).unwrap();
        let m1 = manifest(&a).unwrap();
        assert_ne!(m1.digest(), d0);
        assert_eq!(m1.diff(&m0), vec!["lib/libx.so.1.2".to_string()]);
        data[12345] ^= 1;
        fs::write(a.join("lib/libx.so.1.2"), &data).unwrap();
        assert_eq!(tree_digest(&a).unwrap(), d0);
        // One mode bit.
        chmod(&a.join("share/doc/README"), 0o744);
        let m2 = manifest(&a).unwrap();
        assert_ne!(m2.digest(), d0);
        assert_eq!(m2.diff(&m0), vec!["share/doc/README".to_string()]);
        // Added and removed paths; order of entries does not change the digest.
        write(&a.join("new"), b"");
        fs::remove_file(a.join("bin/lib-link")).unwrap();
        let m3 = manifest(&a).unwrap();
        assert_eq!(m3.diff(&m2), vec!["bin/lib-link".to_string(), "new".to_string()]);
        let mut rev = m3.clone();
        rev.entries.reverse();
        assert_eq!(rev.digest(), m3.digest());
    }

    #[test]
    fn manifest_rejects_non_utf8_names() {
        let t = tmp();
        let bad = t.path().join(OsStr::from_bytes(b"bad\xff"));
        fs::write(&bad, b"").unwrap();
        match manifest(t.path()) {
            Err(ArchiveError::NonUtf8Path { path }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
    }
}
