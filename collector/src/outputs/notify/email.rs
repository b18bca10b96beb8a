//! Email over SMTP (lettre): STARTTLS by default, implicit TLS or plain for local relays.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::header::ContentType,
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

use super::{
    NotifyError,
    config::{EmailSettings, SmtpTls},
    title,
};
use crate::analysis::alerting::lifecycle::Alert;

/// The plain-text body.
pub fn body(alert: &Alert) -> String {
    let mut text = String::new();
    text.push_str(&title(alert));
    text.push_str("\n\n");
    for key in ["summary", "description", "runbook_url"] {
        if let Some(v) = alert.annotations.get(key) {
            text.push_str(&format!("{key}: {v}\n"));
        }
    }
    text.push_str(&format!("value: {}\n\nlabels:\n", alert.value));
    for (k, v) in &alert.labels {
        text.push_str(&format!("  {k} = {v}\n"));
    }
    text
}

/// Sends `alert` as one email to every recipient.
pub async fn send(s: &EmailSettings, alert: &Alert, timeout: Duration) -> Result<(), NotifyError> {
    let build = |e: String| NotifyError::Build(e);
    let mut message = Message::builder().from(s.from.clone());
    for to in &s.to {
        message = message.to(to.clone());
    }
    let message = message
        .subject(title(alert))
        .header(ContentType::TEXT_PLAIN)
        .body(body(alert))
        .map_err(|e| build(e.to_string()))?;
    let tls = match s.tls {
        SmtpTls::None => Tls::None,
        mode => {
            let mut params = TlsParameters::builder(s.host.clone());
            if let Some(pem) = &s.ca_pem {
                params = params.add_root_certificate(
                    Certificate::from_pem(pem).map_err(|e| build(format!("ca_file: {e}")))?,
                );
            }
            let params = params.build_rustls().map_err(|e| build(e.to_string()))?;
            if mode == SmtpTls::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = &s.credentials {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| NotifyError::Transport(e.to_string()))
}
