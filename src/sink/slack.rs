//! Slack: pattern alerts to incoming webhooks, in the original's shape (title, level line, up
//! to three recent events with their root causes, action steps, an investigation query).
//! Critical goes to the error webhook, the rest to the warning webhook.
//!
//! Delivery runs on its own task behind a bounded queue, retrying with backoff: a slow or
//! failing webhook never delays healing. The message text is built by pure functions.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Retries, post_retried};
use crate::Error;
use crate::api::health::{AlertLevel, WindowCounts};
use crate::decide::alerts::Notice;
use crate::telemetry::Metrics;

/// Webhook URLs (from SLACK_WEBHOOK_URL and SLACK_WEBHOOK_URL_ERROR) and the table the
/// investigation query names.
#[derive(Clone, Default)]
pub struct SlackConfig {
    pub warning_webhook: Option<String>,
    /// Critical alerts; falls back to the warning webhook when unset.
    pub error_webhook: Option<String>,
    /// `project.dataset.table` of the exported healing events.
    pub events_table: String,
}

/// The webhooks are secrets: Debug shows only whether each is set.
impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |w: &Option<String>| if w.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("SlackConfig")
            .field("warning_webhook", &set(&self.warning_webhook))
            .field("error_webhook", &set(&self.error_webhook))
            .field("events_table", &self.events_table)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Warning,
    Error,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Warning => "warning",
            Channel::Error => "error",
        }
    }
}

/// Text from the records (a trigger reason holds the failure reasons workers report) as Slack
/// shows it literally: `<!channel>` or `<https://…|link>` in it must not ping or link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Posts one message now (retried with backoff, each request bounded by the Slack
/// timeout): for a one-shot command such as the digest, where the queue of [`Slack`] would
/// outlive nothing.
pub async fn post_now(webhook: &str, payload: &Value) -> Result<(), Error> {
    // A webhook does not redirect; following one would hand the message (and the URL, as
    // its Referer) to wherever it pointed.
    let client = reqwest::Client::builder()
        .timeout(crate::timeouts::SLACK_REQUEST)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Http {
            step: "building the Slack client",
            target: "the webhook".into(),
            source: e,
        })?;
    post_with_retries(&client, webhook, payload).await
}

/// One recent healing action, as the message lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentAction {
    pub at: Timestamp,
    pub healing_id: String,
    pub root_cause: String,
    pub trigger_reason: String,
    pub success: bool,
}

/// A pattern notice for one healing type in one namespace.
#[derive(Clone, Debug)]
pub struct PatternAlert {
    pub namespace: String,
    pub healing_type: String,
    pub notice: Notice,
    pub counts: WindowCounts,
    /// Newest first; the message shows up to three.
    pub recent: Vec<RecentAction>,
    /// When the type's circuit opened with this assessment: heals are skipped until then.
    pub circuit_open_until: Option<Timestamp>,
}

fn level_icon(level: AlertLevel) -> &'static str {
    match level {
        AlertLevel::Normal => ":white_check_mark:",
        AlertLevel::Yellow => ":large_yellow_circle:",
        AlertLevel::Red => ":red_circle:",
        AlertLevel::Critical => ":rotating_light:",
    }
}

/// The channel and the webhook payload for `alert`.
pub fn pattern_message(alert: &PatternAlert, events_table: &str) -> (Channel, Value) {
    let t = &alert.healing_type;
    let c = &alert.counts;
    let (level, title, level_line) = match alert.notice {
        Notice::Alert(level) => {
            let why = match level {
                AlertLevel::Critical => format!(
                    "{} of {} {t} actions failed in the critical window",
                    c.failed_in_critical_window, c.in_critical_window
                ),
                AlertLevel::Red => format!("{} {t} actions in the red window", c.in_red_window),
                _ => format!("{} {t} actions in the yellow window", c.in_yellow_window),
            };
            (
                level,
                format!(
                    "{} Healing Pattern Alert: {t} ({})",
                    level_icon(level),
                    alert.namespace
                ),
                format!("*Level:* {} ({why})", level.as_str().to_uppercase()),
            )
        }
        Notice::Resolved { was } => (
            AlertLevel::Normal,
            format!(
                "{} Healing Pattern Resolved: {t} ({})",
                level_icon(AlertLevel::Normal),
                alert.namespace
            ),
            format!("*Level:* NORMAL (was {})", was.as_str().to_uppercase()),
        ),
    };
    let mut lines = vec![format!("*{title}*"), level_line];
    if let Some(until) = alert.circuit_open_until {
        lines.push(format!(
            "*Circuit breaker:* OPEN: {t} heals are skipped until {} UTC, then one trial heal runs",
            until.strftime("%Y-%m-%d %H:%M")
        ));
    }
    if !alert.recent.is_empty() {
        lines.push("*Recent events:*".into());
        for action in alert.recent.iter().take(3) {
            lines.push(format!(
                "• {} {} `{}`: root cause `{}`: {}",
                action.at.strftime("%H:%M"),
                if action.success {
                    "succeeded"
                } else {
                    "FAILED"
                },
                action.healing_id,
                action.root_cause,
                escape(&action.trigger_reason)
            ));
        }
    }
    if let Notice::Alert(level) = alert.notice {
        lines.push("*Action required:*".into());
        lines.extend(action_steps(level, t).into_iter().map(|s| format!("• {s}")));
        lines.push("*Investigate:*".into());
        lines.push(format!("```{}```", investigation_query(events_table, t)));
    }
    let channel = if level == AlertLevel::Critical {
        Channel::Error
    } else {
        Channel::Warning
    };
    let text = lines.join("\n");
    let payload = json!({
        "text": title,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    });
    (channel, payload)
}

