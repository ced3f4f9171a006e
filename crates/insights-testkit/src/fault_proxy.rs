//! A TCP fault proxy for tests: 127.0.0.1:<free port> → an upstream address, with a mode that
//! can be switched at runtime (pass, added latency, blackhole, reset), and a log of every
//! accepted connection so a test can count connection attempts during an outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes read per chunk in each direction.
const CHUNK: usize = 16 * 1024;
/// How long `connect` to the upstream may take before the client connection is dropped.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with traffic. Applies to open connections and new ones alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    Pass,
    /// Forward every chunk after this delay (each direction).
    Latency(Duration),
    /// Accept connections and keep every socket open, but swallow the bytes both ways: the
    /// peer sees neither an error nor an answer. A connection that swallowed bytes stays
    /// swallowed after the mode changes back (its protocol stream is broken, as after a
    /// middlebox lost its state); only new connections pass again. The client's own timeouts
    /// must notice.
    Blackhole,
    /// Close every open connection with an RST and answer every new one with an RST right
    /// after accepting it (the attempt is still counted).
    Reset,
}

/// One accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub at: Instant,
    /// The mode when it was accepted.
    pub mode: ProxyMode,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    attempts: Mutex<Vec<Attempt>>,
    open: std::sync::atomic::AtomicUsize,
    /// Open connections that swallowed bytes (dead for good, held open by the client).
    swallowed_open: std::sync::atomic::AtomicUsize,
}

