//! What every benchmark prints and reads.

/// One figure, as `make bench` readers expect it: `BENCH <name> <value> <unit>`.
pub fn bench(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.3} {unit}");
}

/// A size from the environment, or the default.
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
