//! `--trace` and its filters, the same on `run`, `stress` and `sim`.

use crate::trace::Options;
use std::path::PathBuf;

/// The step tree and what it shows.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TraceArgs {
    /// Print every kernel/module step as a tree, each line with its time and vCPU (steps
    /// before the TD's first MapGPA are left out unless --trace-boot).
    #[arg(long)]
    pub(crate) trace: bool,
    /// Only steps that touch this guest-physical range: START-END, START+SIZE or one page
    /// at START (hex or decimal; a shared GPA counts as its private alias).
    #[arg(long, requires = "trace", value_parser = parse_gpa_range)]
    trace_gpa: Option<(u64, u64)>,
    /// Only this vCPU's steps.
    #[arg(long, requires = "trace")]
    trace_vcpu: Option<u32>,
    /// Also the boot's steps (the accepts before the TD's first MapGPA).
    #[arg(long, requires = "trace")]
    trace_boot: bool,
    /// Write the tree to FILE instead of stderr (progress lines stay on stderr).
    #[arg(long, requires = "trace")]
    trace_out: Option<PathBuf>,
}

impl TraceArgs {
    /// The tree's options, or `None` without `--trace`; an output file that cannot be
    /// created is a usage error.
    pub(crate) fn options(&self) -> Result<Option<Options>, String> {
        if !self.trace {
            return Ok(None);
        }
        let out: Box<dyn std::io::Write + Send> = match &self.trace_out {
            Some(p) => Box::new(std::io::LineWriter::new(
                std::fs::File::create(p)
                    .map_err(|e| format!("--trace-out {}: {e}", p.display()))?,
            )),
            None => Box::new(std::io::stderr()),
        };
        Ok(Some(Options {
            vcpu: self.trace_vcpu,
            gpa: self.trace_gpa,
            boot: self.trace_boot,
            out,
            ..Options::default()
        }))
    }
}

fn number(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number"))
}

/// `START-END`, `START+SIZE` or `START` (one 4 KiB page).
pub(crate) fn parse_gpa_range(s: &str) -> Result<(u64, u64), String> {
    let (start, end) = if let Some((a, b)) = s.split_once('-') {
        (number(a)?, number(b)?)
    } else if let Some((a, b)) = s.split_once('+') {
        let a = number(a)?;
        (a, a.checked_add(number(b)?).ok_or("the range wraps")?)
    } else {
        let a = number(s)?;
        (a, a.saturating_add(4096))
    };
    if start >= end {
        return Err(format!("'{s}' is an empty range"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_three_forms_and_empty_ones_are_refused() {
        assert_eq!(
            parse_gpa_range("0x200000-0x400000"),
            Ok((0x20_0000, 0x40_0000))
        );
        assert_eq!(parse_gpa_range("0x200000+4096"), Ok((0x20_0000, 0x20_1000)));
        assert_eq!(parse_gpa_range("2097152"), Ok((0x20_0000, 0x20_1000)));
        assert!(parse_gpa_range("0x4000-0x4000").is_err());
        assert!(parse_gpa_range("zz").is_err());
        assert!(parse_gpa_range("0xffffffffffffffff+2").is_err());
    }
}
