//! Client-side tools: a reusable async TURN/STUN client library ([`turn`]) and the
//! `icebreaker stun` / `icebreaker turn-check` test clients built on it.

pub mod stun;
pub mod turn;
pub mod turn_check;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// Default STUN/TURN port (UDP and TCP), RFC 8489 §18.5.
pub const DEFAULT_PORT: u16 = 3478;
/// Default STUN/TURN over TLS port, RFC 8489 §18.5.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// A server given on the command line as `HOST[:PORT]`, resolved.
#[derive(Clone, Debug)]
pub struct ServerTarget {
    /// The first address the name resolved to.
    pub addr: SocketAddr,
    /// The host part as given (without brackets), used as the TLS server name.
    pub host: String,
}

/// Split `HOST[:PORT]` (also `[V6]:PORT`, bare IPv6 literals, `[V6]`) into host and port.
pub fn split_host_port(s: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty server address");
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| anyhow!("invalid server address {s:?}: missing ']'"))?;
        let port = match after {
            "" => default_port,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| anyhow!("invalid port in server address {s:?}"))?,
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| anyhow!("invalid port {port:?} in server address {s:?}"))?;
            if host.is_empty() {
                bail!("missing host in server address {s:?}");
            }
            Ok((host.to_string(), port))
        }
        Some(_) => bail!("invalid server address {s:?} (write IPv6 addresses as [ADDR]:PORT)"),
        None => Ok((s.to_string(), default_port)),
    }
}

/// Resolve `HOST[:PORT]` with the system resolver (tokio::net::lookup_host).
pub async fn resolve_server(s: &str, default_port: u16) -> anyhow::Result<ServerTarget> {
    let (host, port) = split_host_port(s, default_port)?;
    let first = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next();
    let addr = first.ok_or_else(|| anyhow!("{host:?} did not resolve to any address"))?;
    Ok(ServerTarget { addr, host })
}

/// Human-readable STUN/TURN method name.
pub fn method_name(method: u16) -> &'static str {
    use icebreaker_stun::method as m;
    match method {
        m::BINDING => "Binding",
        m::ALLOCATE => "Allocate",
        m::REFRESH => "Refresh",
        m::SEND => "Send",
        m::DATA => "Data",
        m::CREATE_PERMISSION => "CreatePermission",
        m::CHANNEL_BIND => "ChannelBind",
        m::CONNECT => "Connect",
        m::CONNECTION_BIND => "ConnectionBind",
        m::CONNECTION_ATTEMPT => "ConnectionAttempt",
        _ => "unknown method",
    }
}

/// Standard reason phrase for a STUN/TURN error code, used when the server sends none.
pub use icebreaker_stun::reason_phrase;

/// Format a duration as milliseconds with a precision suited to its size.
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Longest `--timeout` accepted: deadlines are `Instant::now() + timeout`, which must not
/// overflow.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// Parse a positive number of seconds, at most an hour (command-line `--timeout`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_nan() || v <= 0.0 {
        return Err("must be greater than 0".into());
    }
    if v > MAX_TIMEOUT_SECS {
        return Err(format!("must be at most {MAX_TIMEOUT_SECS} seconds"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let hp = |s| split_host_port(s, 3478).ok();
        assert_eq!(hp("127.0.0.1:5000"), Some(("127.0.0.1".into(), 5000)));
        assert_eq!(hp("127.0.0.1"), Some(("127.0.0.1".into(), 3478)));
        assert_eq!(hp("::1"), Some(("::1".into(), 3478)));
        assert_eq!(hp("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(hp("[::1]"), Some(("::1".into(), 3478)));
        assert_eq!(
            hp("turn.example.org"),
            Some(("turn.example.org".into(), 3478))
        );
        assert_eq!(
            hp("turn.example.org:443"),
            Some(("turn.example.org".into(), 443))
        );
        assert_eq!(hp("host:notaport"), None);
        assert_eq!(hp(":80"), None);
        assert_eq!(hp(""), None);
        assert_eq!(hp("[::1"), None);
    }

    #[test]
    fn secs() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("x").is_err());
        assert!(parse_secs("1e19").is_err(), "would overflow a deadline");
        assert!(parse_secs("3600").is_ok());
    }
}
