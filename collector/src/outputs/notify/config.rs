//! Channel settings: the `notifiers:` list of the `--config` file, validated at start.
//!
//! ```yaml
//! notifiers:
//!   - type: webhook
//!     url: https://hooks.example/etcd
//!     hmac_key: {env: WEBHOOK_HMAC_KEY}      # or {file: /run/secrets/hmac}, or a literal
//!   - type: slack
//!     url: {file: /run/secrets/slack-url}
//!   - type: pagerduty
//!     routing_key: {env: PD_ROUTING_KEY}
//!   - type: email
//!     smtp_host: smtp.example
//!     smtp_port: 587
//!     tls: starttls                           # starttls (default) | tls | none
//!     username: alerts
//!     password: {env: SMTP_PASSWORD}
//!     from: etcd-monitor <alerts@example>
//!     to: [oncall@example]
//!   - type: alertmanager
//!     url: http://alertmanager:9093
//! ```
//! Every entry also takes `name` (default: the type), `timeout` (10s), `retries` (3),
//! `backoff` (500ms, doubled per retry) and `send_resolved` (true).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Where a secret comes from. `Debug` names the variable or file, never a literal value.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The value itself (discouraged outside tests).
    Literal(String),
    /// An environment variable.
    Env {
        /// Variable name.
        env: String,
    },
    /// A file (trailing newline trimmed).
    File {
        /// Path.
        file: PathBuf,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretSource::Env { env } => f.debug_struct("Env").field("env", env).finish(),
            SecretSource::File { file } => f.debug_struct("File").field("file", file).finish(),
        }
    }
}

/// A secret value; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SecretSource {
    fn resolve(&self, field: &str) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Literal(v) => v.clone(),
            SecretSource::Env { env } => std::env::var(env)
                .map_err(|_| format!("{field}: environment variable {env} is not set"))?,
            SecretSource::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("{field}: {}: {e}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(format!("{field}: is empty"));
        }
        Ok(Secret(value))
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS (local relays only).
    None,
}

/// Settings every channel takes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    /// Channel name in logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// Per-attempt timeout (`10s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries after the first attempt (3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// First retry delay, doubled per retry (`500ms`).
    #[serde(default)]
    pub backoff: Option<String>,
    /// Send resolved notifications (true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

/// One `notifiers:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChannelSpec {
    /// Structured log lines.
    Console {
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
    /// Generic JSON webhook.
    Webhook {
        /// URL.
        url: String,
        /// HMAC-SHA256 key; the signature goes in `X-Etcdmon-Signature: sha256=<hex>`.
        #[serde(default)]
        hmac_key: Option<SecretSource>,
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
    /// Slack incoming webhook.
    Slack {
        /// The webhook URL (a secret).
        url: SecretSource,
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        /// Integration routing key (a secret).
        routing_key: SecretSource,
        /// Events endpoint (default `https://events.pagerduty.com/v2/enqueue`).
        #[serde(default)]
        url: Option<String>,
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
    /// Email over SMTP.
    Email {
        /// SMTP server.
        smtp_host: String,
        /// Port (587).
        #[serde(default)]
        smtp_port: Option<u16>,
        /// `starttls` (default), `tls` or `none`.
        #[serde(default)]
        tls: SmtpTls,
        /// Extra CA (PEM) to trust for the server's certificate.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// SMTP user.
        #[serde(default)]
        username: Option<String>,
        /// SMTP password (a secret).
        #[serde(default)]
        password: Option<SecretSource>,
        /// Sender.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
    /// Prometheus Alertmanager (v2 API).
    Alertmanager {
        /// Base URL (`http://alertmanager:9093`).
        url: String,
        /// Common settings.
        #[serde(flatten)]
        common: Common,
    },
}

/// Validated email settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Server.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Security.
    pub tls: SmtpTls,
    /// Extra CA.
    pub ca_pem: Option<Vec<u8>>,
    /// User and password.
    pub credentials: Option<(String, Secret)>,
    /// Sender.
    pub from: lettre::message::Mailbox,
    /// Recipients.
    pub to: Vec<lettre::message::Mailbox>,
}

/// What a channel does.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// Log lines.
    Console,
    /// Webhook.
    Webhook {
        /// URL.
        url: String,
        /// HMAC key.
        hmac_key: Option<Secret>,
    },
    /// Slack.
    Slack {
        /// Webhook URL.
        url: Secret,
    },
    /// PagerDuty.
    PagerDuty {
        /// Events endpoint.
        url: String,
        /// Routing key.
        routing_key: Secret,
    },
    /// Email.
    Email(Box<EmailSettings>),
    /// Alertmanager.
    Alertmanager {
        /// Base URL.
        url: String,
    },
}

impl ChannelKind {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Console => "console",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::PagerDuty { .. } => "pagerduty",
            ChannelKind::Email(_) => "email",
            ChannelKind::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// A validated channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Name.
    pub name: String,
    /// Kind and its settings.
    pub kind: ChannelKind,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Send resolved notifications.
    pub send_resolved: bool,
}

fn http_url(field: &str, url: &str) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{field}: not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("{field}: must be an http(s) URL"));
    }
    Ok(url.to_string())
}

