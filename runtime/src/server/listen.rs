//! Where a worker listens: `unix:PATH` (what the gateway uses) or `tcp:ADDR` (standalone).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Listen::Unix(p.into()));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("'{s}' is neither unix:PATH nor tcp:HOST:PORT ({e})"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            "unix:/tmp/w.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/tmp/w.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:9000".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert!("127.0.0.1:9000".parse::<Listen>().is_ok());
        assert!("unix:".parse::<Listen>().is_err());
        assert!("nonsense".parse::<Listen>().is_err());
    }
}
