//! `offline_store: {type: spark, spark_conf: {...}}`: Feast's Spark offline store settings, and
//! the Spark Connect URL (`spark.remote`) that points quiver at a Spark Connect server.
//!
//! A Spark Connect URL is `sc://host[:port][/;key=value;key=value...]` (port 15002 by default).
//! Parameters, as Spark's own clients read them: `token` (sent as `authorization: Bearer`; a
//! token turns TLS on unless `use_ssl=false` says otherwise), `use_ssl` (true/false),
//! `user_id`, `user_agent`, `session_id` (a UUID; quiver makes its own per job otherwise).
//! Anything else is refused by name, so a typo does not silently drop a token.

use std::collections::BTreeMap;
use std::fmt;

/// Spark Connect's default port.
pub const DEFAULT_PORT: u16 = 15002;

/// The Spark offline store: where Spark Connect is, and the other `spark_conf` entries, which
/// quiver sets on each Spark session it opens.
#[derive(Clone, PartialEq)]
pub struct SparkConfig {
    pub remote: SparkRemote,
    /// `spark_conf` minus `spark.remote`, values as text.
    pub conf: BTreeMap<String, String>,
}

impl fmt::Debug for SparkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparkConfig")
            .field("remote", &self.remote)
            .field("conf", &self.conf.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A parsed `sc://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SparkRemote {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
    pub use_ssl: bool,
    pub user_id: Option<String>,
    pub user_agent: Option<String>,
    pub session_id: Option<String>,
}

impl fmt::Debug for SparkRemote {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparkRemote")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("use_ssl", &self.use_ssl)
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl SparkRemote {
    /// The gRPC endpoint: `http://host:port` or `https://host:port`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.use_ssl { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// Parses `sc://host[:port][/;key=value...]`; the error says what is wrong and what is
    /// expected (the caller adds where the URL came from).
    pub fn parse(url: &str) -> Result<SparkRemote, String> {
        let rest = url.strip_prefix("sc://").ok_or_else(|| {
            format!("{url:?} is not a Spark Connect URL: expected sc://host[:port][/;token=...]")
        })?;
        let (authority, params) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: an IPv6 host needs a closing ]"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host: expected sc://host[:port]"));
        }
        if host.contains(['@', '?', '#', ' ']) {
            return Err(format!(
                "{url:?}: {host:?} is not a host name (parameters go after /; as in sc://host:15002/;token=...)"
            ));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: {p:?} is not a port number (1-65535)"))?,
        };
        let mut remote = SparkRemote {
            host: host.to_owned(),
            port,
            token: None,
            use_ssl: false,
            user_id: None,
            user_agent: None,
            session_id: None,
        };
        let mut use_ssl = None;
        if let Some(params) = params {
            let params = if params.is_empty() {
                params
            } else {
                params.strip_prefix(';').ok_or_else(|| {
                    format!(
                        "{url:?}: parameters start with /; (sc://host:port/;token=...), found /{params}"
                    )
                })?
            };
            for pair in params.split(';').filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{url:?}: parameter {pair:?} is not key=value"))?;
                let text = || Some(value.to_owned());
                match key {
                    "token" => remote.token = text(),
                    "use_ssl" => {
                        use_ssl = Some(match value.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(format!(
                                    "{url:?}: use_ssl={value:?}: expected true or false"
                                ));
                            }
                        });
                    }
                    "user_id" => remote.user_id = text(),
                    "user_agent" => remote.user_agent = text(),
                    "session_id" => {
                        if !is_uuid(value) {
                            return Err(format!(
                                "{url:?}: session_id={value:?} is not a UUID (Spark requires one)"
                            ));
                        }
                        remote.session_id = text();
                    }
                    other => {
                        return Err(format!(
                            "{url:?}: unknown parameter {other:?} (known: token, use_ssl, user_id, user_agent, session_id)"
                        ));
                    }
                }
            }
        }
        // As Spark's clients do: a token is a secret, so it travels over TLS unless told not to.
        remote.use_ssl = use_ssl.unwrap_or(remote.token.is_some());
        Ok(remote)
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_parameters() {
        let r = SparkRemote::parse("sc://spark.example:443/;token=abc;user_id=me").unwrap();
        assert_eq!(r.host, "spark.example");
        assert_eq!(r.port, 443);
        assert_eq!(r.token.as_deref(), Some("abc"));
        assert!(r.use_ssl, "a token turns TLS on");
        assert_eq!(r.user_id.as_deref(), Some("me"));
        assert_eq!(r.endpoint(), "https://spark.example:443");
        assert!(!format!("{r:?}").contains("abc"), "Debug hides the token");

        let r = SparkRemote::parse("sc://localhost").unwrap();
        assert_eq!((r.port, r.use_ssl), (DEFAULT_PORT, false));
        assert_eq!(r.endpoint(), "http://localhost:15002");
        let r = SparkRemote::parse("sc://127.0.0.1:15003/;token=t;use_ssl=false").unwrap();
        assert!(!r.use_ssl);
        let r = SparkRemote::parse("sc://[::1]:15002/").unwrap();
        assert_eq!(r.endpoint(), "http://[::1]:15002");
        let r = SparkRemote::parse(
            "sc://h/;session_id=0a1b2c3d-0000-4000-8000-00000000abcd;use_ssl=TRUE",
        )
        .unwrap();
        assert!(r.use_ssl && r.session_id.is_some());
    }

    #[test]
    fn refuses_malformed_urls_saying_why() {
        for (url, says) in [
            ("http://h:15002", "not a Spark Connect URL"),
            ("sc://", "no host"),
            ("sc://h:0", "not a port"),
            ("sc://h:99999", "not a port"),
            ("sc://h:1/token=x", "start with /;"),
            ("sc://h/;tokn=x", "unknown parameter \"tokn\""),
            ("sc://h/;use_ssl=yes", "expected true or false"),
            ("sc://h/;session_id=abc", "not a UUID"),
            ("sc://h/;token", "not key=value"),
            ("sc://[::1:15002", "closing ]"),
        ] {
            let e = SparkRemote::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
