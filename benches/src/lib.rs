//! quiver's benchmarks live in `benches/` (run with `cargo bench -p quiver-benches`); the
//! results and the Feast baselines measured beside them are in `RESULTS.md`.
