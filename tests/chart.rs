//! The Helm chart: lint and render for several values sets, its CRDs identical to crds/,
//! `helm install` on the real API server, the controller running with only the chart's
//! RBAC (a ServiceAccount token), and GitOps: no drift after the controller has run, and an
//! invalid HealingPolicy refused at apply time.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::LazyLock;

use jiff::Timestamp;
use pipeline_healer::api::PredictionBatch;
use pipeline_healer::api::batch::BatchState;
use serde_json::Value;
use support::status_batch::batch;
use support::{ControllerProcess, TestNamespace, cluster, eventually, namespace, project_root};

const CHART: &str = "charts/pipeline-healer";
const KUBE_VERSION: &str = "1.36.3";

/// helm, built once by the project's script.
static HELM: LazyLock<PathBuf> = LazyLock::new(|| support::tool("helm"));

fn helm(args: &[&str]) -> Output {
    Command::new(&*HELM)
        .args(args)
        .current_dir(project_root())
        .env("KUBECONFIG", &cluster().kubeconfig)
        .output()
        .expect("run helm")
}

fn yaml_file(yaml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    file
}

/// `helm ARGS -f <values>`.
fn helm_with_values(args: &[&str], values: &str) -> Output {
    let file = yaml_file(values);
    let mut args = args.to_vec();
    args.extend(["-f", file.path().to_str().unwrap()]);
    helm(&args)
}

/// `helm template` of the chart with `values`, as installed in namespace `pipeline`.
fn template(values: &str) -> Output {
    helm_with_values(
        &[
            "template",
            "t",
            CHART,
            "-n",
            "pipeline",
            "--kube-version",
            KUBE_VERSION,
        ],
        values,
    )
}

/// The rendered objects for `values` (YAML), each as JSON.
fn render(values: &str) -> Vec<Value> {
    let out = template(values);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

const FULL: &str = r#"
watchNamespace: pipeline
replicas: 3
serviceAccount: {gcpServiceAccount: pipeline-healer@my-project.iam.gserviceaccount.com}
slack: {existingSecret: slack-webhooks}
metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}}
grafanaDashboard: {enabled: true}
digest: {enabled: true, source: cluster}
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
healingPolicy: {spec: {minCompletionPercent: 85}}
phaseRuns:
  enabled: true
  allowedTriggerUrlPrefixes: [https://phase4-abc-uw.a.run.app/, https://phase3-abc-uw.a.run.app/]
  allowedJobServiceAccounts: [scraper]
  allowedTableProjects: [nba-raw-data]
  templates:
    - name: phase2
      dateOffsetDays: -1
      spec: {phase: phase2, processors: [{name: a, table: d.a, dateColumn: game_date}]}
    - name: phase4
      dateOffsetDays: 0
      spec: {phase: phase4, processors: [{name: b, table: d.b, dateColumn: game_date}]}
"#;

#[test]
fn lint_passes_strictly_for_the_default_and_a_full_values_set() {
    for values in ["{}", FULL] {
        let out = helm_with_values(&["lint", "--strict", CHART], values);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_default_render_is_a_hardened_two_replica_deployment_with_cluster_rbac() {
    let objects = render("{}");
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "HealingPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        container["image"],
        "us-west2-docker.pkg.dev/my-project/pipeline-healer/pipeline-healer:0.1.0"
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"PIPELINE_HEALER_LEADER_ELECT"));
    assert!(!env.contains(&"SLACK_WEBHOOK_URL"), "no Secret configured");
    // The policy takes the schema's defaults: an empty spec.
    assert_eq!(
        one(&objects, "HealingPolicy")["spec"],
        serde_json::json!({})
    );
}

#[test]
fn a_full_values_set_scopes_rbac_and_adds_monitoring_slack_and_daily_phase_runs() {
    let objects = render(FULL);
    let kinds = kinds(&objects);
    for kind in ["ServiceMonitor", "PrometheusRule", "CronJob", "ConfigMap"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|k| k == "ClusterRole"),
        "scoped to one namespace"
    );
    let deployment = one(&objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["image"]
            .as_str()
            .unwrap()
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    let slack = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SLACK_WEBHOOK_URL_ERROR")
        .expect("Slack from the Secret");
    assert_eq!(slack["valueFrom"]["secretKeyRef"]["name"], "slack-webhooks");
    // The allowlists reach the controller as its flags' variables; unset ones are absent.
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env("PIPELINE_HEALER_TRIGGER_ALLOWED_URL_PREFIXES"),
        Some("https://phase4-abc-uw.a.run.app/,https://phase3-abc-uw.a.run.app/".into())
    );
    assert_eq!(
        env("PIPELINE_HEALER_JOB_ALLOWED_SERVICE_ACCOUNTS"),
        Some("scraper".into())
    );
    assert_eq!(
        env("PIPELINE_HEALER_PHASE_ALLOWED_PROJECTS"),
        Some("nba-raw-data".into())
    );
    assert_eq!(env("PIPELINE_HEALER_TRIGGER_ALLOWED_AUDIENCES"), None);
    let sa = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "t-pipeline-healer")
        .expect("the controller's ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "pipeline-healer@my-project.iam.gserviceaccount.com"
    );
    let cronjobs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "CronJob").collect();
    // The two phases' and the digest's.
    assert_eq!(cronjobs.len(), 3);
    let phase2 = cronjobs
        .iter()
        .find(|c| c["metadata"]["name"].as_str().unwrap().ends_with("phase2"))
        .unwrap();
    assert_eq!(phase2["spec"]["timeZone"], "America/New_York");
    assert_eq!(phase2["spec"]["schedule"], "45 12 * * *");
    let args = &phase2["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "create-phaserun");
    assert!(args.as_array().unwrap().iter().any(|a| a == "-1"));
    assert_eq!(
        one(&objects, "HealingPolicy")["spec"]["minCompletionPercent"],
        85
    );
    assert_eq!(
        one(&objects, "HealingPolicy")["metadata"]["namespace"],
        "pipeline"
    );
}