const COMMON_FIELDS: [&str; 6] = [
    "type",
    "name",
    "timeout",
    "retries",
    "backoff",
    "send_resolved",
];

fn allowed_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "console" => &[],
        "webhook" => &["url", "hmac_key"],
        "slack" => &["url"],
        "pagerduty" => &["routing_key", "url"],
        "email" => &[
            "smtp_host",
            "smtp_port",
            "tls",
            "ca_file",
            "username",
            "password",
            "from",
            "to",
        ],
        "alertmanager" => &["url"],
        _ => return None,
    })
}

/// Parses the `notifiers:` entries, rejecting unknown fields (a typo such as `hmac-key` must
/// not silently turn signing off); errors read `notifiers[i].field: reason`.
pub fn parse(entries: &[serde_yaml_ng::Value]) -> Result<Vec<ChannelSpec>, String> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let p = format!("notifiers[{i}]");
        let map = entry
            .as_mapping()
            .ok_or_else(|| format!("{p}: must be a mapping with a `type`"))?;
        let kind = map.get("type").and_then(|t| t.as_str()).ok_or_else(|| {
            format!("{p}.type: required (console, webhook, slack, pagerduty, email, alertmanager)")
        })?;
        let allowed = allowed_fields(kind).ok_or_else(|| {
            format!("{p}.type: {kind:?} is not one of console, webhook, slack, pagerduty, email, alertmanager")
        })?;
        for key in map.keys() {
            let key = key.as_str().unwrap_or_default();
            if !COMMON_FIELDS.contains(&key) && !allowed.contains(&key) {
                let mut known: Vec<&str> = allowed.to_vec();
                known.extend(&COMMON_FIELDS[1..]);
                return Err(format!(
                    "{p}.{key}: unknown field for type {kind}; known: {}",
                    known.join(", ")
                ));
            }
        }
        out.push(
            serde_yaml_ng::from_value::<ChannelSpec>(entry.clone())
                .map_err(|e| format!("{p}: {e}"))?,
        );
    }
    Ok(out)
}

/// Validates `specs` (reading secrets and files); errors read `notifiers[i].field: reason`.
/// A console channel is always present (added first when not listed).
pub fn validate(specs: &[ChannelSpec]) -> Result<Vec<ChannelConfig>, String> {
    let mut out: Vec<ChannelConfig> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let p = format!("notifiers[{i}].");
        let f = |name: &str| format!("{p}{name}");
        let (kind, common) = channel_kind(spec, &f)?;
        let channel = channel_config(kind, common, &f, &out)?;
        out.push(channel);
    }
    if !out.iter().any(|c| matches!(c.kind, ChannelKind::Console)) {
        out.insert(
            0,
            ChannelConfig {
                name: "console".to_string(),
                kind: ChannelKind::Console,
                timeout: Duration::from_secs(1),
                retries: 0,
                backoff: Duration::from_millis(100),
                send_resolved: true,
            },
        );
    }
    Ok(out)
}

