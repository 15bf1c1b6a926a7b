//! The kernel's userfaultfd API (`include/uapi/linux/userfaultfd.h`,
//! Documentation/admin-guide/mm/userfaultfd.rst), as much of it as the enforcement uses:
//! open with features, register a range for MISSING and MINOR faults, read page-fault
//! events, `UFFDIO_CONTINUE` (with or without waking) and `UFFDIO_WAKE`.
//!
//! The system call comes from `rustix`, the structs and ioctl numbers from `linux-raw-sys`
//! (both generated from the kernel's UAPI headers ahead of time), the ioctl calls from
//! rust-vmm's `vmm-sys-util`: nothing here needs a C toolchain or libclang at build time.

use linux_raw_sys::general::{
    uffd_msg, uffdio_api, uffdio_continue, uffdio_range, uffdio_register,
    UFFDIO_REGISTER_MODE_MINOR, UFFDIO_REGISTER_MODE_MISSING, UFFD_API, UFFD_EVENT_PAGEFAULT,
    UFFD_FEATURE_MINOR_SHMEM, UFFD_FEATURE_MISSING_SHMEM, UFFD_FEATURE_THREAD_ID,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_CONTINUE, UFFDIO_REGISTER, UFFDIO_WAKE};
use rustix::mm::UserfaultfdFlags;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};

/// `UFFDIO_CONTINUE_MODE_DONTWAKE` (`(__u64)1 << 0` in linux/userfaultfd.h; the header's cast
/// keeps it out of the generated constants).
const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1;

/// The features guest memory needs: MISSING faults on shmem (holes in the memfd), MINOR
/// faults on shmem (pages in its page cache, Linux 5.13+), and the faulting thread's id.
pub(crate) const GUEST_MEMORY_FEATURES: u64 =
    (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_THREAD_ID) as u64;