#[test]
fn the_weekly_digest_is_a_cronjob_posting_to_the_slack_secrets_webhook() {
    let objects = render(
        "slack: {existingSecret: slack-webhooks}\n\
         google: {bigqueryProject: my-project}\n\
         digest: {enabled: true}\n",
    );
    let digest = one(&objects, "CronJob");
    assert!(
        digest["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-digest")
    );
    assert_eq!(digest["spec"]["schedule"], "0 9 * * 1");
    let pod = &digest["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "analyze", "--since", "7d", "--source", "bigquery", "--slack"
        ]
    );
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in the digest's environment"))
    };
    assert_eq!(
        env("PIPELINE_HEALER_BIGQUERY_PROJECT")["value"],
        "my-project"
    );
    let webhook = env("SLACK_WEBHOOK_URL");
    assert_eq!(
        webhook["valueFrom"]["secretKeyRef"]["name"],
        "slack-webhooks"
    );
    assert_eq!(
        webhook["valueFrom"]["secretKeyRef"]["key"],
        "SLACK_WEBHOOK_URL"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // An identity of its own, not the controller's: from BigQuery it needs no RBAC at all.
    let account = pod["serviceAccountName"].as_str().unwrap();
    assert!(account.ends_with("-digest"), "{account}");
    let accounts: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceAccount")
        .collect();
    assert_eq!(accounts.len(), 2);
    assert!(!objects.iter().any(|o| {
        o["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))
            && o["subjects"][0]["name"] == account
    }));

    // From the cluster's HealingEvents, scoped like the controller.
    let objects = render(
        "slack: {existingSecret: s}\nwatchNamespace: pipeline\n\
         digest: {enabled: true, source: cluster, since: 14d}\n",
    );
    let args =
        one(&objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .clone();
    assert_eq!(
        args,
        serde_json::json!([
            "analyze",
            "--since",
            "14d",
            "--source",
            "cluster",
            "--slack",
            "--namespace",
            "pipeline"
        ])
    );
    // From the cluster it may read events and batches in the watched namespace, only.
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "Role" && o["metadata"]["name"].as_str().unwrap().ends_with("-digest")
        })
        .expect("the digest's Role");
    assert_eq!(role["metadata"]["namespace"], "pipeline");
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], serde_json::json!(["get", "list"]), "{rule}");
    }

    // What it cannot do is refused with the value to set.
    for (values, says) in [
        ("digest: {enabled: true}", "slack.existingSecret"),
        (
            "slack: {existingSecret: s}\ndigest: {enabled: true}",
            "google.bigqueryProject",
        ),
        ("digest: {since: 7x}", "/digest/since"),
        ("digest: {source: firestore}", "/digest/source"),
    ] {
        let out = template(values);
        assert!(!out.status.success(), "{values} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{values}: {stderr}");
    }
}

