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
    let fixture = |name: &str| {
        std::fs::read(
            sluice_local::repo_root()
                .join("tests/fixtures/stripe")
                .join(name),
        )
        .expect("fixture exists")
    };
    let checkout = fixture("checkout.session.completed.payment.json");
    let subscription = fixture("customer.subscription.updated.json");
    let secrets = vec![
        "whsec_old_rotated_out".to_owned(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
    ];
    let now = 1_700_000_000;
    let header = sluice::stripe::signature::sign(&secrets[1], now, &checkout);
    let tolerance = std::time::Duration::from_secs(300);
    let payload = vec![b'x'; 2048];
    let key =
        sluice::webhook_signature::SigningKey::from_secret(&secrets[1]).expect("a valid secret");
    vec![
        (
            "Stripe signature verification (2 secrets, checkout fixture)",
            ns_per_call(
                || {
                    let ok = sluice::stripe::signature::verify(
                        Some(black_box(&header)),
                        black_box(&checkout),
                        &secrets,
                        tolerance,
                        now,
                    );
                    assert!(ok.is_ok());
                },
                15,
                2000,
            ),
        ),
        (
            "Stripe event decoding + effect plan (customer.subscription.updated)",
            ns_per_call(
                || {
                    let event =
                        sluice::stripe::event::decode(black_box(&subscription)).expect("decodes");
                    black_box(sluice::stripe::event::plan(&event).is_ok());
                },
                15,
                2000,
            ),
        ),
        (
            "idempotency fingerprint (POST /v1/usage, 1 KiB body)",
            ns_per_call(
                || {
                    black_box(sluice::idempotency::fingerprint(
                        &http::Method::POST,
                        black_box("/v1/usage"),
                        None,
                        black_box(&payload[..1024]),
                    ));
                },
                15,
                2000,
            ),
        ),
        (
            "Standard Webhooks signing (2 KiB body)",
            ns_per_call(
                || {
                    black_box(key.sign("msg_bench", now, black_box(&payload)));
                },
                15,
                2000,
            ),
        ),
    ]
}
