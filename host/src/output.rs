//! Standard output as a command-line tool should treat it: a closed pipe (`tdxlab zap-table |
//! head -1`) ends the program quietly, a full disk or other write error is one line on
//! stderr — never a panic, which is what `println!` does on both.

use std::io::Write;

/// An error writing standard output.
#[derive(Debug, thiserror::Error)]
#[error("cannot write standard output")]
pub struct OutputError(#[from] pub std::io::Error);

impl OutputError {
    /// True when the reader closed the pipe (EPIPE): the end of the program, not an error.
    pub(crate) fn is_closed_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Write `args` and a newline to stdout, flushed.
pub(crate) fn write_line(args: std::fmt::Arguments) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Write `s` as it is to stdout, flushed.
pub(crate) fn write_str(s: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `-q`: errors only, so no progress lines, notes or warnings on stderr.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by the command line's `-q`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// `-q` was given: commands print no progress, notes or warnings.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// `eprintln!` for what is not an error — progress, headers, "wrote …", warnings — which
/// `-q` silences.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::output::quiet() {
            eprintln!($($t)*);
        }
    };
}

/// `println!` that returns an [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::output::write_line(format_args!($($t)*)) };
}

/// Where `--report` goes, opened before anything runs so that a bad path costs nothing.
pub enum Report {
    /// `--report -`: the JSON on stdout.
    Stdout,
    /// A file, created (truncated) when the flag was checked.
    File(std::fs::File, std::path::PathBuf),
}

/// `--report PATH` cannot be created.
#[derive(Debug, thiserror::Error)]
#[error("--report {}: {source}", path.display())]
pub struct ReportOpenError {
    /// The path as given.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The version of every JSON document's layout; documented in docs/json.md, raised when a
/// field changes meaning or disappears (new fields do not raise it).
pub const SCHEMA: u32 = 2;

/// Every JSON document tdxlab writes: which command wrote it, the schema version, the tdxlab
/// version, then the command's own fields.
#[derive(serde::Serialize)]
struct Envelope<'a, T: serde::Serialize> {
    command: &'static str,
    schema: u32,
    tdxlab: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// `value` as `command`'s pretty JSON document.
pub fn json<T: serde::Serialize>(command: &'static str, value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&Envelope {
        command,
        schema: SCHEMA,
        tdxlab: env!("CARGO_PKG_VERSION"),
        body: value,
    })
}

/// Serialize a 64-bit value (a hash) as a hex string: JSON numbers lose precision above 2^53
/// in most readers.
pub fn hex_u64<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#018x}"))
}

impl Report {
    /// Open `--report PATH` now (`-` is stdout): a missing directory or a read-only file is
    /// a usage error before the TD boots, not a lost run after it.
    pub fn open(path: &std::path::Path) -> Result<Report, ReportOpenError> {
        if path.as_os_str() == "-" {
            return Ok(Report::Stdout);
        }
        std::fs::File::create(path)
            .map(|f| Report::File(f, path.to_path_buf()))
            .map_err(|source| ReportOpenError {
                path: path.to_path_buf(),
                source,
            })
    }

    /// True for `--report -` (other stdout output moves out of its way).
    pub(crate) fn is_stdout(&self) -> bool {
        matches!(self, Report::Stdout)
    }

    /// Write `value` as `command`'s pretty JSON document (see [`json`]).
    pub fn write<T: serde::Serialize>(
        self,
        command: &'static str,
        value: &T,
    ) -> anyhow::Result<()> {
        let json = json(command, value)?;
        match self {
            Report::Stdout => write_line(format_args!("{json}"))?,
            Report::File(mut f, path) => f
                .write_all(json.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", path.display()))?,
        }
        Ok(())
    }
}

/// An output path that cannot be created (a missing directory, a read-only file): bad
/// usage, exit 2, as `--report` and `--html` are — unlike a write that fails once the file
/// exists (a full disk: exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {source}", path.display())]
pub struct OutputPathError {
    /// The flag that named the path.
    pub flag: &'static str,
    /// The path as given.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Create `path` for the output `flag` names, or say why not ([`OutputPathError`]).
pub fn create_output(
    flag: &'static str,
    path: &std::path::Path,
) -> Result<std::fs::File, OutputPathError> {
    std::fs::File::create(path).map_err(|source| OutputPathError {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Write a generated picture (SVG text) to `path`, or to stdout for `-`; `flag` names the
/// path in errors.
pub fn write_picture(
    flag: &'static str,
    path: &std::path::Path,
    picture: &str,
) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        crate::outln!("{}", picture.trim_end())?;
    } else {
        create_output(flag, path)?
            .write_all(picture.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
