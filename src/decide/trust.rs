//! Trust boundaries: what a PhaseRun may make the controller do with its own identity.
//!
//! A PhaseRun is written by a namespace user or a GitOps commit; the controller holds a
//! Google service account and cluster RBAC. So the URLs it POSTs to (with an ID token), the
//! audiences it mints tokens for, the pod templates it turns into Jobs and the projects whose
//! tables it queries are checked here against the operator's flags (chart values), never
//! against a namespaced resource. Pure: the reconciler asks before it acts, and a refusal
//! names what was refused and which flag would allow it.

use k8s_openapi::api::batch::v1::JobSpec;
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
    /// `--job-allowed-secret`: Secrets a Job trigger may mount or read into its environment.
    pub job_secrets: Vec<String>,
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

/// Why a `--trigger-allowed-url-prefix` is not a prefix (shown by the command line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPrefix(String);

impl UrlPrefix {
    /// A prefix as an operator writes it: `https://phase4-abc.a.run.app/` (scheme and host,
    /// optionally a port and a path; no user, query or fragment).
    pub fn parse(text: &str) -> Result<Self, BadPrefix> {
        let bad = |why: String| BadPrefix(format!("{text:?} {why}"));
        let url = url::Url::parse(text).map_err(|e| bad(format!("is not a URL: {e}")))?;
        let normal = Normal::of(&url).map_err(|why| bad(why.to_owned()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("has a query or fragment; a prefix cannot".into()));
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
        // Encoded separators and dots, `;` parameters and empty segments survive the parser
        // but many proxies and servers resolve them, so a path could leave its prefix there.
        let path = url.path().to_ascii_lowercase();
        if ["%2f", "%5c", "%2e", ";", "//"]
            .iter()
            .any(|s| path.contains(s))
        {
            return Err("has an encoded separator, a dot, `;` or `//` in its path");
        }
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
    #[error("the trigger URL {origin} is not https: an ID token is sent over https only")]
    TokenInClear { origin: String },
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
            // An ID token crosses the network in clear only to this machine.
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if parsed.scheme() != "https" && !loopback {
                return Err(Refusal::TokenInClear { origin });
            }
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

    /// Checks the spec of a Job built from a trigger's template: the identity it runs as and
    /// the host access it asks for. Every violation is named.
    pub fn check_job(&self, job: &JobSpec) -> Result<(), Refusal> {
        let mut violations = job
            .template
            .spec
            .as_ref()
            .map(|pod| self.pod_violations(pod))
            .unwrap_or_default();
        if job.manual_selector == Some(true) {
            // A hand-written selector can adopt Pods the Job did not create.
            violations.push("manualSelector is not allowed".into());
        }
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
        if pod.node_name.is_some() {
            violations
                .push("nodeName is not allowed (it bypasses the scheduler and taints)".into());
        }
        if let Some(security) = &pod.security_context {
            if security.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
                violations.push("sysctls are not allowed".into());
            }
            let seccomp = security.seccomp_profile.as_ref().map(|p| p.type_.as_str());
            let apparmor = security
                .app_armor_profile
                .as_ref()
                .map(|p| p.type_.as_str());
            violations.extend(unconfined(seccomp, apparmor).map(|v| format!("the pod: {v}")));
        }
        for volume in pod.volumes.iter().flatten() {
            violations.extend(
                self.volume_violations(volume)
                    .into_iter()
                    .map(|v| format!("volume {:?}: {v}", volume.name)),
            );
        }
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            let mut own = container_violations(container.security_context.as_ref());
            if container
                .ports
                .iter()
                .flatten()
                .any(|p| p.host_port.is_some_and(|port| port != 0))
            {
                own.push("hostPort is not allowed".into());
            }
            let env_secrets = container
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.name.as_str());
            let env_from_secrets = container
                .env_from
                .iter()
                .flatten()
                .filter_map(|e| e.secret_ref.as_ref())
                .map(|r| r.name.as_str());
            own.extend(
                env_secrets
                    .chain(env_from_secrets)
                    .filter_map(|name| self.secret_violation(name)),
            );
            violations.extend(
                own.into_iter()
                    .map(|v| format!("container {:?}: {v}", container.name)),
            );
        }
        for container in pod.ephemeral_containers.iter().flatten() {
            violations.extend(
                container_violations(container.security_context.as_ref())
                    .into_iter()
                    .map(|v| format!("container {:?}: {v}", container.name)),
            );
        }
        violations
    }

    /// A volume may be of the kinds that stay inside the pod's namespace (configMap,
    /// downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected), and a Secret
    /// only when the operator lists it. Anything else (hostPath, nfs, iscsi, csi, ...) is
    /// mounted by the node and refused, including kinds added to Kubernetes later.
    fn volume_violations(&self, volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
        const ALLOWED: [&str; 6] = [
            "configMap",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
        ];
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(volume) else {
            return vec!["cannot be read".into()];
        };
        let mut violations = Vec::new();
        for kind in fields.keys().filter(|k| *k != "name") {
            if kind == "secret" {
                let name = volume
                    .secret
                    .as_ref()
                    .and_then(|s| s.secret_name.as_deref());
                violations.extend(self.secret_violation(name.unwrap_or_default()));
            } else if !ALLOWED.contains(&kind.as_str()) {
                violations.push(format!("{kind} volumes are not allowed"));
            }
        }
        let sources = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for source in sources {
            if let Some(secret) = &source.secret {
                violations.extend(self.secret_violation(&secret.name));
            }
        }
        violations
    }

    /// A Secret a Job may read only when `--job-allowed-secret` names it: whoever writes a
    /// PhaseRun need not be able to read the namespace's Secrets.
    fn secret_violation(&self, name: &str) -> Option<String> {
        (!self.job_secrets.iter().any(|s| s == name))
            .then(|| format!("Secret {name:?} is not listed in --job-allowed-secret"))
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

/// Profiles that switch the kernel's confinement off.
fn unconfined(seccomp: Option<&str>, apparmor: Option<&str>) -> impl Iterator<Item = String> {
    let seccomp =
        (seccomp == Some("Unconfined")).then_some("seccompProfile Unconfined is not allowed");
    let apparmor =
        (apparmor == Some("Unconfined")).then_some("appArmorProfile Unconfined is not allowed");
    seccomp.into_iter().chain(apparmor).map(str::to_owned)
}

/// What one container's security context asks for that a healing Job may not have.
fn container_violations(security: Option<&SecurityContext>) -> Vec<String> {
    let Some(s) = security else {
        return Vec::new();
    };
    let mut violations: Vec<String> = unconfined(
        s.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        s.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
    )
    .collect();
    if s.privileged == Some(true) {
        violations.push("privileged is not allowed".into());
    }
    if s.allow_privilege_escalation == Some(true) {
        violations.push("allowPrivilegeEscalation: true is not allowed".into());
    }
    if s.proc_mount.as_deref() == Some("Unmasked") {
        violations.push("procMount Unmasked is not allowed".into());
    }
    if s.capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| !add.is_empty())
    {
        violations.push("added capabilities are not allowed".into());
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

    fn template(pod: serde_json::Value) -> JobSpec {
        serde_json::from_value(serde_json::json!({"template": {"spec": pod}})).unwrap()
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
    fn secrets_node_mounted_volumes_and_scheduler_bypasses_are_refused() {
        let t = Trust {
            job_secrets: vec!["scraper-api-key".into()],
            ..Default::default()
        };
        let allowed = template(serde_json::json!({
            "volumes": [
                {"name": "key", "secret": {"secretName": "scraper-api-key"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            ],
            "containers": [{"name": "run", "image": "r",
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "scraper-api-key", "key": "k"}}}]}],
        }));
        assert_eq!(t.check_job(&allowed), Ok(()));
        let hostile = template(serde_json::json!({
            "nodeName": "system-node-1",
            "securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}],
                                "seccompProfile": {"type": "Unconfined"}},
            "volumes": [
                {"name": "other", "secret": {"secretName": "db-password"}},
                {"name": "share", "nfs": {"server": "10.0.0.2", "path": "/"}},
                {"name": "mixed", "projected": {"sources": [{"secret": {"name": "gcp-key"}}]}},
            ],
            "containers": [{"name": "run", "image": "r",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {"procMount": "Unmasked"},
                "envFrom": [{"secretRef": {"name": "db-password"}}]}],
        }));
        let Err(Refusal::JobNotAllowed(violations)) = t.check_job(&hostile) else {
            panic!("the hostile template passed");
        };
        let all = violations.join("\n");
        for expected in [
            "nodeName",
            "the pod: seccompProfile Unconfined",
            "sysctls",
            "volume \"other\": Secret \"db-password\" is not listed in --job-allowed-secret",
            "volume \"share\": nfs volumes are not allowed",
            "volume \"mixed\": Secret \"gcp-key\"",
            "container \"run\": hostPort",
            "container \"run\": procMount Unmasked",
            "container \"run\": Secret \"db-password\"",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert_eq!(violations.len(), 9, "{all}");
        let adopting: JobSpec = serde_json::from_value(serde_json::json!({
            "manualSelector": true, "template": {"spec": {"containers": []}}
        }))
        .unwrap();
        assert!(t.check_job(&adopting).is_err());
    }

    #[test]
    fn a_token_goes_over_https_only_and_paths_cannot_hide_a_separator() {
        let t = trust(&[
            "http://internal.example/",
            "http://127.0.0.1:9000/",
            "https://gw.example/a/",
        ]);
        assert!(matches!(
            t.check_http(
                "http://internal.example/run",
                Some("http://internal.example")
            ),
            Err(Refusal::TokenInClear { .. })
        ));
        assert!(t.check_http("http://internal.example/run", None).is_ok());
        assert!(
            t.check_http("http://127.0.0.1:9000/run", Some("http://127.0.0.1:9000"))
                .is_ok()
        );
        for hidden in [
            "https://gw.example/a/..%2fb/x",
            "https://gw.example/a/..%2Fb",
            "https://gw.example/a/..%5cb",
            "https://gw.example/a/..;/b",
            "https://gw.example/a//b",
            "https://gw.example/a/%2e%2e/b",
        ] {
            assert!(t.check_http(hidden, None).is_err(), "{hidden} passed");
        }
        assert!(t.check_http("https://gw.example/a/run?x=1;2", None).is_ok());
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
