//! What the TD runs, as the host's tdxlab HOB asks: the default conversion round trip and
//! the negative tests (`round_trip`), and the stress scenarios and benchmarks (`stress`).

pub mod round_trip;
pub mod stress;
