//! Real components for integration tests: one control plane (and, for tests that ask, one
//! pair of emulators) per test binary, started by the project's own hack/ scripts on first
//! use and torn down by the scripts' watcher when the test binary exits, however it exits.
//! Every test gets a namespace of its own.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod drill;
pub mod events;
pub mod firestore_batch;
pub mod http;
pub mod proxy;
pub mod sinks;
pub mod status_batch;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{LazyLock, Once};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the process-wide TLS provider: kube and the Google clients both pull in rustls
/// with different providers, and rustls refuses to pick one on its own.
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The in-process controllers of a test log as JSON through the test harness's capture, so
/// a failing test shows what its controller did (a passing one shows nothing; each test's
/// controller runs on its own thread). PH_TEST_LOG (a RUST_LOG-style filter) replaces the
/// default of info; run with `--nocapture` to see the logs of passing tests too.
fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("PH_TEST_LOG")
            .unwrap_or_else(|_| "info,firestore=error,kube=warn".to_owned());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .json()
            .flatten_event(true)
            .try_init();
    });
}

/// Runs `hack/<script> up` tied to this process and returns its `export NAME=value` lines.
fn start(script: &str) -> Vec<(String, String)> {
    let out = Command::new("bash")
        .arg(project_root().join("hack").join(script))
        .arg("up")
        .env("PH_OWNER_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running hack/{script}: {e}"));
    assert!(
        out.status.success(),
        "hack/{script} up failed: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var(exports: &[(String, String)], name: &str) -> String {
    exports
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{name} was not printed by the script"))
}

/// This binary's control plane.
pub struct Cluster {
    pub kubeconfig: PathBuf,
}

pub fn cluster() -> &'static Cluster {
    static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| {
        let exports = start("cluster.sh");
        Cluster {
            kubeconfig: PathBuf::from(var(&exports, "KUBECONFIG")),
        }
    });
    &CLUSTER
}

impl Cluster {
    /// A client for the current test's runtime (clients must not outlive the runtime whose
    /// connections they pool, and each `#[tokio::test]` has its own).
    pub async fn client(&self) -> Client {
        init_crypto();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }

    /// Stops this cluster's kube-apiserver (etcd and the rest keep running). Only for a test
    /// binary of its own: every test of the binary shares the cluster.
    pub fn stop_apiserver(&self) {
        self.script("stop-apiserver");
    }

    /// Starts the kube-apiserver again on its port; returns once it is ready.
    pub fn start_apiserver(&self) {
        self.script("start-apiserver");
    }

    /// Freezes this cluster's kube-apiserver (SIGSTOP): it accepts connections and answers
    /// nothing, as a hung server would. Only for a test binary of its own.
    pub fn pause_apiserver(&self) {
        self.script("pause-apiserver");
    }

    /// Lets a paused kube-apiserver run again.
    pub fn resume_apiserver(&self) {
        self.script("resume-apiserver");
    }

    fn script(&self, command: &str) {
        let status = Command::new("bash")
            .arg(project_root().join("hack").join("cluster.sh"))
            .arg(command)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("hack/cluster.sh {command}: {e}"));
        assert!(status.success(), "hack/cluster.sh {command}: {status}");
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }
}

/// Polls `check` until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The controller binary running against this binary's cluster and emulators; killed when
/// dropped, so a failing test leaves none behind.
pub struct ControllerProcess(pub std::process::Child);

impl ControllerProcess {
    /// `pipeline-healer run` watching `namespace`, mirroring `collection` into it.
    pub fn start(namespace: &str, collection: &str, instance: &str) -> Self {
        Self::start_with(
            namespace,
            instance,
            &["--batch-collection", collection],
            &[],
        )
    }

