//! Reading Kubernetes quantities (`512Mi`, `1G`, `500m`) where local mode needs numbers.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity as bytes: `512Mi` → 536870912. Fractions round down.
pub fn to_bytes(q: &Quantity) -> Result<u64, String> {
    to_f64(q).map(|v| v.max(0.0) as u64)
}

/// A CPU quantity as cores: `500m` → 0.5.
pub fn to_cores(q: &Quantity) -> Result<f64, String> {
    to_f64(q)
}

fn to_f64(q: &Quantity) -> Result<f64, String> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a Kubernetes quantity"))?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        other => match other.strip_prefix(['e', 'E']).map(str::parse::<i32>) {
            Some(Ok(exp)) => 10f64.powi(exp),
            _ => return Err(format!("{s:?} has an unknown quantity suffix {other:?}")),
        },
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(to_bytes(&q("512Mi")), Ok(512 * 1024 * 1024));
        assert_eq!(to_bytes(&q("1G")), Ok(1_000_000_000));
        assert_eq!(to_bytes(&q("1.5Gi")), Ok(1_610_612_736));
        assert_eq!(to_bytes(&q("128974848")), Ok(128_974_848));
        assert_eq!(to_bytes(&q("129e6")), Ok(129_000_000));
        assert_eq!(to_cores(&q("500m")), Ok(0.5));
        assert_eq!(to_cores(&q("2")), Ok(2.0));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(to_bytes(&q("lots")).is_err());
        assert!(to_bytes(&q("12Qi")).is_err());
    }
}
