//! Delivery: a digest of a network's alert changes, as one JSON POST to its
//! webhook and one e-mail to its recipients over SMTP.
//!
//! Webhook body:
//!
//! ```json
//! {"network":"leipzig","alerts":[{"event":"firing","time":"...","alert":{...}}]}
//! ```
//!
//! where `alert` is the alert as `GET /api/v1/networks/{network}/alerts`
//! lists it.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use meshtable_store::alerts::{Alert, PendingNotice};
use meshtable_store::time::format_rfc3339_ms;
use serde::Serialize;

use super::target::{self, GuardedResolver, TargetError};

/// How long one delivery attempt may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The sender when a network sets none.
pub const DEFAULT_FROM: &str = "meshtable <meshtable@localhost>";

/// Why a delivery failed (it is retried at the next evaluation).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The webhook could not be reached or did not answer 2xx.
    #[error("webhook: {0}")]
    Webhook(String),
    /// The webhook's address is internal and the configuration does not
    /// allow that ([`super::target`]); nothing was sent.
    #[error("webhook refused: {0}")]
    Refused(#[from] TargetError),
    /// An e-mail address or the SMTP server setting is wrong.
    #[error("e-mail settings: {0}")]
    Address(String),
    /// The SMTP server could not be reached or refused the message.
    #[error("smtp: {0}")]
    Smtp(String),
}

#[derive(Serialize)]
struct Item<'a> {
    event: &'static str,
    time: String,
    alert: &'a Alert,
}

#[derive(Serialize)]
struct Body<'a> {
    network: &'a str,
    alerts: Vec<Item<'a>>,
}

impl NotifyError {
    /// The channel that failed: `webhook` or `email`.
    pub fn channel(&self) -> &'static str {
        match self {
            NotifyError::Webhook(_) | NotifyError::Refused(_) => "webhook",
            NotifyError::Address(_) | NotifyError::Smtp(_) => "email",
        }
    }
}

/// The webhook's JSON body for a digest.
pub fn webhook_body(network: &str, notices: &[PendingNotice]) -> serde_json::Value {
    let body = Body {
        network,
        alerts: notices
            .iter()
            .map(|n| Item {
                event: n.event.as_str(),
                time: format_rfc3339_ms(n.t_ms),
                alert: &n.alert,
            })
            .collect(),
    };
    serde_json::to_value(body).unwrap_or_default()
}

/// The HTTP client of webhook deliveries, and whether it may reach
/// internal addresses (see [`super::target`]).
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    allow_private: bool,
}

impl Webhooks {
    /// The client for `alert_webhook_allow_private = allow_private`: when
    /// false, names resolve through [`GuardedResolver`], redirects to
    /// internal IP literals are refused and no proxy is used; when true,
    /// reqwest's defaults (system proxy, redirects).
    pub fn new(allow_private: bool) -> Result<Webhooks, reqwest::Error> {
        let mut b = reqwest::Client::builder();
        if !allow_private {
            b = b
                .dns_resolver(std::sync::Arc::new(GuardedResolver))
                .redirect(target::redirect_policy())
                .no_proxy();
        }
        Ok(Webhooks {
            client: b.build()?,
            allow_private,
        })
    }

    /// The client (guarded unless internal addresses are allowed).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether internal addresses are allowed.
    pub fn allow_private(&self) -> bool {
        self.allow_private
    }
}

/// POSTs a digest to a webhook, after checking its address again
/// ([`target::check_url`]: DNS may have changed since it was saved).
pub async fn send_webhook(
    hooks: &Webhooks,
    url: &str,
    network: &str,
    notices: &[PendingNotice],
) -> Result<(), NotifyError> {
    target::check_url(url, hooks.allow_private).await?;
    let r = hooks
        .client
        .post(url)
        .timeout(DELIVERY_TIMEOUT)
        .json(&webhook_body(network, notices))
        .send()
        .await
        .map_err(|e| match target::refusal_in(&e) {
            // The resolver or the redirect policy refused an address.
            Some(t) => NotifyError::Refused(t.clone()),
            None => NotifyError::Webhook(e.without_url().to_string()),
        })?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(NotifyError::Webhook(format!("answered {}", r.status())))
    }
}

/// The subject and text of a digest e-mail.
pub fn email_text(network: &str, notices: &[PendingNotice]) -> (String, String) {
    let firing = notices
        .iter()
        .filter(|n| n.event == meshtable_store::alerts::AlertState::Firing)
        .count();
    let subject = format!(
        "[meshtable {network}] {} alert change{}, {firing} firing",
        notices.len(),
        if notices.len() == 1 { "" } else { "s" }
    );
    let mut text = format!("Alert changes in network {network}:\n\n");
    for n in notices {
        text.push_str(&format!(
            "{} {} #{} {} {}: {}\n",
            format_rfc3339_ms(n.t_ms),
            n.event.as_str().to_uppercase(),
            n.alert.id,
            n.alert.rule,
            n.alert.subject,
            n.alert.message
        ));
    }
    (subject, text)
}

/// Sends a digest e-mail through an SMTP relay (`host:port`, plain SMTP).
pub async fn send_email(
    smtp_server: &str,
    from: Option<&str>,
    to: &[String],
    network: &str,
    notices: &[PendingNotice],
) -> Result<(), NotifyError> {
    let (host, port) = smtp_server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            NotifyError::Address(format!("smtp_server {smtp_server:?}: expected host:port"))
        })?;
    let from: Mailbox = from
        .unwrap_or(DEFAULT_FROM)
        .parse()
        .map_err(|e| NotifyError::Address(format!("email_from: {e}")))?;
    let (subject, text) = email_text(network, notices);
    let mut b = Message::builder().from(from).subject(subject);
    for t in to {
        let mb: Mailbox = t
            .parse()
            .map_err(|e| NotifyError::Address(format!("email_to {t:?}: {e}")))?;
        b = b.to(mb);
    }
    let msg = b
        .body(text)
        .map_err(|e| NotifyError::Address(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(DELIVERY_TIMEOUT))
        .build();
    transport
        .send(msg)
        .await
        .map_err(|e| NotifyError::Smtp(e.to_string()))?;
    Ok(())
}
