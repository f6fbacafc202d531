//! The blocking HTTP client both backends share: ureq, rustls where an endpoint is https (never the system's
//! OpenSSL), no proxy (the servers are on the VM's network), one timeout per request.

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};

use super::FleetError;
use crate::config::Fleet;

fn pem_items(path: &std::path::Path) -> Result<Vec<PemItem<'static>>, FleetError> {
    let tls = |message: String| FleetError::Tls { path: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| tls(e.to_string()))?;
    let items: Result<Vec<_>, _> = ureq::tls::parse_pem(&bytes).collect();
    let items = items.map_err(|e| tls(format!("not PEM: {e}")))?;
    if items.is_empty() {
        return Err(tls("no PEM certificate or key in it".into()));
    }
    Ok(items)
}

fn certs(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, FleetError> {
    let certs: Vec<_> = pem_items(path)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(FleetError::Tls { path: path.display().to_string(), message: "no certificate in it".into() });
    }
    Ok(certs)
}

/// The agent for a `[fleet]` section.
pub(crate) fn agent(f: &Fleet) -> Result<ureq::Agent, FleetError> {
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &f.ca_file {
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs(ca)?)));
    }
    if let (Some(cert), Some(key)) = (&f.cert_file, &f.key_file) {
        let chain = certs(cert)?;
        let key = pem_items(key)?
            .into_iter()
            .find_map(|i| match i {
                PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .ok_or_else(|| FleetError::Tls { path: key.display().to_string(), message: "no private key".into() })?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(f.timeout_secs)))
        .http_status_as_error(false)
        .proxy(None)
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

/// A transport error: its text, and whether the request may have reached the server (false only when no
/// connection was made: the name did not resolve, the connection was refused or timed out while connecting).
#[derive(Debug)]
pub(crate) struct PostError {
    pub text: String,
    pub maybe_sent: bool,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn post_error(e: ureq::Error) -> PostError {
    use ureq::{Error, Timeout};
    let not_sent = match &e {
        Error::HostNotFound | Error::ConnectionFailed => true,
        Error::Timeout(Timeout::Resolve | Timeout::Connect) => true,
        Error::Io(io) => {
            matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable)
        }
        _ => false,
    };
    PostError { text: e.to_string(), maybe_sent: !not_sent }
}

/// POSTs a JSON body; the status and the body text, or the transport error.
pub(crate) fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Result<(u16, String), PostError> {
    let mut req = agent.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send(body.to_string()).map_err(post_error)?;
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().map_err(|e| PostError { maybe_sent: true, ..post_error(e) })?;
    Ok((status, text))
}