#[test]
fn the_schema_refuses_bad_values_with_the_field_named() {
    for (values, field) in [
        ("replicas: 0", "/replicas"),
        ("image: {digest: latest}", "/image/digest"),
        ("logFormat: xml", "/logFormat"),
        ("metrics: {port: 80}", "/metrics/port"),
        (
            "serviceAccount: {gcpServiceAccount: not-an-email}",
            "/serviceAccount/gcpServiceAccount",
        ),
        ("mirrorNamespace: Not_A_Namespace", "/mirrorNamespace"),
        (
            "phaseRuns: {allowedTriggerUrlPrefixes: ['https://good.run.app@evil/']}",
            "/phaseRuns/allowedTriggerUrlPrefixes/0",
        ),
        ("replicaz: 2", "replicaz"),
    ] {
        let out = template(values);
        assert!(!out.status.success(), "{values} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{values}: {stderr}");
    }
}

/// The rules of the chart's main Role or ClusterRole (not the leader election's).
fn main_rules(objects: &[Value]) -> Vec<Value> {
    let role = objects
        .iter()
        .find(|o| {
            (o["kind"] == "Role" || o["kind"] == "ClusterRole")
                && o["metadata"]["name"] == "t-pipeline-healer"
        })
        .expect("the chart's Role or ClusterRole");
    role["rules"].as_array().unwrap().clone()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_rbac_reads_only_the_health_configmap_and_grants_no_secrets_or_pods() {
    // Cluster-wide (the default) and scoped to one namespace grant the same rules.
    for values in ["{}", "watchNamespace: jobs"] {
        let objects = render(values);
        let configmap_rules: Vec<Value> = main_rules(&objects)
            .into_iter()
            .filter(|r| strings(&r["resources"]).contains(&"configmaps"))
            .collect();
        assert_eq!(configmap_rules.len(), 2, "{values}: {configmap_rules:?}");
        for rule in &configmap_rules {
            let verbs = strings(&rule["verbs"]);
            if verbs == ["create"] {
                // RBAC cannot restrict create by name: a create rule with resourceNames
                // would never match.
                assert!(rule.get("resourceNames").is_none(), "{values}: {rule}");
            } else {
                assert_eq!(
                    strings(&rule["resourceNames"]),
                    ["pipeline-healer-health"],
                    "{values}: {rule}"
                );
                assert!(!verbs.contains(&"create"), "{values}: {rule}");
                for verb in ["get", "list", "watch", "update", "patch"] {
                    assert!(verbs.contains(&verb), "{values}: {verb} in {rule}");
                }
            }
        }
        assert!(
            configmap_rules
                .iter()
                .any(|r| strings(&r["verbs"]) == ["create"]),
            "{values}: the health ConfigMap can be created"
        );
        // No rule of any Role or ClusterRole reaches Secrets or Pods, or everything.
        for role in objects
            .iter()
            .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        {
            for rule in role["rules"].as_array().unwrap() {
                let resources = strings(&rule["resources"]);
                for refused in ["secrets", "pods", "*"] {
                    assert!(!resources.contains(&refused), "{values}: {rule}");
                }
                assert!(!strings(&rule["verbs"]).contains(&"*"), "{values}: {rule}");
                assert!(
                    !strings(&rule["apiGroups"]).contains(&"*"),
                    "{values}: {rule}"
                );
            }
        }
    }
}

#[test]
fn with_a_watch_namespace_every_grant_is_in_it_and_leader_election_in_the_release_namespace() {
    // Installed in `pipeline`, watching `jobs`: the two differ, so a grant in the wrong one
    // shows.
    let objects = render("watchNamespace: jobs");
    let kinds = kinds(&objects);
    assert!(
        !kinds
            .iter()
            .any(|k| k == "ClusterRole" || k == "ClusterRoleBinding"),
        "nothing cluster-wide: {kinds:?}"
    );
    let rbac: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "RoleBinding")
        .collect();
    assert_eq!(
        rbac.len(),
        4,
        "the main and leader-election Role and binding"
    );
    for object in rbac {
        let name = object["metadata"]["name"].as_str().unwrap();
        let expected = if name.ends_with("-leader-election") {
            "pipeline"
        } else {
            "jobs"
        };
        assert_eq!(
            object["metadata"]["namespace"], expected,
            "{} {name}",
            object["kind"]
        );
    }
    // Jobs (the PhaseRun triggers) are among the grants in `jobs`, not cluster-wide.
    assert!(
        main_rules(&objects)
            .iter()
            .any(|r| strings(&r["resources"]).contains(&"jobs"))
    );
}

