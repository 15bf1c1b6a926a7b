//! How a command ends: the ways a TD stops ([`ExitKind`]) and the process exit codes, one
//! mapping for every subcommand (docs/robustness.md lists them).

use serde::Serialize;

/// Exit code: the command ran and its verdict is success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: the guest (or the simulator) failed: exit value ≠ 0, a fatal error, a triple
/// fault, a failed check.
pub(crate) const EXIT_GUEST: u8 = 1;
/// Exit code: bad flags, arguments or output paths, refused before anything boots.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: host error (no usable KVM, bad image, a failed system call, I/O).
pub(crate) const EXIT_HOST: u8 = 3;
/// Exit code: the guest did not finish in time.
pub(crate) const EXIT_TIMEOUT: u8 = 4;
/// Exit code of a program whose stdout reader went away: what a shell reports for a process
/// killed by SIGPIPE (128 + 13), as coreutils give it.
pub(crate) const EXIT_PIPE: u8 = 141;

/// How a TD stopped. Serialized as the report's `exit.kind` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// The guest wrote its exit value to the isa-debug-exit port.
    Guest,
    /// The guest powered off through ACPI (S5): what it does when it passed and there is no
    /// isa-debug-exit device.
    PowerOff,
    /// ReportFatalError, access before accept, an alias mismatch under `--strict`, a #VE the
    /// host could not deliver.
    Fatal,
    /// KVM_EXIT_SHUTDOWN.
    TripleFault,
    /// The host failed: a system call, a KVM ioctl, a panicking host thread.
    HostError,
    /// `--timeout` passed.
    Timeout,
    /// SIGINT or SIGTERM (the exit's `code` is the signal).
    Interrupted,
}

impl ExitKind {
    /// The name the report and the summary use.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Guest => "guest",
            ExitKind::PowerOff => "power_off",
            ExitKind::Fatal => "fatal",
            ExitKind::TripleFault => "triple_fault",
            ExitKind::HostError => "host_error",
            ExitKind::Timeout => "timeout",
            ExitKind::Interrupted => "interrupted",
        }
    }

    /// The process exit code of a run that ended this way; `code` is the exit's value (the
    /// guest's exit value, or the signal), `passed` the command's own verdict where it has
    /// one beyond the guest's (stress checks the host side too).
    pub(crate) fn exit_code(self, code: u64, passed: bool) -> u8 {
        match self {
            ExitKind::Interrupted => 128u8.saturating_add(code.min(127) as u8),
            _ if passed => EXIT_OK,
            ExitKind::Timeout => EXIT_TIMEOUT,
            ExitKind::HostError => EXIT_HOST,
            _ => EXIT_GUEST,
        }
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_documented_code() {
        assert_eq!(ExitKind::Guest.exit_code(0, true), EXIT_OK);
        assert_eq!(ExitKind::Guest.exit_code(1, false), EXIT_GUEST);
        assert_eq!(ExitKind::PowerOff.exit_code(0, true), EXIT_OK);
        assert_eq!(ExitKind::Fatal.exit_code(0, false), EXIT_GUEST);
        assert_eq!(ExitKind::TripleFault.exit_code(0, false), EXIT_GUEST);
        assert_eq!(ExitKind::HostError.exit_code(0, false), EXIT_HOST);
        assert_eq!(ExitKind::Timeout.exit_code(0, false), EXIT_TIMEOUT);
        assert_eq!(ExitKind::Interrupted.exit_code(2, false), 130);
        assert_eq!(ExitKind::Interrupted.exit_code(15, true), 143);
    }

    #[test]
    fn kinds_serialize_as_their_names() {
        for k in [
            ExitKind::Guest,
            ExitKind::PowerOff,
            ExitKind::TripleFault,
            ExitKind::HostError,
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
    }
}