fn action_steps(level: AlertLevel, healing_type: &str) -> Vec<String> {
    let mut steps = vec![format!(
        "Group the recent {healing_type} events by root cause: `pipeline-healer analyze --type {healing_type} --since 24h`"
    )];
    match level {
        AlertLevel::Critical => steps.push(
            "Healing is failing: check the controller's logs and the failed events' messages before the circuit's trial heal"
                .into(),
        ),
        AlertLevel::Red => steps.push(
            "Healing is frequent: fix the root cause upstream rather than relying on healing".into(),
        ),
        _ => steps.push("Watch whether the pattern continues".into()),
    }
    steps
}

/// The query to paste into BigQuery. `healing_type` is a validated snake_case name.
pub fn investigation_query(events_table: &str, healing_type: &str) -> String {
    format!(
        "SELECT timestamp, healing_id, root_cause, trigger_reason, success\n\
         FROM `{events_table}`\n\
         WHERE healing_type = '{healing_type}'\n  \
         AND timestamp > TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR)\n\
         ORDER BY timestamp DESC"
    )
}

/// The original's phase self-heal message: "Self-Heal Triggered: {phase}" with the date,
/// whether healing was triggered, the correlation id and the missing components. Always the
/// warning channel.
pub fn phase_heal_message(
    phase: &str,
    date: &str,
    triggered: bool,
    correlation_id: &str,
    missing: &[String],
) -> (Channel, Value) {
    let title = format!(":wrench: Self-Heal Triggered: {phase}");
    let missing = if missing.is_empty() {
        "none".to_owned()
    } else {
        missing.join(", ")
    };
    let text = [
        format!("*{title}*"),
        format!("*Date:* {date}"),
        format!(
            "*Healing triggered:* {}",
            if triggered { "yes" } else { "no" }
        ),
        format!("*Correlation ID:* {correlation_id}"),
        format!("*Missing components:* {missing}"),
    ]
    .join("\n");
    let payload = json!({
        "text": title,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    });
    (Channel::Warning, payload)
}

/// A message waiting for delivery.
struct Outgoing {
    channel: Channel,
    payload: Value,
}

/// Queues messages for the delivery task. Cheap to clone.
#[derive(Clone)]
pub struct Slack {
    queue: Option<mpsc::Sender<Outgoing>>,
    config: SlackConfig,
}

/// Messages waiting beyond this many are dropped (and counted): alerts are about now.
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

impl Slack {
    /// Delivers nothing: no webhook is configured.
    pub fn disabled() -> Self {
        Self {
            queue: None,
            config: SlackConfig::default(),
        }
    }