/// The value of the controller container's environment variable `name`.
fn env_value(objects: &[Value], name: &str) -> Option<String> {
    let deployment = one(objects, "Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

#[test]
fn the_mirror_namespace_follows_watch_namespace_and_a_different_one_is_refused() {
    for (values, mirror) in [
        // Cluster-wide: the release namespace.
        ("{}", "pipeline"),
        // Scoped: where the Role is, not the release namespace.
        ("watchNamespace: jobs", "jobs"),
        ("{watchNamespace: jobs, mirrorNamespace: jobs}", "jobs"),
        // Cluster-wide RBAC writes anywhere.
        ("mirrorNamespace: other", "other"),
    ] {
        let objects = render(values);
        assert_eq!(
            env_value(&objects, "PIPELINE_HEALER_MIRROR_NAMESPACE").as_deref(),
            Some(mirror),
            "{values}"
        );
    }
    assert_eq!(
        env_value(&render("watchNamespace: jobs"), "PIPELINE_HEALER_NAMESPACE").as_deref(),
        Some("jobs")
    );
    // Scoped to `jobs`, the controller could not write batches into `other`: refused at
    // render time rather than failing on every mirrored batch.
    let out = template("{watchNamespace: jobs, mirrorNamespace: other}");
    assert!(
        !out.status.success(),
        "a mirror outside watchNamespace was accepted"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mirrorNamespace") && stderr.contains("watchNamespace"),
        "{stderr}"
    );
}

#[test]
fn every_rbac_rule_says_why() {
    let read = |file: &str| {
        std::fs::read_to_string(project_root().join(CHART).join("templates").join(file)).unwrap()
    };
    let rbac = read("rbac.yaml") + &read("digest.yaml");
    let lines: Vec<&str> = rbac.lines().collect();
    let rules: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- apiGroups:"))
        .map(|(i, _)| i)
        .collect();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for i in rules {
        assert!(
            lines[i - 1].trim_start().starts_with('#'),
            "no comment above: {}",
            lines[i]
        );
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let root = project_root();
    let mut generated: Vec<_> = std::fs::read_dir(root.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    generated.sort();
    let mut in_chart: Vec<_> = std::fs::read_dir(root.join(CHART).join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    in_chart.sort();
    assert_eq!(generated, in_chart);
    for name in generated {
        let a = std::fs::read(root.join("crds").join(&name)).unwrap();
        let b = std::fs::read(root.join(CHART).join("crds").join(&name)).unwrap();
        assert!(a == b, "{name:?} differs: run `make crds`");
    }
}

/// `kubectl` output, asserting success.
fn kubectl(args: &[&str]) -> String {
    let out = cluster().kubectl().args(args).output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A kubeconfig that authenticates as `service_account` with a TokenRequest token.
fn kubeconfig_for(ns: &str, service_account: &str) -> tempfile::NamedTempFile {
    let token = kubectl(&[
        "-n",
        ns,
        "create",
        "token",
        service_account,
        "--duration",
        "1h",
    ]);
    let admin: Value = serde_yaml::from_str(&kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "yaml",
    ]))
    .unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": ns}}],
        "current-context": "sa",
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml::to_string(&config).unwrap()).unwrap();
    file
}

/// `helm install` into the test's namespace; `watch_namespace` None: the cluster-wide RBAC.
fn install(ns: &TestNamespace, release: &str, watch_namespace: Option<&str>) {
    let mut args = vec![
        "install".to_owned(),
        release.to_owned(),
        CHART.to_owned(),
        "-n".to_owned(),
        ns.name.clone(),
        "--set".to_owned(),
        "healingPolicy.spec.stallAfter=2s".to_owned(),
    ];
    if let Some(watch) = watch_namespace {
        args.extend(["--set".to_owned(), format!("watchNamespace={watch}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = helm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A release that is uninstalled when dropped, so a failing test leaves none behind: a
/// cluster-wide install's ClusterRole and ClusterRoleBinding would outlive its namespace.
struct Release {
    name: String,
    namespace: String,
    uninstalled: bool,
}

impl Release {
    /// `helm uninstall`, asserting it worked.
    fn uninstall(mut self) {
        self.uninstalled = true;
        let out = helm(&["uninstall", &self.name, "-n", &self.namespace, "--wait"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = helm(&["uninstall", &self.name, "-n", &self.namespace]);
        }
    }
}

/// `kubectl ARGS` as the ServiceAccount of `kubeconfig` (from [`kubeconfig_for`]).
fn as_service_account(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl")
}

fn assert_forbidden(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("forbidden"),
        "the ServiceAccount could {what}: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What the chart's RBAC never grants, checked as its ServiceAccount in `namespace`: reading
/// a Secret or a ConfigMap other than the health one (by name or in a list), and creating a
/// Pod. The Secret and ConfigMap exist (applied as admin first), so the refusal is RBAC's and
/// not a NotFound.
fn assert_refused_beyond_the_charts_rbac(kubeconfig: &str, namespace: &str) {
    let objects = yaml_file(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other-config}\ndata: {k: v}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: other-secret}\nstringData: {k: v}\n",
    );
    kubectl(&[
        "-n",
        namespace,
        "apply",
        "-f",
        objects.path().to_str().unwrap(),
    ]);
    let refused: [(&str, &[&str]); 5] = [
        ("read a Secret", &["get", "secret", "other-secret"]),
        ("list Secrets", &["get", "secrets"]),
        (
            "read an unrelated ConfigMap",
            &["get", "configmap", "other-config"],
        ),
        ("list ConfigMaps", &["get", "configmaps"]),
        (
            "create a Pod",
            &[
                "run",
                "other-pod",
                "--image=registry.k8s.io/pause:3.10",
                "--restart=Never",
            ],
        ),
    ];
    for (what, args) in refused {
        let mut full = vec!["-n", namespace];
        full.extend(args);
        assert_forbidden(
            &as_service_account(kubeconfig, &full),
            &format!("{what} in {namespace}"),
        );
    }
}

/// The one ConfigMap the controller keeps is listable by name (the field selector its watch
/// sends) where the chart's RBAC applies; `granted` false: refused there.
fn assert_health_configmap_listable(kubeconfig: &str, namespace: &str, granted: bool) {
    let out = as_service_account(
        kubeconfig,
        &[
            "-n",
            namespace,
            "get",
            "configmaps",
            "--field-selector",
            "metadata.name=pipeline-healer-health",
        ],
    );
    if granted {
        assert!(
            out.status.success(),
            "listing pipeline-healer-health in {namespace}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert_forbidden(&out, &format!("list pipeline-healer-health in {namespace}"));
    }
}

/// Runs the controller as the chart's ServiceAccount `service_account` (a TokenRequest
/// token, nothing but the chart's RBAC) and shows a stalled batch healed: watch, intent,
/// action, outcome, Event, health state. The controller and its kubeconfig live as long as
/// the returned values.
async fn heals_as_the_charts_service_account(
    ns: &TestNamespace,
    service_account: &str,
    instance: &str,
) -> (ControllerProcess, tempfile::NamedTempFile) {
    let kubeconfig = kubeconfig_for(&ns.name, service_account);
    let kubeconfig_path = kubeconfig.path().to_str().unwrap().to_owned();
    let controller = ControllerProcess::start_with(
        &ns.name,
        instance,
        &["--leader-elect", "--leader-election-namespace", &ns.name],
        &[("KUBECONFIG", kubeconfig_path.as_str())],
    );
    batch(
        ns,
        "b1",
        Timestamp::now() - jiff::SignedDuration::from_mins(20),
    )
    .await;
    let batches = ns.api::<PredictionBatch>();
    eventually(60, "b1 healed by the chart's ServiceAccount", || async {
        let pb = batches.get("b1").await.ok()?;
        (pb.status?.state == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
    (controller, kubeconfig)
}

#[tokio::test]
async fn installed_the_controller_heals_with_only_the_charts_rbac_and_leaves_no_drift() {
    let ns = namespace("chart").await;
    let release = format!("r{}", &ns.name[ns.name.len() - 6..]);
    install(&ns, &release, Some(&ns.name));
    let fullname = format!("{release}-pipeline-healer");
    // Every object the chart renders exists.
    for (kind, name) in [
        ("deployment", fullname.as_str()),
        ("serviceaccount", fullname.as_str()),
        ("role", fullname.as_str()),
        ("rolebinding", fullname.as_str()),
        ("role", &format!("{fullname}-leader-election")),
        ("service", &format!("{fullname}-metrics")),
        ("networkpolicy", fullname.as_str()),
        ("poddisruptionbudget", fullname.as_str()),
        ("healingpolicy", "default"),
    ] {
        kubectl(&["-n", &ns.name, "get", kind, name, "-o", "name"]);
    }

    // The controller as the chart's ServiceAccount, with nothing but the chart's RBAC.
    let (_controller, kubeconfig) =
        heals_as_the_charts_service_account(&ns, &fullname, "chart").await;
    let kubeconfig_path = kubeconfig.path().to_str().unwrap().to_owned();
    let lease = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "lease",
        "pipeline-healer",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, "chart");

    // Outside the chart's RBAC: refused. Secrets, other ConfigMaps and Pods in the watched
    // namespace; a policy's spec (GitOps'); anything at all in another namespace.
    let as_sa = |args: &[&str]| as_service_account(&kubeconfig_path, args);
    assert_refused_beyond_the_charts_rbac(&kubeconfig_path, &ns.name);
    assert_health_configmap_listable(&kubeconfig_path, &ns.name, true);
    let denied = as_sa(&["-n", &ns.name, "delete", "healingpolicy", "default"]);
    assert_forbidden(&denied, "delete a HealingPolicy");
    let other_ns = as_sa(&["-n", "default", "get", "predictionbatches"]);
    assert_forbidden(&other_ns, "list PredictionBatches in default");
    assert_health_configmap_listable(&kubeconfig_path, "default", false);

    // GitOps: the controller never writes a spec, so server-side diffs show nothing.
    let root = project_root();
    let examples = ["predictionbatch-status.yaml", "phaserun-phase4.yaml"];
    for example in examples {
        let path = root.join("examples").join(example);
        kubectl(&[
            "-n",
            &ns.name,
            "apply",
            "--server-side",
            "--field-manager",
            "gitops",
            "-f",
            path.to_str().unwrap(),
        ]);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for example in examples {
        let path = root.join("examples").join(example);
        let out = cluster()
            .kubectl()
            .args([
                "-n",
                &ns.name,
                "diff",
                "--server-side",
                "--field-manager",
                "gitops",
                "-f",
                path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example} drifted:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The chart's policy, as the chart renders it, has no drift either.
    let rendered = helm(&["get", "manifest", &release, "-n", &ns.name]);
    let manifest = String::from_utf8(rendered.stdout).unwrap();
    let policy_doc = manifest
        .split("\n---")
        .find(|d| d.contains("kind: HealingPolicy"))
        .expect("the policy in the manifest");
    let policy_file = yaml_file(policy_doc);
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "diff",
            "--server-side",
            "--field-manager",
            "helm",
            "--force-conflicts",
            "-f",
            policy_file.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the chart's policy drifted:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // An invalid policy in a GitOps commit is refused at apply time, naming the field.
    let bad = yaml_file(
        "apiVersion: healing.pipeline.dev/v1alpha1\nkind: HealingPolicy\nmetadata: {name: bad}\nspec: {minCompletionPercent: 150}\n",
    );
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "apply",
            "--server-side",
            "-f",
            bad.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.minCompletionPercent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn installed_cluster_wide_it_heals_and_is_refused_secrets_configmaps_and_pods() {
    let ns = namespace("chart-cluster").await;
    // ClusterRole names are cluster-wide: the release name comes from the namespace's, which
    // is unique per run.
    let release_name = format!("c{}", &ns.name[ns.name.len() - 6..]);
    install(&ns, &release_name, None);
    let release = Release {
        name: release_name.clone(),
        namespace: ns.name.clone(),
        uninstalled: false,
    };
    let fullname = format!("{release_name}-pipeline-healer");
    for kind in ["clusterrole", "clusterrolebinding"] {
        kubectl(&["get", kind, &fullname, "-o", "name"]);
    }
    kubectl(&[
        "-n",
        &ns.name,
        "get",
        "role",
        &format!("{fullname}-leader-election"),
        "-o",
        "name",
    ]);

    // The controller as the chart's ServiceAccount. It watches only this test's namespace
    // (`--namespace`, as every ControllerProcess does): the tests of this binary share one
    // API server and run in parallel, and a controller watching all namespaces would act on
    // the other tests' batches too. Its RBAC is still the cluster-wide one; what it is
    // refused, below, is what this test is about.
    let (controller, kubeconfig) =
        heals_as_the_charts_service_account(&ns, &fullname, "chart-cluster").await;
    let kubeconfig_path = kubeconfig.path().to_str().unwrap().to_owned();

    // Cluster-wide: its own kinds and the health ConfigMap in any namespace...
    let other_ns = as_service_account(
        &kubeconfig_path,
        &["-n", "default", "get", "predictionbatches"],
    );
    assert!(
        other_ns.status.success(),
        "{}",
        String::from_utf8_lossy(&other_ns.stderr)
    );
    // ...and Secrets, other ConfigMaps and Pods in none.
    for namespace in [ns.name.as_str(), "default"] {
        assert_refused_beyond_the_charts_rbac(&kubeconfig_path, namespace);
        assert_health_configmap_listable(&kubeconfig_path, namespace, true);
    }

    // Uninstalled, nothing cluster-wide is left behind.
    drop(controller);
    release.uninstall();
    for kind in ["clusterrole", "clusterrolebinding"] {
        let left = kubectl(&["get", kind, &fullname, "--ignore-not-found", "-o", "name"]);
        assert_eq!(left.trim(), "", "{kind} {fullname} left after uninstall");
    }
}

#[tokio::test]
async fn the_daily_cronjob_command_creates_the_days_phase_run_once() {
    let ns = namespace("create-pr").await;
    let phase_template = yaml_file(
        "phase: phase2\nprocessors:\n  - {name: nbac_schedule, table: nba_raw.nbac_schedule, dateColumn: game_date_est}\n",
    );
    let create = || {
        Command::new(env!("CARGO_BIN_EXE_pipeline-healer"))
            .args([
                "create-phaserun",
                "--name",
                "phase2",
                "--namespace",
                &ns.name,
            ])
            .args([
                "--date-offset-days",
                "-1",
                "--time-zone",
                "America/New_York",
                "--template",
            ])
            .arg(phase_template.path())
            .env("KUBECONFIG", &cluster().kubeconfig)
            .output()
            .expect("run create-phaserun")
    };
    let yesterday = jiff::Timestamp::now()
        .in_tz("America/New_York")
        .unwrap()
        .date()
        .yesterday()
        .unwrap();
    for _ in 0..2 {
        let out = create();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = ns
        .api::<pipeline_healer::api::phase::PhaseRun>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(
        runs.len(),
        1,
        "a second run leaves the first PhaseRun as it is"
    );
    assert_eq!(
        runs[0].metadata.name.as_deref(),
        Some(format!("phase2-{yesterday}").as_str())
    );
    assert_eq!(runs[0].spec.date.to_string(), yesterday.to_string());
    // A template that sets its own date is refused with exit 2.
    std::fs::write(
        phase_template.path(),
        "date: '2026-01-01'\nphase: p\nprocessors: []\n",
    )
    .unwrap();
    assert_eq!(create().status.code(), Some(2));
}
