//! vCPU 0's round-trip measurements (the guest's measurement line on the console), in time.

use serde::Serialize;
use shared_abi::stress::{field, MEASURE_LINE};

/// vCPU 0's round-trip measurements, converted to time.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// Null TDCALL (TDG.VP.INFO) median.
    pub doorbell_floor_us: f64,
    /// 4 KiB private → shared (first touch) → private, median.
    pub round_trip_4k_us: f64,
    /// The same in doorbell floors.
    pub round_trip_4k_floors: f64,
    /// 2 MiB block round trip (first page touched), median.
    pub round_trip_2m_us: f64,
    /// The same in doorbell floors.
    pub round_trip_2m_floors: f64,
    /// Conversions per second at 4 KiB (two per round trip).
    pub conversions_per_s_4k: f64,
    /// Bytes converted per second at 4 KiB.
    pub bytes_per_s_4k: f64,
    /// Conversions per second at 2 MiB.
    pub conversions_per_s_2m: f64,
    /// Bytes converted per second at 2 MiB.
    pub bytes_per_s_2m: f64,
    /// 4 KiB round trips timed.
    pub samples_4k: u64,
    /// 2 MiB round trips timed.
    pub samples_2m: u64,
    /// Fastest 4 KiB round trip (older guests: the median).
    pub round_trip_4k_min_us: f64,
    /// 90th-percentile 4 KiB round trip (older guests: the median).
    pub round_trip_4k_p90_us: f64,
    /// Fastest 2 MiB round trip.
    pub round_trip_2m_min_us: f64,
    /// 90th-percentile 2 MiB round trip.
    pub round_trip_2m_p90_us: f64,
}

impl Measured {
    /// Parse the guest's measurement line from a console (cycles at `tsc_hz`).
    pub(crate) fn from_console(console: &[String], tsc_hz: f64) -> Option<Measured> {
        let line = console.iter().find(|l| l.starts_with(MEASURE_LINE))?;
        let us = |k: &str| field(line, k).map(|c| c as f64 / tsc_hz * 1e6);
        let (floor, rt4k, rt2m) = (us("floor")?, us("rt4k")?, us("rt2m")?);
        Some(Measured {
            doorbell_floor_us: floor,
            round_trip_4k_us: rt4k,
            round_trip_4k_floors: rt4k / floor,
            round_trip_2m_us: rt2m,
            round_trip_2m_floors: rt2m / floor,
            conversions_per_s_4k: 2e6 / rt4k,
            bytes_per_s_4k: 2e6 / rt4k * 4096.0,
            conversions_per_s_2m: 2e6 / rt2m,
            bytes_per_s_2m: 2e6 / rt2m * (2 << 20) as f64,
            samples_4k: field(line, "n4k").unwrap_or(0),
            samples_2m: field(line, "n2m").unwrap_or(0),
            round_trip_4k_min_us: us("rt4k_min").unwrap_or(rt4k),
            round_trip_4k_p90_us: us("rt4k_p90").unwrap_or(rt4k),
            round_trip_2m_min_us: us("rt2m_min").unwrap_or(rt2m),
            round_trip_2m_p90_us: us("rt2m_p90").unwrap_or(rt2m),
        })
    }
}
