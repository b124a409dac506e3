//! Sizes as people write them in flags and annotations: the one grammar of every size in quiver
//! (`quiver serve --cache-bytes`, `--memory-limit` of `historical`, `offline` and `materialize`,
//! the injector's `quiver.dev/cache-bytes`, which it checks before putting the text on a
//! sidecar's command line).
//!
//! A number, optionally with a fraction, then a unit, case-insensitive, with or without a space:
//! - binary: `KiB`, `MiB`, `GiB`, `TiB`, or Kubernetes' `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024);
//! - decimal: `KB`, `MB`, `GB`, `TB`, or `K`, `M`, `G`, `T` (powers of 1000);
//! - `B` or nothing: bytes (whole).
//!
//! So `2G` is 2,000,000,000 bytes and `2Gi` / `2GiB` are 2,147,483,648, as in Kubernetes; a
//! fraction is rounded down to whole bytes (`1.5KiB` = 1536).

/// Parses a size in the module's grammar (`256MiB`, `1GiB`, `2G`, `1.5Gi`, `64MB`, `4096`).
/// Returns a message saying what is accepted on error.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let expected = || {
        format!(
            "{s:?}: expected a size like 256MiB, 1GiB, 2G, 512Mi or a number of bytes \
             (units KiB/MiB/GiB/TiB or Ki/Mi/Gi/Ti: powers of 1024; KB/MB/GB/TB or K/M/G/T: \
             powers of 1000)"
        )
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u128.pow(2),
        "g" | "gb" => 1000_u128.pow(3),
        "t" | "tb" => 1000_u128.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(expected()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.len() <= 30 && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) {
        return Err(expected());
    }
    if number.contains('.') && (fraction.is_empty() || scale == 1) {
        // `2.` is a typo; a fraction of a byte is not a size.
        return Err(expected());
    }
    let whole: u128 = whole.parse().map_err(|_| expected())?;
    let bytes = whole.checked_mul(scale).and_then(|w| {
        if fraction.is_empty() {
            return Some(w);
        }
        let frac: u128 = fraction.parse().ok()?;
        let denominator = 10_u128.checked_pow(fraction.len() as u32)?;
        w.checked_add(frac.checked_mul(scale)? / denominator)
    });
    bytes
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?}: too large a size"))
}

/// [`parse_bytes`] for limits that cannot be zero (a memory limit): `0` is an error.
pub fn parse_nonzero_bytes(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        0 => Err(format!("{s:?}: must be more than 0 bytes")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1MiB").is_err());
        // A fraction of a binary unit is whole bytes (it was refused before `historical`'s
        // grammar, which took `1.5G`, became everyone's).
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert!(parse_bytes("").is_err());
    }

    /// What `quiver historical --memory-limit` accepted with its own parser (cli/src/historical.rs
    /// `parse_size`, gone): every flag now accepts the same.
    #[test]
    fn historicals_sizes() {
        assert_eq!(parse_nonzero_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_nonzero_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_nonzero_bytes("100M"), Ok(100_000_000));
        assert_eq!(parse_nonzero_bytes("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_nonzero_bytes("4096"), Ok(4096));
        assert!(parse_nonzero_bytes("lots").is_err());
        assert!(parse_nonzero_bytes("2XB").is_err());
        assert!(parse_nonzero_bytes("0").is_err());
    }

    #[test]
    fn units_and_their_scales() {
        for (text, bytes) in [
            ("2G", 2_000_000_000),
            ("2g", 2_000_000_000),
            ("2GB", 2_000_000_000),
            ("2Gi", 2 << 30),
            ("2gib", 2 << 30),
            ("3K", 3000),
            ("3Ki", 3072),
            ("3KiB", 3072),
            ("1T", 1_000_000_000_000),
            ("1TiB", 1 << 40),
            ("1.5KiB", 1536),
            ("0.001K", 1),
            ("0.0001K", 0),
            ("7B", 7),
            ("384Mi", 384 << 20),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in [
            "1.5", "1.5B", "2.G", ".5G", "1..5G", "2 X", "2GiBs", "G", "1e9", "+1G", "1,000",
        ] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.contains("expected a size like"), "{bad}: {err}");
        }
        assert!(
            parse_bytes("20000000TiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
