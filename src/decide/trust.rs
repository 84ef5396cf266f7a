//! Trust boundaries: what a PhaseRun may make the controller do with its own identity.
//!
//! A PhaseRun is written by a namespace user or a GitOps commit; the controller holds a
//! Google service account and cluster RBAC. So the URLs it POSTs to (with an ID token), the
//! audiences it mints tokens for, the pod templates it turns into Jobs and the projects whose
//! tables it queries are checked here against the operator's flags (chart values), never
//! against a namespaced resource. Pure: the reconciler asks before it acts, and a refusal
//! names what was refused and which flag would allow it.

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};

use crate::api::schema::TableName;

/// The root cause of a refused trigger (URL, audience or Job template).
pub const TRIGGER_NOT_ALLOWED: &str = "trigger_not_allowed";
/// The root cause of a refused table (a project the controller may not query).
pub const TABLE_NOT_ALLOWED: &str = "table_not_allowed";

/// The operator's allowlists, from the controller's flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// `--trigger-allowed-url-prefix`: an http trigger's URL must be under one of these.
    /// Empty: every http trigger is refused.
    pub url_prefixes: Vec<UrlPrefix>,
    /// `--trigger-allowed-audience`: audiences allowed besides the URL's own origin.
    pub audiences: Vec<String>,
    /// `--job-allowed-service-account`: service accounts a Job trigger may run as (besides
    /// the namespace's default, which an empty `serviceAccountName` means).
    pub job_service_accounts: Vec<String>,
    /// `--phase-project`: the project whose tables phases count.
    pub phase_project: Option<String>,
    /// `--phase-allowed-project`: other projects whose tables phases may count.
    pub allowed_projects: Vec<String>,
}

/// One allowed URL prefix, parsed and normalised as a request URL is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPrefix {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl UrlPrefix {
    /// A prefix as an operator writes it: `https://phase4-abc.a.run.app/` (scheme and host,
    /// optionally a port and a path; no user, query or fragment).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let normal = Normal::of(&url).map_err(|why| format!("{text:?} {why}"))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{text:?} has a query or fragment; a prefix cannot"));
        }
        Ok(Self {
            scheme: normal.scheme,
            host: normal.host,
            port: normal.port,
            path: url.path().to_owned(),
        })
    }

    /// Whether `url` (normalised) is under this prefix: same scheme, host and port, and a
    /// path that continues the prefix's at a segment boundary (`/run` allows `/run` and
    /// `/run/x`, not `/running`).
    fn allows(&self, url: &Normal, path: &str) -> bool {
        let path_ok = if self.path.ends_with('/') {
            path.starts_with(&self.path)
        } else {
            path == self.path
                || path
                    .strip_prefix(&self.path)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        self.scheme == url.scheme && self.host == url.host && self.port == url.port && path_ok
    }
}

impl std::fmt::Display for UrlPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}://{}:{port}{}", self.scheme, self.host, self.path),
            None => write!(f, "{}://{}{}", self.scheme, self.host, self.path),
        }
    }
}

/// The parts of a URL an allowlist compares, after the URL parser normalised them (host in
/// lower case and punycode, dot segments resolved, the scheme's default port dropped).
struct Normal {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Normal {
    fn of(url: &url::Url) -> Result<Self, &'static str> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("is not http or https");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("carries a user name or password");
        }
        let host = url.host_str().ok_or("has no host")?;
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: host.to_owned(),
            port: url.port(),
        })
    }
}

/// Why the controller will not act on what a PhaseRun asks. The messages name the origin,
/// never the whole URL: a query string may carry a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the trigger URL is refused: {0}")]
    BadUrl(String),
    #[error(
        "the trigger URL {origin}{path} is not under any --trigger-allowed-url-prefix{}",
        none_configured(.configured)
    )]
    UrlNotAllowed {
        origin: String,
        path: String,
        configured: usize,
    },
    #[error(
        "the audience {audience:?} is neither the trigger URL's origin ({origin}) nor listed in --trigger-allowed-audience"
    )]
    AudienceNotAllowed { audience: String, origin: String },
    #[error("the Job template is refused: {}", .0.join("; "))]
    JobNotAllowed(Vec<String>),
    #[error(
        "the table {table} is in project {project:?}, which is neither --phase-project nor listed in --phase-allowed-project"
    )]
    TableNotAllowed { table: String, project: String },
}

fn none_configured(configured: &usize) -> &'static str {
    if *configured == 0 {
        " (none is configured, so every http trigger is refused)"
    } else {
        ""
    }
}

impl Refusal {
    /// The HealingEvent's root cause for this refusal.
    pub fn root_cause(&self) -> &'static str {
        match self {
            Self::TableNotAllowed { .. } => TABLE_NOT_ALLOWED,
            _ => TRIGGER_NOT_ALLOWED,
        }
    }
}