/// One channel's kind with its URLs checked and secrets and files read (`f` names a field of
/// this entry in errors), and its common settings.
fn channel_kind<'a>(
    spec: &'a ChannelSpec,
    f: &dyn Fn(&str) -> String,
) -> Result<(ChannelKind, &'a Common), String> {
    Ok(match spec {
        ChannelSpec::Console { common } => (ChannelKind::Console, common),
        ChannelSpec::Webhook {
            url,
            hmac_key,
            common,
        } => (
            ChannelKind::Webhook {
                url: http_url(&f("url"), url)?,
                hmac_key: hmac_key
                    .as_ref()
                    .map(|s| s.resolve(&f("hmac_key")))
                    .transpose()?,
            },
            common,
        ),
        ChannelSpec::Slack { url, common } => {
            let url = url.resolve(&f("url"))?;
            // Checked without echoing the value: the URL is the secret.
            http_url(&f("url"), url.expose())
                .map_err(|_| format!("{}: must be an http(s) URL", f("url")))?;
            (ChannelKind::Slack { url }, common)
        }
        ChannelSpec::Pagerduty {
            routing_key,
            url,
            common,
        } => (
            ChannelKind::PagerDuty {
                url: http_url(
                    &f("url"),
                    url.as_deref()
                        .unwrap_or("https://events.pagerduty.com/v2/enqueue"),
                )?,
                routing_key: routing_key.resolve(&f("routing_key"))?,
            },
            common,
        ),
        ChannelSpec::Email {
            smtp_host,
            smtp_port,
            tls,
            ca_file,
            username,
            password,
            from,
            to,
            common,
        } => {
            if smtp_host.trim().is_empty() {
                return Err(format!("{}: must not be empty", f("smtp_host")));
            }
            let ca_pem = read_ca(f, ca_file.as_deref())?;
            let credentials = smtp_credentials(f, username, password)?;
            let (from, to) = mailboxes(f, from, to)?;
            (
                ChannelKind::Email(Box::new(EmailSettings {
                    host: smtp_host.clone(),
                    port: smtp_port.unwrap_or(587),
                    tls: *tls,
                    ca_pem,
                    credentials,
                    from,
                    to,
                })),
                common,
            )
        }
        ChannelSpec::Alertmanager { url, common } => (
            ChannelKind::Alertmanager {
                url: http_url(&f("url"), url)?,
            },
            common,
        ),
    })
}

/// The SMTP server's CA bundle (PEM), when `ca_file` is given.
fn read_ca(f: &dyn Fn(&str) -> String, ca_file: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    ca_file
        .map(|path| {
            std::fs::read(path).map_err(|e| format!("{}: {}: {e}", f("ca_file"), path.display()))
        })
        .transpose()
}