/// A running proxy. Dropping it stops accepting and closes every connection; prefer
/// [`FaultProxy::shutdown`] in async code, which also waits for the tasks to end.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("mode", &self.mode())
            .finish()
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (free port) and forwards to `upstream`, in [`ProxyMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the fault proxy")?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let shared = Arc::new(Shared {
            upstream,
            mode,
            attempts: Mutex::new(Vec::new()),
            open: std::sync::atomic::AtomicUsize::new(0),
            swallowed_open: std::sync::atomic::AtomicUsize::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Self {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// Forwards to 127.0.0.1:`port`.
    pub async fn start_to_port(port: u16) -> anyhow::Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; open connections react at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.send_replace(mode);
    }

    /// Connections accepted so far.
    pub fn attempts(&self) -> usize {
        self.lock_attempts().len()
    }

    /// Connections accepted at or after `from` and before `to` (`None`: up to now).
    pub fn attempts_between(&self, from: Instant, to: Option<Instant>) -> usize {
        self.lock_attempts()
            .iter()
            .filter(|a| a.at >= from && to.is_none_or(|t| a.at < t))
            .count()
    }

    /// Every accepted connection, oldest first.
    pub fn attempt_log(&self) -> Vec<Attempt> {
        self.lock_attempts().clone()
    }

    /// Connections currently open through the proxy (client side accepted, not yet closed).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open connections that swallowed bytes in a blackhole: their clients still hold them
    /// although no answer can ever come (evidence of a client without a timeout).
    pub fn swallowed_connections(&self) -> usize {
        self.shared
            .swallowed_open
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn lock_attempts(&self) -> std::sync::MutexGuard<'_, Vec<Attempt>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.shared
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // Aborting the accept loop drops its JoinSet, which aborts every connection task.
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let mode = *shared.mode.borrow();
                shared
                    .attempts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Attempt { at: Instant::now(), mode });
                if mode == ProxyMode::Reset {
                    reset(client);
                    continue;
                }
                conns.spawn(connection(client, shared.clone(), stop.clone()));
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Resolves once a stop was requested (or the proxy is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Closes with an RST rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Keeps the open (and swallowed) connection counts true however the task ends.
struct OpenGuard<'a> {
    shared: &'a Shared,
    swallowed: bool,
}

impl OpenGuard<'_> {
    fn mark_swallowed(&mut self) {
        if !self.swallowed {
            self.swallowed = true;
            self.shared
                .swallowed_open
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.open.fetch_sub(1, Relaxed);
        if self.swallowed {
            self.shared.swallowed_open.fetch_sub(1, Relaxed);
        }
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    shared
        .open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut guard = OpenGuard {
        shared: &shared,
        swallowed: false,
    };
    let _ = client.set_nodelay(true);
    let mut mode_rx = shared.mode.subscribe();
    let mut client = client;
    // In blackhole mode the upstream is not even dialled: the client sees an open socket that
    // never answers (like a SYN that got through to a dead path).
    let mut upstream: Option<TcpStream> = None;
    let mut cbuf = vec![0u8; CHUNK];
    let mut ubuf = vec![0u8; CHUNK];
    loop {
        let mode = *mode_rx.borrow_and_update();
        if mode == ProxyMode::Reset {
            reset(client);
            if let Some(u) = upstream {
                reset(u);
            }
            return;
        }
        let blackholed = guard.swallowed || mode == ProxyMode::Blackhole;
        if upstream.is_none() && !blackholed {
            match tokio::time::timeout(
                UPSTREAM_CONNECT_TIMEOUT,
                TcpStream::connect(shared.upstream),
            )
            .await
            {
                Ok(Ok(u)) => {
                    let _ = u.set_nodelay(true);
                    upstream = Some(u);
                }
                // Like a dead upstream behind a live middlebox: the client gets an RST.
                _ => {
                    reset(client);
                    return;
                }
            }
        }
        let delay = match mode {
            ProxyMode::Latency(d) => Some(d),
            _ => None,
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client.read(&mut cbuf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if blackholed {
                    guard.mark_swallowed();
                    continue;
                }
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let Some(u) = upstream.as_mut() else { return };
                if u.write_all(&cbuf[..n]).await.is_err() {
                    return;
                }
            }
            read = read_opt(upstream.as_mut(), &mut ubuf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if blackholed {
                    guard.mark_swallowed();
                    continue;
                }
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                if client.write_all(&ubuf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads from the upstream, or waits forever when there is none yet.
async fn read_opt(stream: Option<&mut TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(
        s: &mut TcpStream,
        msg: &[u8],
        within: Duration,
    ) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(within, s.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        Ok(got)
    }

    #[tokio::test]
    async fn pass_latency_blackhole_reset_and_counting() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let t0 = Instant::now();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut a, b"hello", Duration::from_secs(5))
                .await
                .unwrap(),
            b"hello"
        );

        proxy.set_mode(ProxyMode::Latency(Duration::from_millis(150)));
        let started = Instant::now();
        roundtrip(&mut a, b"slow", Duration::from_secs(5))
            .await
            .unwrap();
        // Both directions are delayed.
        assert!(started.elapsed() >= Duration::from_millis(300));

        proxy.set_mode(ProxyMode::Blackhole);
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        let err = roundtrip(&mut a, b"lost", Duration::from_millis(400))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            roundtrip(&mut b, b"lost", Duration::from_millis(400))
                .await
                .is_err()
        );

        assert_eq!(proxy.swallowed_connections(), 2);
        // Back to pass: the swallowed connection stays dead, a new one works.
        proxy.set_mode(ProxyMode::Pass);
        assert!(
            roundtrip(&mut a, b"x", Duration::from_millis(400))
                .await
                .is_err()
        );
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, b"again", Duration::from_secs(5))
                .await
                .unwrap(),
            b"again"
        );

        // Reset: the open connection is torn down, new ones are reset at once but counted.
        let before_reset = Instant::now();
        proxy.set_mode(ProxyMode::Reset);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        for _ in 0..3 {
            if let Ok(mut d) = TcpStream::connect(proxy.addr()).await {
                let r = tokio::time::timeout(Duration::from_secs(5), d.read(&mut buf))
                    .await
                    .unwrap();
                assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
            }
        }
        crate::wait_until(
            Duration::from_secs(5),
            "3 reset attempts logged",
            || async { proxy.attempts_between(before_reset, None) == 3 },
        )
        .await
        .unwrap();
        assert_eq!(proxy.attempts(), 6);
        assert_eq!(proxy.attempts_between(t0, Some(before_reset)), 3);
        assert!(
            proxy
                .attempt_log()
                .iter()
                .rev()
                .take(3)
                .all(|a| a.mode == ProxyMode::Reset)
        );

        proxy.set_mode(ProxyMode::Pass);
        let mut e = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut e, b"ok", Duration::from_secs(5))
            .await
            .unwrap();
        drop((a, b));
        crate::wait_until(
            Duration::from_secs(5),
            "swallowed connections closed",
            || async { proxy.swallowed_connections() == 0 },
        )
        .await
        .unwrap();
        proxy.shutdown().await;
        // Nothing listens any more.
        assert!(
            e.write_all(b"z").await.is_err() || {
                let mut one = [0u8; 1];
                matches!(
                    tokio::time::timeout(Duration::from_secs(5), e.read(&mut one)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            }
        );
    }
}
