//! A seeded coin for fault injection, shared by the threads that roll it (the module's
//! OPERAND_BUSY, the VMM's MapGPA RETRY): one RNG behind a lock, so a seed fixes the sequence
//! of outcomes in the order they are rolled.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

/// Comes up with probability `p`; `p` ≤ 0 never rolls (and draws nothing).
pub struct Chance {
    p: f64,
    rng: Mutex<StdRng>,
}

impl Chance {
    /// A coin with probability `p`, seeded.
    pub fn new(p: f64, seed: u64) -> Chance {
        Chance {
            p,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
    /// Roll once.
    pub(crate) fn hit(&self) -> bool {
        self.hit_then(|_| ()).is_some()
    }
    /// Roll once; on a hit, draw the event's details from the same RNG under the same lock.
    pub(crate) fn hit_then<T>(&self, details: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
        if self.p <= 0.0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.random_bool(self.p.min(1.0)).then(|| details(&mut rng))
    }
}
