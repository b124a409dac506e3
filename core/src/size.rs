//! Sizes as people write them in flags and annotations: `256MiB`, `1GiB`, `64MB`, or bytes.
//! Shared by `quiver serve --cache-bytes` and the injector, which checks the same text before it
//! puts it on a sidecar's command line.

/// Parses `256MiB`, `1GiB`, `512KiB`, `64MB`, `1000B` or a bare number of bytes. Returns a
/// message saying what is accepted on error.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let expected = || format!("{s:?}: expected a size like 256MiB, 1GiB or a number of bytes");
    let units: [(&str, usize); 7] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("KB", 1000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("B", 1),
    ];
    for (suffix, scale) in units {
        if let Some(n) = t.strip_suffix(suffix) {
            return n
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .ok_or_else(expected);
        }
    }
    t.parse().map_err(|_| expected())
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
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert!(parse_bytes("").is_err());
    }
}
