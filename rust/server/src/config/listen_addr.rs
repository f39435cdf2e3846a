//! The TCP listener's address as flags and the config file give it: a
//! loopback address or a bare port, nothing else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Parses a listen address: `127.0.0.1:62020`, `[::1]:62020`,
/// `localhost:62020` or a bare port (loopback). Anything that is not a
/// loopback address is refused.
pub fn parse_loopback(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let addr = if let Ok(port) = t.parse::<u16>() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else if let Some(port) = t.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        t.parse::<SocketAddr>().map_err(|_| {
            format!("{text:?} is not an address (try \"127.0.0.1:62020\" or \"[::1]:62020\")")
        })?
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{text:?} is not a loopback address; the TCP listener has no authentication, \
             so only 127.0.0.0/8 and ::1 are allowed"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_forms_are_accepted() {
        for (text, want) in [
            ("127.0.0.1:62020", "127.0.0.1:62020"),
            ("127.1.2.3:1", "127.1.2.3:1"),
            ("[::1]:62020", "[::1]:62020"),
            ("localhost:62020", "127.0.0.1:62020"),
            ("62020", "127.0.0.1:62020"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert_eq!(parse_loopback(text), Ok(want.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn other_addresses_are_refused() {
        for text in [
            "0.0.0.0:62020",
            "[::]:62020",
            "192.168.1.2:62020",
            "10.0.0.1:1",
            "example.com:62020",
            "localhost:http",
            "",
        ] {
            let e = parse_loopback(text).unwrap_err();
            assert!(!e.is_empty(), "{text}");
        }
        assert!(parse_loopback("0.0.0.0:62020")
            .unwrap_err()
            .contains("not a loopback address"));
    }
}
