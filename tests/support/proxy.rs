//! A TCP proxy in front of an emulator that a test can stop and start again, to play a sink
//! outage: stopped, it refuses connections and cuts the open ones, as a dead service would.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct TcpProxy {
    addr: SocketAddr,
    upstream: String,
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Self {
            addr,
            upstream: upstream.to_owned(),
            serving: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    /// host:port to give a client instead of the upstream's.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops listening and cuts every open connection.
    pub fn stop(&self) {
        if let Some(task) = self.serving.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&self) {
        let listener = crate::support::eventually(10, "the proxy port to be free", || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        // The connections live in a JoinSet owned by this task, so aborting it cuts them all.
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let upstream = upstream.clone();
                        connections.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        *self.serving.lock().unwrap() = Some(task);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