/// An http trigger as it may be sent: the URL parsed, and the audience to mint a token for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedRequest {
    pub url: url::Url,
    pub audience: Option<String>,
}

impl Trust {
    /// Checks an http trigger's URL (with `{processor}` and `{date}` already substituted)
    /// and audience against the allowlists.
    pub fn check_http(&self, url: &str, audience: Option<&str>) -> Result<AllowedRequest, Refusal> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Refusal::BadUrl(format!("it does not parse ({e})")))?;
        let origin = parsed.origin().ascii_serialization();
        let normal = Normal::of(&parsed).map_err(|why| {
            Refusal::BadUrl(format!(
                "{origin}{} {why}, which no --trigger-allowed-url-prefix allows",
                parsed.path()
            ))
        })?;
        if !self
            .url_prefixes
            .iter()
            .any(|prefix| prefix.allows(&normal, parsed.path()))
        {
            return Err(Refusal::UrlNotAllowed {
                origin,
                path: parsed.path().to_owned(),
                configured: self.url_prefixes.len(),
            });
        }
        if let Some(audience) = audience {
            let own_origin = audience.trim_end_matches('/') == origin;
            if !own_origin && !self.audiences.iter().any(|a| a == audience) {
                return Err(Refusal::AudienceNotAllowed {
                    audience: audience.to_owned(),
                    origin,
                });
            }
        }
        Ok(AllowedRequest {
            url: parsed,
            audience: audience.map(str::to_owned),
        })
    }

    /// Checks a Job trigger's template: the identity it runs as and the host access it asks
    /// for. Every violation is named.
    pub fn check_job(&self, template: &JobTemplateSpec) -> Result<(), Refusal> {
        let Some(pod) = template
            .spec
            .as_ref()
            .and_then(|job| job.template.spec.as_ref())
        else {
            return Ok(());
        };
        let violations = self.pod_violations(pod);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Refusal::JobNotAllowed(violations))
        }
    }

    fn pod_violations(&self, pod: &PodSpec) -> Vec<String> {
        let mut violations = Vec::new();
        #[allow(deprecated)] // `serviceAccount` is deprecated, and the kubelet still honours it
        let accounts = [&pod.service_account_name, &pod.service_account];
        for account in accounts.into_iter().flatten() {
            if !account.is_empty() && !self.job_service_accounts.contains(account) {
                violations.push(format!(
                    "serviceAccountName {account:?} is not listed in --job-allowed-service-account"
                ));
            }
        }
        for (on, field) in [
            (pod.host_network, "hostNetwork"),
            (pod.host_pid, "hostPID"),
            (pod.host_ipc, "hostIPC"),
        ] {
            if on == Some(true) {
                violations.push(format!("{field} is not allowed"));
            }
        }
        for volume in pod.volumes.iter().flatten() {
            if volume.host_path.is_some() {
                violations.push(format!(
                    "volume {:?}: hostPath volumes are not allowed",
                    volume.name
                ));
            }
        }
        let containers = pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
            .map(|c| (c.name.as_str(), c.security_context.as_ref()));
        let ephemeral = pod
            .ephemeral_containers
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.security_context.as_ref()));
        for (name, security) in containers.chain(ephemeral) {
            violations.extend(
                container_violations(security)
                    .into_iter()
                    .map(|v| format!("container {name:?}: {v}")),
            );
        }
        violations
    }

    /// Checks that a table belongs to a project phases may query.
    pub fn check_table(&self, table: &TableName) -> Result<(), Refusal> {
        let parts: Vec<&str> = table.as_str().split('.').collect();
        let [project, _, _] = parts.as_slice() else {
            // dataset.table: the phase project's own.
            return Ok(());
        };
        let allowed = self.phase_project.as_deref() == Some(*project)
            || self.allowed_projects.iter().any(|p| p == project);
        if allowed {
            Ok(())
        } else {
            Err(Refusal::TableNotAllowed {
                table: table.as_str().to_owned(),
                project: (*project).to_owned(),
            })
        }
    }
}

