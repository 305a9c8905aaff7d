//! Token format benchmarks: generating a token, and parsing one (prefix,
//! length, alphabet and checksum), which every request pays before any I/O.
//!
//! Run: `cargo bench --bench token`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tokengate::token::{Token, parse};

fn token_format(c: &mut Criterion) {
    let token = Token::generate().expect("OS RNG");
    let text = token.expose_secret().to_owned();
    let mut bad_checksum = text.clone();
    bad_checksum.replace_range(54..55, if text.ends_with('0') { "1" } else { "0" });

    let mut group = c.benchmark_group("token");
    group.bench_function("parse valid", |b| b.iter(|| parse(black_box(&text))));
    group.bench_function("parse bad checksum", |b| {
        b.iter(|| parse(black_box(&bad_checksum)))
    });
    group.bench_function("parse wrong prefix", |b| {
        b.iter(|| parse(black_box("Bearer something-else-entirely")))
    });
    group.bench_function("generate", |b| b.iter(Token::generate));
    group.finish();
}

criterion_group!(benches, token_format);
criterion_main!(benches);