/// SMTP user name and password: both or neither.
fn smtp_credentials(
    f: &dyn Fn(&str) -> String,
    username: &Option<String>,
    password: &Option<SecretSource>,
) -> Result<Option<(String, Secret)>, String> {
    match (username, password) {
        (Some(u), Some(p)) => Ok(Some((u.clone(), p.resolve(&f("password"))?))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{}: required with username", f("password"))),
        (None, Some(_)) => Err(format!("{}: required with password", f("username"))),
    }
}

/// The sender and the recipients (at least one) as mailboxes.
fn mailboxes(
    f: &dyn Fn(&str) -> String,
    from: &str,
    to: &[String],
) -> Result<(lettre::message::Mailbox, Vec<lettre::message::Mailbox>), String> {
    let from = from
        .parse()
        .map_err(|e| format!("{}: {from:?}: {e}", f("from")))?;
    if to.is_empty() {
        return Err(format!("{}: at least one recipient", f("to")));
    }
    let to = to
        .iter()
        .map(|t| t.parse().map_err(|e| format!("{}: {t:?}: {e}", f("to"))))
        .collect::<Result<Vec<_>, String>>()?;
    Ok((from, to))
}

/// The channel's name (default: its type; letters, digits, '-', '_' or '.'; unique among
/// `earlier`), timeout (default 10 s), retries (3), backoff (500 ms) and send_resolved (true).
fn channel_config(
    kind: ChannelKind,
    common: &Common,
    f: &dyn Fn(&str) -> String,
    earlier: &[ChannelConfig],
) -> Result<ChannelConfig, String> {
    let dur = |field: &str, v: &Option<String>, default: Duration| match v {
        Some(s) => crate::model::time::parse_duration(s).map_err(|e| format!("{}: {e}", f(field))),
        None => Ok(default),
    };
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| kind.type_name().to_string());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{}: use letters, digits, '-', '_' or '.'",
            f("name")
        ));
    }
    if earlier.iter().any(|c| c.name == name) {
        return Err(format!(
            "{}: {name:?} is used twice; set distinct names",
            f("name")
        ));
    }
    Ok(ChannelConfig {
        name,
        kind,
        timeout: dur("timeout", &common.timeout, Duration::from_secs(10))?,
        retries: common.retries.unwrap_or(3),
        backoff: dur("backoff", &common.backoff, Duration::from_millis(500))?,
        send_resolved: common.send_resolved.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_in_any_debug_output() {
        const SECRET: &str = "hunter2-s3cr3t";
        let yaml = format!(
            "- type: webhook\n  url: http://127.0.0.1:1/hook\n  hmac_key: {SECRET}\n\
             - type: slack\n  url: https://hooks.example/{SECRET}\n\
             - type: pagerduty\n  routing_key: {SECRET}\n\
             - type: email\n  smtp_host: smtp.example\n  from: a@example.org\n  to: [b@example.org]\n  username: u\n  password: {SECRET}\n"
        );
        let entries: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&yaml).unwrap();
        let raw: Vec<ChannelSpec> = entries
            .iter()
            .map(|e| serde_yaml_ng::from_value(e.clone()).unwrap())
            .collect();
        let parsed = parse(&entries).unwrap();
        assert_eq!(parsed.len(), 4);
        for text in [
            format!("{raw:?}"),
            format!("{parsed:?}"),
            format!("{parsed:#?}"),
        ] {
            assert!(!text.contains(SECRET), "a secret in Debug output: {text}");
        }
    }

    fn specs(yaml: &str) -> Vec<ChannelSpec> {
        let entries: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).unwrap();
        parse(&entries).unwrap()
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        for (yaml, field) in [
            (
                "- type: webhook\n  url: http://x\n  hmac-key: k\n",
                "notifiers[0].hmac-key",
            ),
            ("- type: pager\n", "notifiers[0].type"),
            ("- url: http://x\n", "notifiers[0].type"),
        ] {
            let entries: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).unwrap();
            let err = parse(&entries).unwrap_err();
            assert!(err.starts_with(field), "{yaml}: {err}");
        }
    }

    #[test]
    fn secrets_come_from_env_and_files_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("pd");
        std::fs::write(&key, "routing-key-123\n").unwrap();
        let yaml = format!(
            "- type: pagerduty\n  routing_key: {{file: {}}}\n  url: http://127.0.0.1:1/v2/enqueue\n- type: webhook\n  name: hook\n  url: http://127.0.0.1:2/hook\n  hmac_key: s3cret\n  retries: 1\n  timeout: 2s\n",
            key.display()
        );
        let chans = validate(&specs(&yaml)).unwrap();
        assert_eq!(chans.len(), 3, "console added");
        assert_eq!(chans[0].name, "console");
        match &chans[1].kind {
            ChannelKind::PagerDuty { routing_key, .. } => {
                assert_eq!(routing_key.expose(), "routing-key-123");
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{chans:?}");
        assert!(
            !debug.contains("routing-key-123") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert_eq!(chans[2].retries, 1);
        assert_eq!(chans[2].timeout, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            ("- type: webhook\n  url: ftp://x\n", "notifiers[0].url"),
            (
                "- type: slack\n  url: {env: ETCDMON_TEST_SURELY_UNSET}\n",
                "notifiers[0].url",
            ),
            (
                "- type: email\n  smtp_host: h\n  from: a@b\n  to: []\n",
                "notifiers[0].to",
            ),
            (
                "- type: email\n  smtp_host: h\n  from: not an address\n  to: [a@b]\n",
                "notifiers[0].from",
            ),
            ("- type: console\n- type: console\n", "notifiers[1].name"),
            (
                "- type: webhook\n  url: http://x\n  timeout: soon\n",
                "notifiers[0].timeout",
            ),
        ] {
            let err = validate(&specs(yaml)).unwrap_err();
            assert!(err.starts_with(field), "{yaml}: {err}");
        }
    }
}
