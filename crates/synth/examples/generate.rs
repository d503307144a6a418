//! `cargo run --release -p grantwatch-synth --example generate -- SEED ACCOUNTS IDENTITIES DAYS EVENTS s3|jsonl OUT_DIR`
//!
//! Generates a synthetic organization and reports the rate on stderr.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 7 {
        return Err("usage: generate SEED ACCOUNTS IDENTITIES DAYS EVENTS s3|jsonl OUT_DIR".into());
    }
    let spec = grantwatch_synth::OrgSpec::new(
        a[0].parse()?,
        a[1].parse()?,
        a[2].parse()?,
        a[3].parse()?,
        a[4].parse()?,
        a[5].parse()?,
    );
    let t0 = Instant::now();
    let truth = grantwatch_synth::generate(&spec, &PathBuf::from(&a[6]))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{} records ({} files, {:.1} MB uncompressed, {:.0} B/record) in {secs:.2}s: {:.0} events/s; as_of {}",
        truth.records_written,
        truth.files_written,
        truth.bytes_uncompressed as f64 / 1e6,
        truth.bytes_uncompressed as f64 / truth.records_written.max(1) as f64,
        truth.events as f64 / secs,
        truth.as_of
    );
    Ok(())
}