    /// `pipeline-healer run` watching `namespace` with more `args`; `env` overrides the
    /// defaults (this binary's emulators), e.g. to reach one through a proxy.
    pub fn start_with<S: AsRef<std::ffi::OsStr>>(
        namespace: &str,
        instance: &str,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Self {
        // PH_CONTROLLER_LOG raises the child's log level when profiling a run. The firestore
        // crate warns on every target reset, which the emulator sends after every write.
        let filter =
            std::env::var("PH_CONTROLLER_LOG").unwrap_or_else(|_| "warn,firestore=error".into());
        let mut command = run_command(namespace, instance, args, env, &filter);
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        Self(command.spawn().expect("start the controller binary"))
    }
}

/// `pipeline-healer run` against this binary's cluster and emulators, logging at `filter`.
fn run_command<S: AsRef<std::ffi::OsStr>>(
    namespace: &str,
    instance: &str,
    args: &[S],
    env: &[(&str, &str)],
    filter: &str,
) -> Command {
    let emu = emulators();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline-healer"));
    command
        .args(["run", "--namespace", namespace, "--log-format", "json"])
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("GOOGLE_CLOUD_PROJECT", &emu.project)
        .env("FIRESTORE_EMULATOR_HOST", &emu.firestore)
        .env("POD_NAME", instance)
        // Tests run controllers side by side: each serves its metrics on a port of its own.
        .env("PIPELINE_HEALER_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", filter)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Everything a controller process wrote to its log, as it arrives.
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<String>>);

impl CapturedLog {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

impl ControllerProcess {
    /// As [`ControllerProcess::start_with`], logging at `filter` (a RUST_LOG value) into the
    /// returned capture instead of the test's output.
    pub fn start_logged<S: AsRef<std::ffi::OsStr>>(
        namespace: &str,
        instance: &str,
        args: &[S],
        env: &[(&str, &str)],
        filter: &str,
    ) -> (Self, CapturedLog) {
        let mut command = run_command(namespace, instance, args, env, filter);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the controller binary");
        let log = CapturedLog::default();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for stream in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut text = log.0.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        (Self(child), log)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh namespace for one test; it goes away with the cluster.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

pub async fn namespace(test: &str) -> TestNamespace {
    init_test_logging();
    let client = cluster().client().await;
    let slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let name = format!("{}-{:06x}", slug.trim_matches('-'), rand_u32() & 0xff_ffff);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    TestNamespace { client, name }
}

/// A Firestore client for this binary's emulator.
pub async fn firestore_db() -> firestore::FirestoreDb {
    let emu = emulators();
    init_crypto();
    init_test_logging();
    firestore::FirestoreDb::with_options(firestore::FirestoreDbOptions::new(emu.project.clone()))
        .await
        .expect("connect to the Firestore emulator")
}

impl TestNamespace {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// A Firestore collection or BigQuery dataset name of this test's own: `prefix` and the
    /// namespace's name, with underscores (which both accept) for its dashes.
    pub fn own_name(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.name.replace('-', "_"))
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// The healing events table's schema, from schemas/healing_events.json.
pub fn events_table_schema() -> gcp_bigquery_client::model::table_schema::TableSchema {
    table_schema("schemas/healing_events.json")
}

/// A table's schema from its file in the repository.
pub fn table_schema(file: &str) -> gcp_bigquery_client::model::table_schema::TableSchema {
    let path = project_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
    gcp_bigquery_client::model::table_schema::TableSchema::new(
        serde_json::from_str(&text).expect("schema file parses"),
    )
}

/// A BigQuery client for this binary's emulator.
pub async fn bigquery_client() -> gcp_bigquery_client::Client {
    init_crypto();
    pipeline_healer::gcp::bigquery_client(Some(&emulators().bigquery))
        .await
        .expect("connect to the BigQuery emulator")
}

/// This binary's Firestore and BigQuery emulators.
pub struct Emulators {
    pub project: String,
    /// host:port
    pub firestore: String,
    /// host:port
    pub bigquery: String,
}

/// Starts (once) this binary's emulators. The firestore crate finds its emulator through
/// FIRESTORE_EMULATOR_HOST in the process environment, which is set here, before any
/// Firestore client of this binary exists.
pub fn emulators() -> &'static Emulators {
    static EMULATORS: LazyLock<Emulators> = LazyLock::new(|| {
        let exports = start("emulators.sh");
        // SAFETY: set once, while every other test of this binary that needs Firestore waits
        // on this LazyLock; Rust's own env access is synchronised, and nothing else here reads
        // the environment from C.
        unsafe {
            std::env::set_var(
                "FIRESTORE_EMULATOR_HOST",
                var(&exports, "FIRESTORE_EMULATOR_HOST"),
            )
        };
        Emulators {
            project: var(&exports, "GOOGLE_CLOUD_PROJECT"),
            firestore: var(&exports, "FIRESTORE_EMULATOR_HOST"),
            bigquery: var(&exports, "BIGQUERY_EMULATOR_HOST"),
        }
    });
    &EMULATORS
}

/// A tool the project's scripts build into the cache (`helm`, `crane`): its path.
pub fn tool(name: &str) -> PathBuf {
    let out = Command::new(project_root().join("hack/tools.sh"))
        .args(["path", name])
        .output()
        .expect("run hack/tools.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}

/// A free loopback port, as the kernel hands them out (for a server started next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The namespace's HealingEvents.
pub async fn healing_events(ns: &TestNamespace) -> Vec<pipeline_healer::api::HealingEvent> {
    ns.api::<pipeline_healer::api::HealingEvent>()
        .list(&Default::default())
        .await
        .expect("list healing events")
        .items
}

/// The Kubernetes Events in the test's namespace with `reason`.
pub async fn k8s_events(
    ns: &TestNamespace,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    ns.api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// The browser window a report page is rendered in, and so the PNG's size.
pub const PAGE_SIZE: (u32, u32) = (1100, 2400);

/// Renders `page` (a local HTML file) to `png` in headless Chromium (installed by
/// `hack/chromium.sh`, which the set-up runs); the browser gets no network it could use,
/// since the page must not need one.
pub fn render_page(page: &Path, png: &Path) {
    let found = Command::new(project_root().join("hack/chromium.sh"))
        .arg("path")
        .output()
        .expect("run hack/chromium.sh");
    assert!(
        found.status.success(),
        "no chromium: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let browser = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            // Any request the page made would fail: it must render from itself alone.
            "--proxy-server=127.0.0.1:9",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={},{}", PAGE_SIZE.0, PAGE_SIZE.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && png.exists(),
        "chromium did not render the page ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}
