//! A fault-injecting TCP proxy on 127.0.0.1.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

struct State {
    up: AtomicBool,
    connect_delay_ms: AtomicU64,
    accepted: AtomicU64,
    links: Mutex<Vec<JoinHandle<()>>>,
}

/// Forwards 127.0.0.1:`port` to a target address. While down, it refuses
/// new connections and has cut the existing ones; a connect delay holds each
/// new connection that long before it reaches the target.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`) on a free loopback port.
    pub async fn start(target: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            up: AtomicBool::new(true),
            connect_delay_ms: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
        });
        let target = target.to_string();
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !st.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let delay = Duration::from_millis(st.connect_delay_ms.load(Ordering::Relaxed));
                let target = target.clone();
                let link = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = st.links.lock();
                links.retain(|l| !l.is_finished());
                links.push(link);
            }
        });
        Ok(Proxy {
            port,
            state,
            accept,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes the target unreachable: cuts every open link, refuses new ones.
    pub fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for l in self.state.links.lock().drain(..) {
            l.abort();
        }
    }

    /// Makes the target reachable again.
    pub fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Delays each new connection by `delay` (0 to stop).
    pub fn set_connect_delay(&self, delay: Duration) {
        self.state
            .connect_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Connections accepted while up.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}