/// What one container's security context asks for that a healing Job may not have.
fn container_violations(security: Option<&SecurityContext>) -> Vec<&'static str> {
    let Some(s) = security else {
        return Vec::new();
    };
    let mut violations = Vec::new();
    if s.privileged == Some(true) {
        violations.push("privileged is not allowed");
    }
    if s.allow_privilege_escalation == Some(true) {
        violations.push("allowPrivilegeEscalation: true is not allowed");
    }
    if s.capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| !add.is_empty())
    {
        violations.push("added capabilities are not allowed");
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(prefixes: &[&str]) -> Trust {
        Trust {
            url_prefixes: prefixes
                .iter()
                .map(|p| UrlPrefix::parse(p).unwrap())
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_pass_only_under_a_prefix_after_normalisation() {
        let t = trust(&["https://good.run.app/", "https://api.example:8443/v1"]);
        for ok in [
            "https://good.run.app/process-date",
            "https://GOOD.run.app/x?date=2026-11-24",
            "https://good.run.app:443/x",
            "https://api.example:8443/v1",
            "https://api.example:8443/v1/run",
        ] {
            assert!(t.check_http(ok, None).is_ok(), "{ok} should pass");
        }
        for bad in [
            "https://good.run.app.evil.example/",
            "https://good.run.app@evil/",
            "https://user:pw@good.run.app/",
            "http://good.run.app/",
            "https://good.run.app:8443/",
            "https://api.example:8443/v10",
            "https://api.example:8443/v1/../admin",
            "https://api.example:8443/v1/%2e%2e/admin",
            "https://api.example/v1",
            "ftp://good.run.app/",
            "not a url",
        ] {
            assert!(t.check_http(bad, None).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn an_empty_allowlist_refuses_every_url_and_says_so() {
        let refusal = Trust::default()
            .check_http("https://good.run.app/?token=s3cret", None)
            .unwrap_err();
        let message = refusal.to_string();
        assert!(message.contains("https://good.run.app"), "{message}");
        assert!(
            message.contains("--trigger-allowed-url-prefix"),
            "{message}"
        );
        assert!(message.contains("none is configured"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(refusal.root_cause(), TRIGGER_NOT_ALLOWED);
    }

    #[test]
    fn audiences_are_the_urls_origin_or_listed() {
        let mut t = trust(&["https://good.run.app/"]);
        let url = "https://good.run.app/run";
        assert!(t.check_http(url, Some("https://good.run.app")).is_ok());
        assert!(t.check_http(url, Some("https://good.run.app/")).is_ok());
        let refused = t.check_http(url, Some("https://bank.example")).unwrap_err();
        assert!(
            refused.to_string().contains("--trigger-allowed-audience"),
            "{refused}"
        );
        t.audiences.push("https://bank.example".into());
        assert!(t.check_http(url, Some("https://bank.example")).is_ok());
    }

    #[test]
    fn prefixes_with_user_or_query_are_not_prefixes() {
        assert!(UrlPrefix::parse("https://u@good.run.app/").is_err());
        assert!(UrlPrefix::parse("https://good.run.app/?a=b").is_err());
        assert!(UrlPrefix::parse("good.run.app").is_err());
        assert_eq!(
            UrlPrefix::parse("https://Good.Run.App:443/x")
                .unwrap()
                .to_string(),
            "https://good.run.app/x"
        );
    }

    fn template(pod: serde_json::Value) -> JobTemplateSpec {
        serde_json::from_value(serde_json::json!({"spec": {"template": {"spec": pod}}})).unwrap()
    }

    #[test]
    fn a_plain_job_passes_and_every_host_or_identity_grab_is_named() {
        let t = Trust {
            job_service_accounts: vec!["phase-runner".into()],
            ..Default::default()
        };
        let plain = template(serde_json::json!({
            "serviceAccountName": "phase-runner",
            "containers": [{"name": "run", "image": "r",
                "securityContext": {"allowPrivilegeEscalation": false}}],
        }));
        assert_eq!(t.check_job(&plain), Ok(()));
        let hostile = template(serde_json::json!({
            "serviceAccountName": "pipeline-healer",
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "initContainers": [{"name": "init", "image": "r",
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
            "containers": [{"name": "run", "image": "r",
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true}}],
        }));
        let Err(Refusal::JobNotAllowed(violations)) = t.check_job(&hostile) else {
            panic!("the hostile template passed");
        };
        let all = violations.join("\n");
        for expected in [
            "serviceAccountName \"pipeline-healer\"",
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "volume \"root\": hostPath",
            "container \"init\": added capabilities",
            "container \"run\": privileged",
            "container \"run\": allowPrivilegeEscalation",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert_eq!(violations.len(), 8, "{all}");
    }

    #[test]
    fn tables_of_other_projects_need_listing() {
        let mut t = Trust {
            phase_project: Some("nba-props".into()),
            ..Default::default()
        };
        let table = |s: &str| s.parse::<TableName>().unwrap();
        assert!(t.check_table(&table("nba_raw.games")).is_ok());
        assert!(t.check_table(&table("nba-props.nba_raw.games")).is_ok());
        let refused = t
            .check_table(&table("billing-prod.ledger.payments"))
            .unwrap_err();
        assert_eq!(refused.root_cause(), TABLE_NOT_ALLOWED);
        assert!(refused.to_string().contains("--phase-allowed-project"));
        t.allowed_projects.push("billing-prod".into());
        assert!(
            t.check_table(&table("billing-prod.ledger.payments"))
                .is_ok()
        );
    }
}
