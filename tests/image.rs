//! The controller image from `hack/image.sh` (no container runtime): pushed to a local
//! `crane registry serve` and read back; its config is checked and the binary extracted
//! from it runs.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::{free_port, project_root};

fn run(command: &mut Command) -> Vec<u8> {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_registry(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the registry did not start");
}

#[test]
fn the_image_runs_the_controller_as_a_non_root_user_on_linux_amd64() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("pipeline-healer.tar");
    run(Command::new(project_root().join("hack/image.sh")).arg(&tarball));

    let crane = support::tool("crane");
    let port = free_port();
    let _registry = Registry(
        Command::new(&crane)
            .args([
                "registry",
                "serve",
                "--address",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("crane registry serve"),
    );
    wait_for_registry(port);
    let image = format!("127.0.0.1:{port}/pipeline-healer:test");
    run(Command::new(&crane)
        .args(["push", "--insecure"])
        .arg(&tarball)
        .arg(&image));

    let config: Value = serde_json::from_slice(&run(Command::new(&crane).args([
        "config",
        "--insecure",
        &image,
    ])))
    .unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/pipeline-healer"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["run"]));

    // The binary, out of the image's filesystem, runs on its own (static: no loader needed).
    let fs = dir.path().join("fs.tar");
    run(Command::new(&crane)
        .args(["export", "--insecure", &image])
        .arg(&fs));
    run(Command::new("tar")
        .arg("-xf")
        .arg(&fs)
        .arg("-C")
        .arg(dir.path())
        .arg("usr/local/bin/pipeline-healer"));
    let binary: &Path = &dir.path().join("usr/local/bin/pipeline-healer");
    let version = String::from_utf8(run(Command::new(binary).arg("--version"))).unwrap();
    assert_eq!(
        version.trim(),
        format!("pipeline-healer {}", env!("CARGO_PKG_VERSION"))
    );
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    let ldd = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(!ldd.contains("libc.so"), "dynamically linked: {ldd}");
}
