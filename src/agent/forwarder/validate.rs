//! API key validation (`GET /api/v1/validate`), at start and every
//! `DD_FORWARDER_APIKEY_VALIDATION_INTERVAL`; logged, never blocking sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::connect::HttpClient;
use super::ForwarderStats;
use crate::agent::config::AGENT_VERSION;

/// The Agent's placeholder key, valid without a request.
const NULL_KEY: &str = "00000000000000000000000000000000";

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// 200.
    Valid,
    /// 403.
    Invalid,
    /// Anything else, or no answer.
    Unknown,
}

/// Where keys of `base_url` are validated: Datadog sites go to `https://api.<site>`,
/// every other URL is used unchanged, as the Agent does.
pub fn api_domain(base_url: &str) -> String {
    let Some((scheme, rest)) = base_url.split_once("://") else { return base_url.to_string() };
    let host_end = rest.find(['/', ':']).unwrap_or(rest.len());
    let host = rest[..host_end].to_ascii_lowercase();
    let h = host.trim_end_matches('.');
    let labels: Vec<&str> = h.split('.').collect();
    // ([a-z]{2,}\d{1,2}\.)?(datadoghq\.[a-z]+|ddog-gov\.com)$
    let n = labels.len();
    let dd = n >= 2 && labels[n - 2] == "datadoghq" && labels[n - 1].chars().all(|c| c.is_ascii_lowercase());
    let gov = n >= 2 && labels[n - 2] == "ddog-gov" && labels[n - 1] == "com";
    let site = (dd || gov).then(|| n - 2);
    let Some(i) = site else { return base_url.to_string() };
    let region = |l: &str| {
        let letters = l.chars().take_while(|c| c.is_ascii_lowercase()).count();
        let digits = l.len() - letters;
        letters >= 2 && (1..=2).contains(&digits) && l[letters..].chars().all(|c| c.is_ascii_digit())
    };
    let start = if i >= 1 && region(labels[i - 1]) { i - 1 } else { i };
    format!("{scheme}://api.{}", labels[start..].join("."))
}

/// Checks one key once.
pub async fn check(client: &HttpClient, base_url: &str, key: &str, timeout: Duration) -> (KeyStatus, String) {
    if key == NULL_KEY {
        return (KeyStatus::Valid, "placeholder key".into());
    }
    let url = format!("{}/api/v1/validate?api_key={key}", api_domain(base_url));
    let req = match hyper::Request::get(&url)
        .header("User-Agent", format!("datadog-agent/{AGENT_VERSION}"))
        .body(Full::new(Bytes::new()))
    {
        Ok(r) => r,
        Err(e) => return (KeyStatus::Unknown, e.to_string()),
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => (KeyStatus::Unknown, format!("timeout after {timeout:?}")),
        Ok(Err(e)) => (KeyStatus::Unknown, super::error_chain(&e)),
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            let _ = tokio::time::timeout(timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
            match code {
                200 => (KeyStatus::Valid, "HTTP 200".into()),
                403 => (KeyStatus::Invalid, "HTTP 403".into()),
                c => (KeyStatus::Unknown, format!("HTTP {c}")),
            }
        }
    }
}

/// Validates every key of an endpoint now and then every `interval`.
pub async fn run(
    client: HttpClient,
    base_url: String,
    keys: Vec<String>,
    interval: Duration,
    stats: Arc<ForwarderStats>,
) {
    if keys.is_empty() {
        return;
    }
    let timeout = Duration::from_secs(10) / keys.len().max(1) as u32;
    loop {
        for (i, key) in keys.iter().enumerate() {
            let (status, detail) = check(&client, &base_url, key, timeout).await;
            // The key travels in the URL here; an error quoting it is redacted.
            let detail = crate::core::redact::scrub(&detail, std::slice::from_ref(key));
            match status {
                KeyStatus::Valid => {
                    stats.apikey_valid.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(endpoint = %base_url, key_index = i, "API key is valid");
                }
                KeyStatus::Invalid => {
                    stats.apikey_invalid.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %base_url, key_index = i, "API key is invalid (403 from /api/v1/validate); payloads sent with it will be dropped by the intake");
                }
                KeyStatus::Unknown => {
                    stats.apikey_unknown.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %base_url, key_index = i, error = %detail, "API key could not be validated");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_domains() {
        assert_eq!(api_domain("https://7-74-0-app.agent.datadoghq.com."), "https://api.datadoghq.com");
        assert_eq!(api_domain("https://7-74-0-app.agent.us3.datadoghq.com."), "https://api.us3.datadoghq.com");
        assert_eq!(api_domain("https://app.datadoghq.eu"), "https://api.datadoghq.eu");
        assert_eq!(api_domain("https://app.ddog-gov.com"), "https://api.ddog-gov.com");
        assert_eq!(api_domain("https://127.0.0.1:4430"), "https://127.0.0.1:4430");
        assert_eq!(api_domain("http://localhost:8080"), "http://localhost:8080");
    }
}
