//! The values users type for resources and ports, read and printed the way Docker does:
//! `512M`, `2GiB`, `1.5` CPUs, `8080:80`, a failure ratio of `0.25`.

use crate::model::{PortConfig, Protocol, PublishMode, TrafficPolicy};

/// Reads a memory size: a number of bytes with an optional unit `b`, `k`/`kb`/`kib`, `m`/`mb`/
/// `mib`, `g`/`gb`/`gib`, `t`... (binary multiples, as Docker reads them), case-insensitive.
///
/// # Errors
/// A message naming the text that could not be read.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid memory size {text:?}: expected a number with an optional unit, like 512M or 2G")
    })?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid memory size {text:?}: unknown unit {other:?} (use b, k, m, g or t)"
            ))
        }
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid memory size {text:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Bytes in binary units with at most one decimal: `512 B`, `1.5 KiB`, `2 GiB`. Rounds up, so
/// that a shortage shown this way is never understated.
pub fn format_memory(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size {
            let tenths = (u128::from(bytes) * 10).div_ceil(u128::from(size));
            return match tenths % 10 {
                0 => format!("{} {unit}", tenths / 10),
                decimal => format!("{}.{decimal} {unit}", tenths / 10),
            };
        }
    }
    format!("{bytes} B")
}

/// Reads a number of CPUs (`0.5`, `2`) into billionths, as Docker counts them.
///
/// # Errors
/// A message naming the text that could not be read.
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let value: f64 = text.trim().parse().map_err(|_| {
        format!("invalid number of CPUs {text:?}: expected a decimal number, like 0.5 or 2")
    })?;
    if !value.is_finite() || value <= 0.0 || value > 1e6 {
        return Err(format!(
            "invalid number of CPUs {text:?}: must be more than 0"
        ));
    }
    Ok((value * 1e9).round() as u64)
}

pub const NANO_PER_CPU: u64 = 1_000_000_000;

/// Billionths of CPUs as an exact decimal number of CPUs: `1`, `1.5`, `0.25`.
pub fn format_cpus(nano_cpus: u64) -> String {
    let (whole, fraction) = (nano_cpus / NANO_PER_CPU, nano_cpus % NANO_PER_CPU);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Reads a failure ratio (`--update-max-failure-ratio 0.25`) into thousandths, rounded.
///
/// # Errors
/// Not a number, or outside 0-1.
pub fn parse_ratio_permille(text: &str) -> Result<u64, String> {
    let value: f64 = text.trim().parse().map_err(|_| {
        format!("invalid failure ratio {text:?}: expected a decimal number from 0 to 1, like 0.25")
    })?;
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "invalid failure ratio {text:?}: {} is outside 0-1",
            text.trim()
        ));
    }
    Ok((value * 1000.0).round() as u64)
}

/// Thousandths as an exact decimal ratio: `0`, `0.25`, `1`, `1.5`.
pub fn format_ratio_permille(permille: u64) -> String {
    let (whole, fraction) = (permille / 1000, permille % 1000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Reads a published port as `-p` takes it. The short form: `[PUBLISHED:]TARGET[/PROTOCOL]`
/// (`8080:80`, `80`, `53:53/udp`); the long form: `published=P,target=T,protocol=tcp|udp,
/// mode=ingress|host,policy=cluster|local` (every key but `target` may be left out). A published port left out is
/// picked by the cluster. Ingress mode and TCP are the defaults, as in Swarm.
///
/// # Errors
/// A message naming the text and what was wrong in it.
pub fn parse_port(text: &str) -> Result<PortConfig, String> {
    if text.contains('=') {
        return parse_long_port(text);
    }
    let number = |part: &str, what: &str| -> Result<u16, String> {
        match part.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "invalid port mapping {text:?}: {what} port {part:?} must be a number from 1 to 65535"
            )),
            Ok(port) => Ok(port),
        }
    };
    let (ports, protocol) = match text.split_once('/') {
        Some((ports, protocol)) => (ports, protocol_of(text, protocol)?),
        None => (text, Protocol::Tcp),
    };
    let (published, target) = match ports.split_once(':') {
        Some((published, target)) => (number(published, "published")?, number(target, "target")?),
        None => (0, number(ports, "target")?),
    };
    Ok(PortConfig {
        protocol,
        ..PortConfig::tcp(published, target)
    })
}

fn parse_long_port(text: &str) -> Result<PortConfig, String> {
    let mut port = PortConfig::tcp(0, 0);
    for field in text.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "invalid port {text:?}: {field:?} is not KEY=VALUE (published, target, protocol, mode, policy)"
            ));
        };
        let number = |what: &str| -> Result<u16, String> {
            match value.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!(
                    "invalid port {text:?}: {what} {value:?} must be a number from 1 to 65535"
                )),
                Ok(port) => Ok(port),
            }
        };
        match key.trim() {
            "published" => port.published = number("published")?,
            "target" => port.target = number("target")?,
            "protocol" => port.protocol = protocol_of(text, value)?,
            "mode" => {
                port.mode = value.trim().parse().map_err(|_| {
                    format!("invalid port {text:?}: mode {value:?} must be ingress or host")
                })?;
            }
            "policy" => {
                port.policy = value.trim().parse().map_err(|_| {
                    format!("invalid port {text:?}: policy {value:?} must be cluster or local")
                })?;
            }
            other => {
                return Err(format!(
                "invalid port {text:?}: unknown key {other:?} (published, target, protocol, mode, policy)"
            ))
            }
        }
    }
    if port.target == 0 {
        return Err(format!("invalid port {text:?}: target=PORT is required"));
    }
    if port.mode == PublishMode::Host && port.policy == TrafficPolicy::Local {
        return Err(format!(
            "invalid port {text:?}: policy=local is for mode=ingress (a host port is always local)"
        ));
    }
    Ok(port)
}

