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
    /// Added before each chunk the target sends back (µs).
    latency_us: AtomicU64,
    accepted: AtomicU64,
    links: Mutex<Vec<JoinHandle<()>>>,
    target: String,
}

/// Forwards 127.0.0.1:`port` to a target address. While down it does not
/// listen at all, so connecting is refused, as with a stopped server, and
/// the open links are cut; a connect delay holds each new connection that
/// long before it reaches the target.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`) on a free loopback port.
    pub async fn start(target: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            up: AtomicBool::new(true),
            connect_delay_ms: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
            target: target.to_string(),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Proxy {
            port,
            state,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes the target unreachable: stops listening (connects are refused)
    /// and cuts every open link.
    pub fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        if let Some(accept) = self.accept.lock().take() {
            accept.abort();
        }
        for l in self.state.links.lock().drain(..) {
            l.abort();
        }
    }

    /// Makes the target reachable again: listens on the same port.
    pub fn up(&self) {
        let mut accept = self.accept.lock();
        if accept.is_some() {
            return;
        }
        // std's bind sets SO_REUSEADDR on Unix, so the port is free again
        // at once; nothing else binds a port another test already holds.
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .expect("rebinding the proxy's port");
        std_listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(std_listener).unwrap();
        self.state.up.store(true, Ordering::SeqCst);
        *accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }

    /// Delays each new connection by `delay` (0 to stop).
    pub fn set_connect_delay(&self, delay: Duration) {
        self.state
            .connect_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Delays every chunk the target sends back by `latency` (0 to stop),
    /// on open links too: the target answers that much later, as a slowed
    /// database would.
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Connections accepted while up.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, st: Arc<State>) {
    while let Ok((mut client, _)) = listener.accept().await {
        if !st.up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        st.accepted.fetch_add(1, Ordering::Relaxed);
        let delay = Duration::from_millis(st.connect_delay_ms.load(Ordering::Relaxed));
        let target = st.target.clone();
        let state = st.clone();
        let link = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(server) = TcpStream::connect(&target).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut from_client, mut to_client) = client.split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async {
                    let copied = tokio::io::copy(&mut from_client, &mut to_server).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_server).await;
                    copied
                };
                let down = answer(&mut from_server, &mut to_client, &state);
                let _ = tokio::join!(up, down);
            }
        });
        let mut links = st.links.lock();
        links.retain(|l| !l.is_finished());
        links.push(link);
    }
}

/// Copies the target's answers to the client, each chunk after the
/// latency in force when it arrived.
async fn answer(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    st: &State,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let latency = st.latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}
