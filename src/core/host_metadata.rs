//! The Agent's host metadata payload ("v5"), posted as JSON to `/intake/`:
//! it is what makes a host appear in the infrastructure list, with its host
//! tags (`host-tags.system`). Also its schedule: the Agent sends it at
//! start, then after 5, 15 and 30 minutes (an exponential backoff from the
//! 5-minute early interval, factor 3, capped at the 30-minute interval),
//! then every 30 minutes.
//!
//! Pure: the host facts are gathered by the caller.

use std::time::Duration;

use serde::Serialize;

/// Request path of the payload.
pub const PATH: &str = "/intake/";

/// The Agent's early interval (`defaultEarlyInterval`).
const EARLY_INTERVAL: Duration = Duration::from_secs(300);
/// The Agent's interval (`defaultCollectInterval`).
const INTERVAL: Duration = Duration::from_secs(1800);

/// Wait after the `sent`-th payload (1 = the one sent at start) before the
/// next: 300 s, 900 s, then 1800 s forever.
pub fn next_interval(sent: u32) -> Duration {
    let mut d = EARLY_INTERVAL;
    for _ in 1..sent.min(8) {
        d = (d * 3).min(INTERVAL);
    }
    d
}

/// Facts about the machine, read by the agent at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Go's `runtime.GOOS` (`linux`).
    pub os: String,
    /// `gethostname(2)`.
    pub socket_hostname: String,
    /// Fully qualified name (the socket hostname when unknown).
    pub socket_fqdn: String,
    /// Time zone abbreviation (`UTC`).
    pub timezone: String,
    /// Stable machine identifier formatted as a UUID (empty when unknown).
    pub uuid: String,
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// `uname -m`.
    pub machine: String,
    /// `uname -r`.
    pub kernel_release: String,
}

/// Everything the payload says.
#[derive(Debug, Clone, Default)]
pub struct HostMetadataSettings {
    /// The agent's host name (`internalHostname`, `meta.hostname`).
    pub hostname: String,
    /// The main API key (`apiKey`, a legacy field the Agent still fills).
    pub api_key: String,
    /// Agent version announced.
    pub agent_version: String,
    /// `tags` + `extra_tags` + `env:`, sorted and de-duplicated.
    pub host_tags: Vec<String>,
    /// Machine facts.
    pub facts: HostFacts,
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "apiKey")]
    api_key: &'a str,
    #[serde(rename = "agentVersion")]
    agent_version: &'a str,
    uuid: &'a str,
    #[serde(rename = "internalHostname")]
    internal_hostname: &'a str,
    os: &'a str,
    #[serde(rename = "agent-flavor")]
    agent_flavor: &'a str,
    python: &'a str,
    #[serde(rename = "systemStats")]
    system_stats: SystemStats<'a>,
    meta: Meta<'a>,
    #[serde(rename = "host-tags")]
    host_tags: HostTags<'a>,
    network: Option<()>,
    logs: Logs,
    #[serde(rename = "install-method")]
    install_method: InstallMethod<'a>,
    #[serde(rename = "proxy-info")]
    proxy_info: ProxyInfo,
    otlp: Otlp,
    gohai: &'a str,
}

