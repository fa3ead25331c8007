//! [`NatsSpec`]: `nats://HOST:PORT[,HOST:PORT…]/STREAM`.

use std::fmt;

/// Where a JetStream store lives: the NATS servers to dial and the stream's name, written
/// `nats://HOST:PORT/STREAM` (`tls://` for TLS from the first byte; several servers of one
/// cluster separated by commas: `nats://n1:4222,n2:4222,n3:4222/HL7`).
///
/// Credentials never go in the URL (it is logged): use a credentials file
/// (`NatsOptions::credentials`, feature `nats`).
///
/// ```
/// use mllp::store::{NatsSpec, StoreSpec};
/// let spec: StoreSpec = "nats://127.0.0.1:4222,127.0.0.1:4223/HL7".parse()?;
/// let StoreSpec::Nats(nats) = spec else { unreachable!() };
/// assert_eq!(nats.servers(), ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
/// assert_eq!(nats.stream(), "HL7");
/// # Ok::<(), mllp::store::StoreSpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSpec {
    servers: Vec<String>,
    stream: String,
}

impl NatsSpec {
    /// A spec from its parts: each server a `nats://` or `tls://` URL without credentials, and
    /// a stream name.
    ///
    /// # Errors
    ///
    /// A reason text when a server or the stream name is invalid.
    pub fn new(
        servers: impl IntoIterator<Item = impl Into<String>>,
        stream: impl Into<String>,
    ) -> Result<Self, &'static str> {
        let servers: Vec<String> = servers.into_iter().map(Into::into).collect();
        if servers.is_empty() {
            return Err("no NATS server");
        }
        for server in &servers {
            check_server(server)?;
        }
        let stream = stream.into();
        check_stream(&stream)?;
        Ok(Self { servers, stream })
    }

    /// Parses `nats://HOST:PORT[,HOST:PORT…]/STREAM` (or `tls://…`).
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let (scheme, rest) = text.split_once("://").ok_or("no scheme")?;
        let (hosts, stream) = rest
            .rsplit_once('/')
            .ok_or("no stream name: write nats://HOST:PORT/STREAM")?;
        let servers = hosts
            .split(',')
            .map(|host| {
                // `nats://a:1,nats://b:2/S` and `nats://a:1,b:2/S` both name two servers.
                let host = host.split_once("://").map_or(host, |(_, h)| h);
                format!("{scheme}://{host}")
            })
            .collect::<Vec<_>>();
        Self::new(servers, stream)
    }

    /// The servers, as URLs (`nats://127.0.0.1:4222`).
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl fmt::Display for NatsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, server) in self.servers.iter().enumerate() {
            if i == 0 {
                f.write_str(server)?;
            } else {
                // Later servers without their scheme: `nats://a:1,b:2/STREAM`.
                f.write_str(",")?;
                f.write_str(server.split_once("://").map_or(server, |(_, h)| h))?;
            }
        }
        write!(f, "/{}", self.stream)
    }
}

fn check_server(server: &str) -> Result<(), &'static str> {
    let (scheme, host) = server.split_once("://").ok_or("a server has no scheme")?;
    if scheme != "nats" && scheme != "tls" {
        return Err("unknown scheme (nats:// or tls://)");
    }
    if host.contains('@') {
        return Err("credentials in the URL would be logged: use a credentials file instead");
    }
    if host.is_empty() || host.contains('/') {
        return Err("a server has no host");
    }
    Ok(())
}

/// JetStream stream names: not empty, and none of `.`, `*`, `>`, `/`, `\`, whitespace or
/// control characters (the server's rule: they become subject tokens and file names).
fn check_stream(stream: &str) -> Result<(), &'static str> {
    if stream.is_empty() {
        return Err("the stream name is empty");
    }
    if stream
        .chars()
        .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err("a stream name cannot contain . * > / \\ or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_several_servers_and_a_stream() {
        let one = NatsSpec::parse("nats://127.0.0.1:4222/HL7").unwrap();
        assert_eq!(one.servers(), ["nats://127.0.0.1:4222"]);
        assert_eq!(one.stream(), "HL7");
        assert_eq!(one.to_string(), "nats://127.0.0.1:4222/HL7");
        let three = NatsSpec::parse("tls://a:1,tls://b:2,c:3/IN").unwrap();
        assert_eq!(three.servers(), ["tls://a:1", "tls://b:2", "tls://c:3"]);
        assert_eq!(three.to_string(), "tls://a:1,b:2,c:3/IN");
    }

    #[test]
    fn refuses_credentials_bad_streams_and_schemes() {
        assert!(NatsSpec::parse("nats://user:pw@h:4222/HL7").is_err());
        assert!(NatsSpec::parse("nats://h:4222").is_err());
        assert!(NatsSpec::parse("nats://h:4222/").is_err());
        assert!(NatsSpec::parse("nats://h:4222/a.b").is_err());
        assert!(NatsSpec::parse("nats://h:4222/a b").is_err());
        assert!(NatsSpec::parse("http://h:4222/HL7").is_err());
        assert!(NatsSpec::parse("nats:///HL7").is_err());
    }
}
