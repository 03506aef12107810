//! A TCP relay in front of a test's `redis-server` that can lose or hold
//! back the next reply it relays: a command that ran, and whose answer is
//! lost with its connection, or arrives late.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

pub struct Relay {
    port: u16,
    next: Arc<Mutex<Next>>,
}

/// What becomes of the next reply.
#[derive(Clone)]
enum Next {
    Relay,
    /// Dropped, and its connection closed.
    Lose,
    /// Held until released.
    Hold(Arc<Hold>),
}

#[derive(Default)]
struct Hold {
    arrived: Notify,
    released: Notify,
}

/// A held reply: relayed when released.
pub struct Held(Arc<Hold>);

impl Held {
    /// Returns once the reply has reached the relay: the command has run.
    pub async fn arrived(&self) {
        self.0.arrived.notified().await;
    }

    pub fn release(&self) {
        self.0.released.notify_one();
    }
}

impl Relay {
    pub async fn start(to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let port = listener.local_addr().expect("bound").port();
        let next = Arc::new(Mutex::new(Next::Relay));
        let shared = Arc::clone(&next);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", to)).await.expect("redis");
                let ((mut client_in, mut client_out), (mut server_in, mut server_out)) =
                    (client.into_split(), server.into_split());
                let next = Arc::clone(&shared);
                tokio::spawn(async move { tokio::io::copy(&mut client_in, &mut server_out).await });
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_in.read(&mut buf).await {
                        let this = std::mem::replace(
                            &mut *next.lock().unwrap_or_else(PoisonError::into_inner),
                            Next::Relay,
                        );
                        match this {
                            Next::Relay => {}
                            Next::Lose => return,
                            Next::Hold(hold) => {
                                hold.arrived.notify_one();
                                hold.released.notified().await;
                            }
                        }
                        if client_out.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, next }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn set(&self, next: Next) {
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// The next reply is dropped, and its connection closed.
    pub fn lose_next_reply(&self) {
        self.set(Next::Lose);
    }

    /// The next reply waits until the returned handle releases it.
    pub fn hold_next_reply(&self) -> Held {
        let hold = Arc::new(Hold::default());
        self.set(Next::Hold(Arc::clone(&hold)));
        Held(hold)
    }
}
