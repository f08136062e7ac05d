//! Micro-benchmarks of the hot pure functions: nanoseconds per call, median of several batches.

use std::{hint::black_box, time::Instant};

/// Median ns per call of `f` over `batches` batches of `per_batch` calls.
pub fn ns_per_call(mut f: impl FnMut(), batches: usize, per_batch: usize) -> f64 {
    for _ in 0..per_batch {
        f();
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// (name, ns per call) of each hot function.
pub fn run() -> Vec<(&'static str, f64)> {
    let payload = vec![b'x'; 2048];
    let key = sluice::webhook_signature::SigningKey::from_secret(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .expect("a valid secret");
    vec![(
        "Standard Webhooks signing (2 KiB body)",
        ns_per_call(
            || {
                black_box(key.sign("msg_bench", 1_700_000_000, black_box(&payload)));
            },
            15,
            2000,
        ),
    )]
}
