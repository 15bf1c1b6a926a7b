//! The beyond-upstream options of `run`, `stress` and `sim`: off by default, so a run does
//! what KVM does unless asked (docs/performance.md measures each against upstream).

use crate::kvm::{BeyondUpstream, TdxRemove};

/// `--tdx-remove` and `--prefault`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct BeyondArgs {
    /// How a zap removes private leaves: per-leaf (KVM 6.16: BLOCK, TRACK, kick, REMOVE for
    /// each leaf) or batched (beyond upstream: every BLOCK, one TRACK and kick, every REMOVE).
    #[arg(long, default_value = "per-leaf", value_parser = parse_tdx_remove)]
    tdx_remove: TdxRemove,
    /// Beyond upstream: map (AUG) every page of a range converted to private at once, so the
    /// guest's ACCEPTs raise no EPT violations.
    #[arg(long)]
    prefault: bool,
}

impl BeyondArgs {
    /// The options as the models take them.
    pub(crate) fn get(&self) -> BeyondUpstream {
        BeyondUpstream {
            tdx_remove: self.tdx_remove,
            prefault: self.prefault,
        }
    }
}

/// `per-leaf` or `batched`.
pub(crate) fn parse_tdx_remove(s: &str) -> Result<TdxRemove, String> {
    (TdxRemove::ALL.into_iter())
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("'{s}' is not a removal mode: per-leaf or batched"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_options_that_are_on_are_named() {
        assert_eq!(BeyondUpstream::default().describe(), "");
        let both = BeyondUpstream {
            tdx_remove: TdxRemove::Batched,
            prefault: true,
        };
        let prefault = BeyondUpstream {
            prefault: true,
            ..Default::default()
        };
        assert_eq!(
            both.describe(),
            ", beyond upstream: --tdx-remove batched --prefault"
        );
        assert_eq!(prefault.describe(), ", beyond upstream: --prefault");
    }

    #[test]
    fn every_removal_mode_parses_by_its_name_and_others_are_refused() {
        for m in TdxRemove::ALL {
            assert_eq!(parse_tdx_remove(m.name()), Ok(m));
        }
        let e = parse_tdx_remove("lazy").unwrap_err();
        assert!(e.contains("per-leaf or batched"), "{e}");
    }
}
