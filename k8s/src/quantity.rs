//! Kubernetes resource quantities (`100m`, `0.5`, `512Mi`, `1G`, `1e3`), read the way the API
//! server reads them, so a value the injector accepts is one the API server accepts too.

/// The value of a quantity in base units (cores, bytes), or `None` when `text` is not a
/// quantity. Negative values are rejected: no resource the injector sets may be negative.
pub fn parse(text: &str) -> Option<f64> {
    let number_len = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '+')))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_len);
    let digits = number.strip_prefix('+').unwrap_or(number);
    // <digits> | <digits>.<digits> | <digits>. | .<digits>, and one dot at most.
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = digits.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let e = exp.strip_prefix(['e', 'E'])?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(e.parse::<i32>().ok()?)
        }
    };
    let v = value * scale;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quantities() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("0.5"), Some(0.5));
        assert_eq!(parse(".5"), Some(0.5));
        assert_eq!(parse("1."), Some(1.0));
        assert_eq!(parse("+1"), Some(1.0));
        assert_eq!(parse("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1E-3"), Some(0.001));
        for bad in [
            "", "m", "Mi", "1.2.3", "-1", "1 Mi", "1mi", "1MB", "1e", "1e+", "lots", "1Mi ", ".",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
