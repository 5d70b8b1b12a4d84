//! The report channel from the sandbox's processes back to the caller of [`crate::run`].
//!
//! The caller creates a close-on-exec pipe and hands its write end to the helper; the outer
//! init, the namespace's pid 1 and the command's process before `execve` all keep it. Whoever
//! fails during setup writes one [`Fail`] record; pid 1 writes the command's [`Outcome`] when
//! it ends. The `execve` of the command closes the pipe, so the command itself can never
//! write a forged record. The caller reads the records after the helper has been reaped.
//!
//! Wire format, one record per `write(2)` (kept below `PIPE_BUF`, hence atomic):
//! a tag byte (`S` setup error, `U` unsupported feature, `X` exit code, `K` killing signal),
//! a little-endian `u32` payload length, then the payload (UTF-8 text or a little-endian
//! `i32`).

use crate::{Error, Outcome};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A failure inside the sandbox's setup, as it travels back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// A setup step failed; the text names the step and the path.
    Setup(String),
    /// The kernel lacks a required feature; the text names it.
    Unsupported(String),
}

impl Fail {
    /// A setup failure "`what`: `errno text`".
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Fail {
        Fail::Setup(format!("{what}: {}", crate::sys::err_text(e)))
    }

    /// Same as [`Fail::io`] for a `nix` errno.
    pub fn errno(what: impl std::fmt::Display, e: nix::errno::Errno) -> Fail {
        Fail::Setup(format!("{what}: {}", e.desc()))
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Error {
        match f {
            Fail::Setup(m) => Error::Setup(m),
            Fail::Unsupported(feature) => Error::Unsupported { feature },
        }
    }
}

/// Largest payload; keeps a record (5 header bytes + payload) below `PIPE_BUF` (4096).
const MAX_PAYLOAD: usize = 4000;

/// The write end, held by the sandbox's processes until the command's `execve`.
pub struct Reporter {
    fd: OwnedFd,
}

impl Reporter {
    pub fn new(fd: OwnedFd) -> Reporter {
        Reporter { fd }
    }

    fn record(&self, tag: u8, payload: &[u8]) {
        // Nothing useful can be done if the caller went away: ignore the result.
        let _ = nix::unistd::write(&self.fd, &encode(tag, payload));
    }

    /// Report a panic in any sandbox process (before the command's `execve`) as a setup
    /// failure, instead of leaving the caller with a bare exit status.
    pub fn report_panics(&self) {
        PANIC_FD.store(self.fd.as_raw_fd(), Ordering::SeqCst);
        std::panic::set_hook(Box::new(|info| {
            let msg = format!("sandbox init panicked: {info}");
            let record = encode(b'S', truncate_utf8(&msg).as_bytes());
            // SAFETY: writes a live buffer to the report descriptor, which stays open for the
            // life of the process (the Reporter lives until exit).
            unsafe { libc::write(PANIC_FD.load(Ordering::SeqCst), record.as_ptr().cast(), record.len()) };
        }));
    }

    pub fn fail(&self, f: &Fail) {
        match f {
            Fail::Setup(m) => self.record(b'S', truncate_utf8(m).as_bytes()),
            Fail::Unsupported(m) => self.record(b'U', truncate_utf8(m).as_bytes()),
        }
    }

    pub fn outcome(&self, o: Outcome) {
        match o {
            Outcome::Exited(c) => self.record(b'X', &c.to_le_bytes()),
            Outcome::Signaled(s) => self.record(b'K', &s.to_le_bytes()),
        }
    }
}

/// Descriptor the panic hook reports to (see [`Reporter::report_panics`]).
static PANIC_FD: AtomicI32 = AtomicI32::new(-1);

fn encode(tag: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(tag);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

fn truncate_utf8(s: &str) -> &str {
    if s.len() <= MAX_PAYLOAD {
        return s;
    }
    let mut end = MAX_PAYLOAD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What the sandbox reported.
#[derive(Debug, Default)]
pub struct Report {
    /// The first failure reported, if any.
    pub fail: Option<Fail>,
    pub outcome: Option<Outcome>,
}

/// Read every record available on the read end. Call it only once the helper has been
/// reaped: all writers are gone by then, except copies of the write end that a concurrent
/// `fork` elsewhere in the caller's process may briefly hold, which is why the read is
/// non-blocking instead of waiting for end-of-file.
pub fn read_all(fd: OwnedFd) -> Report {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut file = std::fs::File::from(fd);
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EAGAIN: nothing more was written
        }
    }
    parse(&data)
}

fn parse(mut data: &[u8]) -> Report {
    let mut report = Report::default();
    while data.len() >= 5 {
        let tag = data[0];
        let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() < 5 + len {
            break;
        }
        let payload = &data[5..5 + len];
        data = &data[5 + len..];
        let text = || String::from_utf8_lossy(payload).into_owned();
        let int = || payload.try_into().ok().map(i32::from_le_bytes);
        match tag {
            b'S' if report.fail.is_none() => report.fail = Some(Fail::Setup(text())),
            b'U' if report.fail.is_none() => report.fail = Some(Fail::Unsupported(text())),
            b'X' => report.outcome = int().map(Outcome::Exited),
            b'K' => report.outcome = int().map(Outcome::Signaled),
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let rep = Reporter::new(w);
        rep.fail(&Fail::Setup("mount --bind /x on /y: No such file or directory".into()));
        rep.fail(&Fail::Unsupported("later failures are ignored".into()));
        rep.outcome(Outcome::Signaled(9));
        drop(rep);
        let report = read_all(r);
        assert_eq!(
            report.fail,
            Some(Fail::Setup("mount --bind /x on /y: No such file or directory".into()))
        );
        assert_eq!(report.outcome, Some(Outcome::Signaled(9)));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let rep = Reporter::new(w);
        rep.fail(&Fail::Setup("é".repeat(3000)));
        drop(rep);
        match read_all(r).fail {
            Some(Fail::Setup(m)) => assert!(m.len() <= MAX_PAYLOAD && m.starts_with('é')),
            other => panic!("{other:?}"),
        }
    }
}