#[derive(Serialize)]
struct SystemStats<'a> {
    #[serde(rename = "cpuCores")]
    cpu_cores: u32,
    machine: &'a str,
    platform: &'a str,
    #[serde(rename = "pythonV")]
    python_v: &'a str,
    processor: &'a str,
    #[serde(rename = "macV")]
    mac_v: [&'a str; 3],
    #[serde(rename = "nixV")]
    nix_v: [&'a str; 3],
    #[serde(rename = "fbsdV")]
    fbsd_v: [&'a str; 3],
    #[serde(rename = "winV")]
    win_v: [&'a str; 3],
}

#[derive(Serialize)]
struct Meta<'a> {
    #[serde(rename = "socket-hostname")]
    socket_hostname: &'a str,
    timezones: [&'a str; 1],
    #[serde(rename = "socket-fqdn")]
    socket_fqdn: &'a str,
    #[serde(rename = "ec2-hostname")]
    ec2_hostname: &'a str,
    hostname: &'a str,
    host_aliases: [&'a str; 0],
    #[serde(rename = "instance-id")]
    instance_id: &'a str,
    #[serde(rename = "hostname-resolution-version")]
    hostname_resolution_version: u32,
}

#[derive(Serialize)]
struct HostTags<'a> {
    system: &'a [String],
}

#[derive(Serialize)]
struct Logs {
    transport: &'static str,
    auto_multi_line_detection_enabled: bool,
}

#[derive(Serialize)]
struct InstallMethod<'a> {
    tool: Option<&'a str>,
    tool_version: &'a str,
    installer_version: Option<&'a str>,
}

#[derive(Serialize)]
struct ProxyInfo {
    #[serde(rename = "no-proxy-nonexact-match")]
    no_proxy_nonexact_match: bool,
    #[serde(rename = "proxy-behavior-changed")]
    proxy_behavior_changed: bool,
    #[serde(rename = "no-proxy-nonexact-match-explicitly-set")]
    no_proxy_nonexact_match_explicitly_set: bool,
}

#[derive(Serialize)]
struct Otlp {
    enabled: bool,
}

/// The payload's JSON text (before compression).
pub fn payload_json(s: &HostMetadataSettings) -> Vec<u8> {
    let f = &s.facts;
    let p = Payload {
        api_key: &s.api_key,
        agent_version: &s.agent_version,
        uuid: &f.uuid,
        internal_hostname: &s.hostname,
        os: &f.os,
        agent_flavor: "agent",
        python: "n/a",
        system_stats: SystemStats {
            cpu_cores: f.cpu_cores,
            machine: &f.machine,
            platform: &f.os,
            python_v: "n/a",
            processor: "",
            mac_v: ["", "", ""],
            nix_v: ["", "", ""],
            fbsd_v: ["", "", ""],
            win_v: ["", "", ""],
        },
        meta: Meta {
            socket_hostname: &f.socket_hostname,
            timezones: [&f.timezone],
            socket_fqdn: &f.socket_fqdn,
            ec2_hostname: "",
            hostname: &s.hostname,
            host_aliases: [],
            instance_id: "",
            hostname_resolution_version: 1,
        },
        host_tags: HostTags { system: &s.host_tags },
        network: None,
        logs: Logs { transport: "", auto_multi_line_detection_enabled: false },
        install_method: InstallMethod { tool: Some("edgestat"), tool_version: "edgestat", installer_version: None },
        proxy_info: ProxyInfo {
            no_proxy_nonexact_match: false,
            proxy_behavior_changed: false,
            no_proxy_nonexact_match_explicitly_set: false,
        },
        otlp: Otlp { enabled: false },
        gohai: "",
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_the_agents_backoff() {
        let secs: Vec<u64> = (1..=6).map(|n| next_interval(n).as_secs()).collect();
        assert_eq!(secs, vec![300, 900, 1800, 1800, 1800, 1800]);
        assert_eq!(next_interval(u32::MAX).as_secs(), 1800);
    }

    #[test]
    fn payload_has_the_fields_the_backend_reads() {
        let s = HostMetadataSettings {
            hostname: "h1".into(),
            api_key: "k".into(),
            agent_version: "7.74.0".into(),
            host_tags: vec!["env:prod".into(), "team:core".into()],
            facts: HostFacts {
                os: "linux".into(),
                socket_hostname: "box".into(),
                timezone: "UTC".into(),
                cpu_cores: 4,
                ..Default::default()
            },
        };
        let v: serde_json::Value = serde_json::from_slice(&payload_json(&s)).unwrap();
        assert_eq!(v["apiKey"], "k");
        assert_eq!(v["internalHostname"], "h1");
        assert_eq!(v["agentVersion"], "7.74.0");
        assert_eq!(v["host-tags"]["system"], serde_json::json!(["env:prod", "team:core"]));
        assert_eq!(v["meta"]["hostname"], "h1");
        assert_eq!(v["meta"]["socket-hostname"], "box");
        assert_eq!(v["meta"]["timezones"], serde_json::json!(["UTC"]));
        assert_eq!(v["systemStats"]["cpuCores"], 4);
        assert_eq!(v["os"], "linux");
        assert!(v["network"].is_null());
        assert_eq!(v["gohai"], "");
    }

    #[test]
    fn no_tags_is_an_empty_list_not_null() {
        let v: serde_json::Value = serde_json::from_slice(&payload_json(&HostMetadataSettings::default())).unwrap();
        assert_eq!(v["host-tags"]["system"], serde_json::json!([]));
    }
}