fn protocol_of(text: &str, protocol: &str) -> Result<Protocol, String> {
    protocol
        .trim()
        .parse()
        .map_err(|_| format!("invalid port {text:?}: protocol {protocol:?} must be tcp or udp"))
}

/// Reads `KEY=VALUE` (an environment variable or a label). A missing `=` gives an empty value,
/// as Docker does for labels.
///
/// # Errors
/// An empty key.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.trim().is_empty() {
        return Err(format!(
            "invalid {text:?}: expected KEY=VALUE with a non-empty KEY"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_as_docker_reads_it_and_prints_back() {
        assert_eq!(parse_memory("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_memory("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory("1.5g"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(parse_memory("100"), Ok(100));
        assert!(parse_memory("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("lots").is_err());
        assert_eq!(format_memory(0), "0 B");
        assert_eq!(format_memory(1536), "1.5 KiB");
        assert_eq!(format_memory(512 * 1024 * 1024), "512 MiB");
        assert_eq!(format_memory(3 * 512 * 1024 * 1024), "1.5 GiB");
        // Rounded up: a shortage is never understated.
        assert_eq!(format_memory((1 << 30) + 1), "1.1 GiB");
    }

    #[test]
    fn failure_ratios_are_counted_in_thousandths() {
        assert_eq!(parse_ratio_permille("0.25"), Ok(250));
        assert_eq!(parse_ratio_permille("1"), Ok(1000));
        assert_eq!(parse_ratio_permille("0"), Ok(0));
        assert!(parse_ratio_permille("1.5")
            .unwrap_err()
            .contains("1.5 is outside 0-1"));
        assert!(parse_ratio_permille("half").is_err());
        for permille in [0, 1, 250, 1000, 1500] {
            let text = format_ratio_permille(permille);
            if permille <= 1000 {
                assert_eq!(parse_ratio_permille(&text), Ok(permille));
            }
        }
        assert_eq!(format_ratio_permille(1500), "1.5");
        assert_eq!(format_ratio_permille(250), "0.25");
    }

    #[test]
    fn cpus_are_counted_in_billionths() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("many").is_err());
        assert_eq!(format_cpus(1_500_000_000), "1.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
        assert_eq!(format_cpus(250_000_000), "0.25");
    }

    #[test]
    fn ports_and_key_values_read_with_clear_errors() {
        assert_eq!(parse_port("8080:80"), Ok(PortConfig::tcp(8080, 80)));
        assert_eq!(parse_port("80").map(|p| p.published), Ok(0));
        let err = parse_port("8080:http").unwrap_err();
        assert!(err.contains("target port \"http\""), "{err}");
        assert!(parse_port("0:80").is_err());
        let udp = parse_port("53:5353/udp").unwrap();
        assert_eq!(
            (udp.published, udp.target, udp.protocol),
            (53, 5353, Protocol::Udp)
        );
        assert_eq!(udp.mode, PublishMode::Ingress);
        let err = parse_port("53/sctp").unwrap_err();
        assert!(
            err.contains("protocol \"sctp\" must be tcp or udp"),
            "{err}"
        );
        assert_eq!(
            parse_port("published=8080,target=80,protocol=udp,mode=host"),
            Ok(PortConfig {
                published: 8080,
                target: 80,
                protocol: Protocol::Udp,
                mode: PublishMode::Host,
                policy: TrafficPolicy::Cluster,
            })
        );
        assert_eq!(parse_port("target=80"), Ok(PortConfig::tcp(0, 80)));
        assert_eq!(
            parse_port("target=80,published=8080,policy=local").map(|p| p.policy),
            Ok(TrafficPolicy::Local)
        );
        let err = parse_port("target=80,mode=host,policy=local").unwrap_err();
        assert!(err.contains("policy=local is for mode=ingress"), "{err}");
        let err = parse_port("published=8080").unwrap_err();
        assert!(err.contains("target=PORT is required"), "{err}");
        let err = parse_port("target=80,mode=mesh").unwrap_err();
        assert!(
            err.contains("mode \"mesh\" must be ingress or host"),
            "{err}"
        );
        let err = parse_port("target=80,proto=udp").unwrap_err();
        assert!(err.contains("unknown key \"proto\""), "{err}");
        assert_eq!(
            parse_key_value("A=b=c"),
            Ok(("A".to_string(), "b=c".to_string()))
        );
        assert_eq!(
            parse_key_value("flag"),
            Ok(("flag".to_string(), String::new()))
        );
        assert!(parse_key_value("=x").is_err());
    }
}