    /// Starts the delivery task when a webhook is configured.
    pub fn start(config: SlackConfig, metrics: std::sync::Arc<Metrics>) -> Self {
        if config.warning_webhook.is_none() && config.error_webhook.is_none() {
            return Self {
                queue: None,
                config,
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = reqwest::Client::builder()
            .timeout(crate::timeouts::SLACK_REQUEST)
            .build()
            .unwrap_or_default();
        tokio::spawn(deliver(rx, client, config.clone(), metrics));
        Self {
            queue: Some(tx),
            config,
        }
    }

    pub fn events_table(&self) -> &str {
        &self.config.events_table
    }

    /// Queues `payload` without waiting; a full queue drops it with a warning.
    pub fn send(&self, channel: Channel, payload: Value, metrics: &Metrics) {
        let Some(queue) = &self.queue else {
            debug!(
                channel = channel.name(),
                "no Slack webhook configured; message not sent"
            );
            return;
        };
        if let Err(e) = queue.try_send(Outgoing { channel, payload }) {
            warn!(channel = channel.name(), error = %e, "Slack queue full; message dropped");
            metrics.slack_message(channel.name(), "dropped");
        }
    }
}

async fn deliver(
    mut rx: mpsc::Receiver<Outgoing>,
    client: reqwest::Client,
    config: SlackConfig,
    metrics: std::sync::Arc<Metrics>,
) {
    while let Some(message) = rx.recv().await {
        let url = match message.channel {
            Channel::Error => config
                .error_webhook
                .as_ref()
                .or(config.warning_webhook.as_ref()),
            Channel::Warning => config
                .warning_webhook
                .as_ref()
                .or(config.error_webhook.as_ref()),
        };
        let Some(url) = url else { continue };
        let result = post_with_retries(&client, url, &message.payload).await;
        let channel = message.channel.name();
        match result {
            Ok(()) => metrics.slack_message(channel, "sent"),
            Err(error) => {
                warn!(channel, %error, "Slack message not delivered");
                metrics.slack_message(channel, "failed");
            }
        }
    }
}

/// Posts one message, retried per [`ATTEMPTS`] and [`FIRST_BACKOFF`]. A webhook's URL is its
/// secret: errors name "the webhook".
async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    payload: &Value,
) -> Result<(), Error> {
    let retries = Retries {
        attempts: ATTEMPTS,
        first: FIRST_BACKOFF,
    };
    post_retried(
        client,
        url,
        &[],
        payload,
        retries,
        "sending the Slack message",
        Some("the webhook"),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(notice: Notice) -> PatternAlert {
        let at: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        PatternAlert {
            namespace: "pipeline".into(),
            healing_type: "batch_cleanup".into(),
            notice,
            counts: WindowCounts {
                in_yellow_window: 4,
                in_red_window: 4,
                in_critical_window: 4,
                failed_in_critical_window: 0,
            },
            recent: (0..5)
                .map(|i| RecentAction {
                    at,
                    healing_id: format!("h{i}"),
                    root_cause: "no_progress".into(),
                    trigger_reason: "Stalled at 95.0% for 16 minutes".into(),
                    success: true,
                })
                .collect(),
            circuit_open_until: None,
        }
    }

    fn text(payload: &Value) -> &str {
        payload["blocks"][0]["text"]["text"].as_str().unwrap()
    }

    #[test]
    fn a_yellow_alert_has_the_originals_parts_and_goes_to_the_warning_channel() {
        let (channel, payload) = pattern_message(
            &alert(Notice::Alert(AlertLevel::Yellow)),
            "p.nba_orchestration.healing_events",
        );
        assert_eq!(channel, Channel::Warning);
        let text = text(&payload);
        assert!(text.contains("Healing Pattern Alert: batch_cleanup"));
        assert!(text.contains("*Level:* YELLOW (4 batch_cleanup actions in the yellow window)"));
        // Up to three recent events, with their root causes.
        assert_eq!(text.matches("root cause `no_progress`").count(), 3);
        assert!(text.contains("*Action required:*"));
        assert!(text.contains("FROM `p.nba_orchestration.healing_events`"));
        assert!(text.contains("WHERE healing_type = 'batch_cleanup'"));
    }

    #[test]
    fn critical_goes_to_the_error_channel_and_names_the_open_circuit() {
        let mut a = alert(Notice::Alert(AlertLevel::Critical));
        a.circuit_open_until = Some("2026-11-25T12:30:00Z".parse().unwrap());
        let (channel, payload) = pattern_message(&a, "t");
        assert_eq!(channel, Channel::Error);
        assert!(text(&payload).contains("skipped until 2026-11-25 12:30 UTC"));
    }

    #[test]
    fn a_phase_heal_has_the_originals_fields() {
        let missing = ["PlayerDailyCache".to_owned(), "MLFeatureStore".to_owned()];
        let (channel, payload) =
            phase_heal_message("phase4", "2026-11-24", true, "3f2a9c1e-77", &missing);
        assert_eq!(channel, Channel::Warning);
        assert_eq!(payload["text"], ":wrench: Self-Heal Triggered: phase4");
        let text = text(&payload);
        for line in [
            "*Date:* 2026-11-24",
            "*Healing triggered:* yes",
            "*Correlation ID:* 3f2a9c1e-77",
            "*Missing components:* PlayerDailyCache, MLFeatureStore",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_resolution_says_what_it_was_and_asks_nothing() {
        let (channel, payload) = pattern_message(
            &alert(Notice::Resolved {
                was: AlertLevel::Red,
            }),
            "t",
        );
        assert_eq!(channel, Channel::Warning);
        let text = text(&payload);
        assert!(text.contains("Resolved") && text.contains("was RED"));
        assert!(!text.contains("Action required"));
    }
}
