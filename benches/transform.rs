//! The transform alone, in bytes per second: ASCII (the vectorized fast
//! path), mixed (mostly ASCII with accented Latin letters and invalid bytes),
//! and non-Latin text (Cyrillic and Greek, two bytes per letter).
//!
//! Beside them, the baseline the benchmark servers use: copying ASCII and
//! upper-casing it in place (`make_ascii_uppercase`), which knows nothing of
//! UTF-8. Compare upcase's ASCII figure to it, measured in the same run.
//!
//! `cargo bench --bench transform`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use upcase::transform::{Case, map_case};

/// `len` bytes made by repeating `unit`.
fn text(unit: &str, len: usize) -> Vec<u8> {
    unit.as_bytes().iter().copied().cycle().take(len).collect()
}

fn inputs(len: usize) -> [(&'static str, Vec<u8>); 3] {
    let mut mixed = text("the quick brown fox, naïve café déjà vu; ", len);
    // An invalid byte every 997, copied through unchanged.
    for i in (0..mixed.len()).step_by(997) {
        mixed[i] = 0xff;
    }
    [
        (
            "ascii",
            text("the quick brown fox jumps over the lazy dog. ", len),
        ),
        ("mixed", mixed),
        (
            "non-latin",
            text("съешь же ещё этих мягких булок; ξεσκεπάζω ", len),
        ),
    ]
}

fn transform(c: &mut Criterion) {
    let mut group = c.benchmark_group("upper");
    for len in [64, 64 * 1024] {
        for (name, input) in inputs(len) {
            group.throughput(Throughput::Bytes(input.len() as u64));
            let mut out = Vec::with_capacity(3 * input.len());
            group.bench_with_input(BenchmarkId::new(name, len), &input, |b, input| {
                b.iter(|| {
                    out.clear();
                    map_case(Case::Upper, std::hint::black_box(input), true, &mut out)
                })
            });
        }
        let (_, ascii) = &inputs(len)[0];
        let mut out = Vec::with_capacity(ascii.len());
        group.throughput(Throughput::Bytes(ascii.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("baseline-ascii", len),
            ascii,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    out.extend_from_slice(std::hint::black_box(input));
                    out.make_ascii_uppercase();
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, transform);
criterion_main!(benches);