/// What opening a userfaultfd can fail on.
#[derive(Debug, thiserror::Error)]
pub enum UffdOpenError {
    /// The `userfaultfd(2)` call itself (most often: not permitted).
    #[error("userfaultfd: {0} (needs root, CAP_SYS_PTRACE, access to /dev/userfaultfd, or sysctl vm.unprivileged_userfaultfd=1)")]
    NotPermitted(#[source] io::Error),
    /// `UFFDIO_API` refused the handshake or a feature (the kernel answers EINVAL for a
    /// feature it does not know).
    #[error("userfaultfd: UFFDIO_API with features {features:#x} failed: {source} (MINOR faults on shmem need Linux 5.13 or later)")]
    Api {
        /// The features asked for.
        features: u64,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The kernel accepted the handshake but did not grant every feature.
    #[error("userfaultfd: the kernel lacks features {missing:#x} (granted {granted:#x})")]
    MissingFeatures {
        /// Asked for and not granted.
        missing: u64,
        /// What the kernel granted.
        granted: u64,
    },
}

/// One page fault read from the userfaultfd (`struct uffd_msg`, `UFFD_EVENT_PAGEFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pagefault {
    /// The faulting host virtual address.
    pub addr: u64,
    /// `UFFD_PAGEFAULT_FLAG_*`.
    pub flags: u64,
    /// The faulting thread (`UFFD_FEATURE_THREAD_ID`).
    pub thread_id: u32,
}

/// An open userfaultfd, past the `UFFDIO_API` handshake.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The result of an ioctl: `Ok` for 0 or more, the thread's errno otherwise.
fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn range(start: *mut libc::c_void, len: usize) -> uffdio_range {
    uffdio_range {
        start: start as u64,
        len: len as u64,
    }
}

impl Uffd {
    /// Open a close-on-exec, non-blocking userfaultfd that also catches the kernel's own
    /// faults (KVM faults guest pages in from the kernel, so no `UFFD_USER_MODE_ONLY`), and
    /// require `features` in the handshake.
    pub fn open(features: u64) -> Result<Uffd, UffdOpenError> {
        let flags = UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK;
        // SAFETY: the call only creates a descriptor; what it lets us do to this process's
        // memory is confined to the ranges registered below, by this module.
        let fd = unsafe { rustix::mm::userfaultfd(flags) }
            .map_err(|e| UffdOpenError::NotPermitted(e.into()))?;
        let uffd = Uffd { fd };
        let mut api = uffdio_api {
            api: UFFD_API as u64,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes exactly one `struct uffdio_api`.
        check(unsafe { ioctl_with_mut_ref(&uffd, UFFDIO_API as _, &mut api) })
            .map_err(|source| UffdOpenError::Api { features, source })?;
        let missing = features & !api.features;
        if missing != 0 {
            return Err(UffdOpenError::MissingFeatures {
                missing,
                granted: api.features,
            });
        }
        Ok(uffd)
    }

    /// Register `[start, start + len)` for MISSING and MINOR faults (`UFFDIO_REGISTER`);
    /// returns the ioctls the kernel allows on the range (`_UFFDIO_*` bits).
    pub fn register_missing_minor(&self, start: *mut libc::c_void, len: usize) -> io::Result<u64> {
        let mut reg = uffdio_register {
            range: range(start, len),
            mode: (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR) as u64,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`; the range
        // is one the caller owns (the kernel refuses anything else).
        check(unsafe { ioctl_with_mut_ref(self, UFFDIO_REGISTER as _, &mut reg) })?;
        Ok(reg.ioctls)
    }

    /// `UFFDIO_CONTINUE`: install page table entries for the page-cache pages of
    /// `[start, start + len)`, waking the threads waiting there unless `wake` is false
    /// (`UFFDIO_CONTINUE_MODE_DONTWAKE`). Returns the bytes mapped; an interrupted call
    /// (`EAGAIN` with progress) counts as that progress. An entry that is already there is
    /// `EEXIST`.
    pub fn r#continue(&self, start: *mut libc::c_void, len: usize, wake: bool) -> io::Result<u64> {
        let mut cont = uffdio_continue {
            range: range(start, len),
            mode: if wake {
                0
            } else {
                UFFDIO_CONTINUE_MODE_DONTWAKE
            },
            mapped: 0,
        };
        // SAFETY: UFFDIO_CONTINUE reads one `struct uffdio_continue` and writes its `mapped`.
        let r = check(unsafe { ioctl_with_mut_ref(self, UFFDIO_CONTINUE as _, &mut cont) });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && cont.mapped > 0 => {
                Ok(cont.mapped as u64)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(cont.mapped.max(0) as u64),
        }
    }

    /// `UFFDIO_WAKE`: wake the threads waiting on a fault in `[start, start + len)`.
    pub fn wake(&self, start: *mut libc::c_void, len: usize) -> io::Result<()> {
        let r = range(start, len);
        // SAFETY: UFFDIO_WAKE reads one `struct uffdio_range`.
        check(unsafe { ioctl_with_ref(self, UFFDIO_WAKE as _, &r) })
    }

    /// Read the events ready now into `buf` (non-blocking: none ready is an empty list) and
    /// return the page faults among them. Other events (fork, remap, remove, unmap) are
    /// only sent to a userfaultfd that asked for them, which this one does not.
    pub fn read_pagefaults(&self, buf: &mut [uffd_msg]) -> io::Result<Vec<Pagefault>> {
        const MSG: usize = std::mem::size_of::<uffd_msg>();
        // SAFETY: `buf` is `buf.len()` whole messages of plain old data; the kernel writes
        // whole messages only.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len() * MSG,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let n = n as usize;
        if n == 0 || !n.is_multiple_of(MSG) {
            return Err(io::Error::other(format!(
                "read {n} bytes from the userfaultfd, not whole {MSG}-byte messages"
            )));
        }
        Ok(buf[..n / MSG].iter().filter_map(pagefault_of).collect())
    }
}

/// The page fault a message reports, if it reports one.
fn pagefault_of(msg: &uffd_msg) -> Option<Pagefault> {
    if u32::from(msg.event) != UFFD_EVENT_PAGEFAULT {
        return None;
    }
    // SAFETY: the event says which member of the union the kernel filled in; every bit
    // pattern is a valid integer.
    let pf = unsafe { msg.arg.pagefault };
    // SAFETY: as above (`ptid` is the only member of `feat`).
    let thread_id = unsafe { pf.feat.ptid };
    Some(Pagefault {
        addr: pf.address,
        flags: pf.flags,
        thread_id,
    })
}

/// A zeroed buffer of `n` messages for [`Uffd::read_pagefaults`].
pub fn event_buffer(n: usize) -> Vec<uffd_msg> {
    // SAFETY: `uffd_msg` is plain old data, valid when zeroed.
    (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_kernels_32_bytes() {
        // linux/userfaultfd.h: `struct uffd_msg` is packed to 32 bytes, the pagefault's
        // address at offset 16.
        assert_eq!(std::mem::size_of::<uffd_msg>(), 32);
    }

    #[test]
    fn a_pagefault_message_decodes_and_others_are_skipped() {
        let mut m = event_buffer(2);
        m[0].event = UFFD_EVENT_PAGEFAULT as u8;
        m[0].arg.pagefault.address = 0x7f00_1234_5000;
        m[0].arg.pagefault.flags = 4;
        m[0].arg.pagefault.feat.ptid = 4242;
        m[1].event = 0x13; // UFFD_EVENT_FORK
        let got: Vec<_> = m.iter().filter_map(pagefault_of).collect();
        assert_eq!(
            got,
            vec![Pagefault {
                addr: 0x7f00_1234_5000,
                flags: 4,
                thread_id: 4242
            }]
        );
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // _IOWR(0xAA, 0x3F, struct uffdio_api) and friends, computed by hand from
        // linux/userfaultfd.h: direction 3 (read|write) or 1 (write), size, type 0xAA, nr.
        let iowr = |nr: u32, size: u32| (3 << 30) | (size << 16) | (0xAA << 8) | nr;
        let ior = |nr: u32, size: u32| (2 << 30) | (size << 16) | (0xAA << 8) | nr;
        assert_eq!(UFFDIO_API, iowr(0x3F, 24));
        assert_eq!(UFFDIO_REGISTER, iowr(0x00, 32));
        assert_eq!(UFFDIO_CONTINUE, iowr(0x07, 32));
        assert_eq!(UFFDIO_WAKE, ior(0x02, 16));
    }
}
