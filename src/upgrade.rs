//! Rolling restart (SIGUSR2): a new pglittle process takes over this one's
//! listening socket and its idle clients, and no client sees an error.
//!
//! 1. The old process makes a Unix `SOCK_SEQPACKET` pair, starts the same
//!    executable with the same arguments and the pair's other end
//!    inherited (its number in `PGLITTLE_UPGRADE_FD`), and sends it the
//!    listening sockets (`SCM_RIGHTS`): the same sockets, so connections
//!    waiting in the accept queue are not lost.
//! 2. The new process starts serving on them and answers "ready".
//! 3. The old process stops accepting and drains: a client in a
//!    transaction finishes it; an idle one (no server held, plain TCP) is
//!    sent over, its socket with its session as bytes
//!    (`session::handover`), and served on by the new process; the rest
//!    (TLS, session mode, pinned) are served here until they leave. The
//!    old process exits when all are gone, or at `shutdown_timeout`.
//!
//! The new process is the old one's child until the old one exits (then
//! init's): under a supervisor that follows a PID (systemd's `Type=simple`)
//! use `PIDFile`/`Type=forking` semantics or run pglittle under a shell
//! that waits for its children; in Kubernetes, restart by rolling the pods
//! (README: "Rolling restarts").

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

/// The environment variable naming the inherited end of the pair.
pub const ENV_FD: &str = "PGLITTLE_UPGRADE_FD";
/// The largest message: a session with many prepared statements. A
/// session that does not fit is drained instead.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Message kinds.
pub const LISTENER: u8 = b'L';
pub const METRICS: u8 = b'M';
pub const READY: u8 = b'R';
pub const CLIENT: u8 = b'C';

/// One end of the pair between the old and the new process.
pub struct Channel {
    fd: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs a system call again while a signal interrupts it; its result.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Room for one file descriptor's control message, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlRoom([u8; 64]);

impl Channel {
    /// A connected pair, close-on-exec (the new process's end is made
    /// inheritable only in the child, by [`spawn_successor`]).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0 as libc::c_int; 2];
        let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        check(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) })?;
        // SAFETY: both descriptors were just created and are owned here only.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&a, &b] {
            let size = (4 * MAX_MESSAGE) as libc::c_int;
            for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                // SAFETY: a valid socket and a pointer to an int of the right size.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
        }
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// The end this process inherited, if it was started by a rolling
    /// restart. (The variable stays set: changing the environment of a
    /// running multi-threaded process is a race, and a later restart sets
    /// its own child's value anyway.)
    pub fn inherited() -> Option<io::Result<Channel>> {
        let value = std::env::var(ENV_FD).ok()?;
        let fd: RawFd = match value.parse() {
            Ok(fd) if fd > 2 => fd,
            _ => {
                return Some(Err(io::Error::other(format!(
                    "{ENV_FD}={value:?} is not a descriptor"
                ))))
            }
        };
        // SAFETY: the old process passed this descriptor to us for this
        // purpose; nothing else in this process uses it. Close-on-exec again.
        let fd = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            OwnedFd::from_raw_fd(fd)
        };
        Some(Ok(Channel { fd }))
    }

    /// Sends one message: a kind byte, a body, and optionally a descriptor.
    pub fn send(&self, kind: u8, body: &[u8], fd: Option<RawFd>) -> io::Result<()> {
        if 1 + body.len() > MAX_MESSAGE {
            return Err(io::Error::other("message too large to hand over"));
        }
        let mut kind = [kind];
        // The kind byte and the body, gathered: no copy of the body.
        let mut iov = [
            libc::iovec {
                iov_base: kind.as_mut_ptr().cast(),
                iov_len: 1,
            },
            libc::iovec {
                iov_base: body.as_ptr().cast_mut().cast(),
                iov_len: body.len(),
            },
        ];
        let mut room = ControlRoom([0; 64]);
        // SAFETY: zeroed is a valid msghdr; every pointer set below outlives
        // the sendmsg call (sendmsg only reads through the iovecs, so the
        // body's const pointer is not written), and the control message is
        // built with the CMSG_* helpers inside `room`, which is large and
        // aligned enough.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            if let Some(fd) = fd {
                let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
                msg.msg_control = room.0.as_mut_ptr().cast();
                msg.msg_controllen = space;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            }
            retrying(|| libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)).map(|_| ())
        }
    }

    /// Receives one message into `buf` (resized to it): its kind, and the
    /// descriptor it carried. `None` when the other process closed its end.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<(u8, Option<OwnedFd>)>> {
        buf.resize(MAX_MESSAGE, 0);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut room = ControlRoom([0; 64]);
        // SAFETY: as in `send`; recvmsg writes at most iov_len bytes into
        // `buf` and at most msg_controllen into `room`, and a received
        // descriptor is owned by this process from then on.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = room.0.as_mut_ptr().cast();
            msg.msg_controllen = room.0.len();
            let n =
                retrying(|| libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC))?;
            let mut fd = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                    fd = Some(OwnedFd::from_raw_fd(raw));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            if n == 0 {
                return Ok(None);
            }
            if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                return Err(io::Error::other("a handover message was cut short"));
            }
            let kind = buf[0];
            buf.copy_within(1..n, 0);
            buf.truncate(n - 1);
            Ok(Some((kind, fd)))
        }
    }
}

/// `pglittle upgrade PID`: asks the pglittle running as `pid` for a
/// rolling restart (SIGUSR2).
pub fn request(pid: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::other("not a process id"));
    }
    // SAFETY: kill has no memory effects; a positive pid names one process.
    check(unsafe { libc::kill(pid, libc::SIGUSR2) }).map(|_| ())
}

/// Starts the same executable with the same arguments, handing it the
/// other end of a new pair; returns this process's end.
pub fn spawn_successor() -> io::Result<Channel> {
    let (ours, theirs) = Channel::pair()?;
    let exe = std::env::current_exe()?;
    let fd = theirs.fd.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(ENV_FD, fd.to_string());
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || check(libc::fcntl(fd, libc::F_SETFD, 0)).map(|_| ()));
    }
    let child = cmd.spawn()?;
    tracing::info!(pid = child.id(), "rolling restart: started the new process");
    drop(theirs);
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_a_descriptor_cross_the_pair() {
        let (a, b) = Channel::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        a.send(LISTENER, b"hello", Some(listener.as_raw_fd()))
            .unwrap();
        a.send(READY, b"", None).unwrap();
        let mut buf = Vec::new();
        let (kind, fd) = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!((kind, buf.as_slice()), (LISTENER, b"hello".as_slice()));
        let got = std::net::TcpListener::from(fd.expect("a descriptor"));
        assert_eq!(got.local_addr().unwrap(), addr, "the same socket");
        let (kind, fd) = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!((kind, buf.len(), fd.is_none()), (READY, 0, true));
        drop(a);
        assert!(
            b.recv(&mut buf).unwrap().is_none(),
            "closed: end of messages"
        );
    }
}
