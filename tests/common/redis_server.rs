//! A `redis-server` owned by a test: started on a free loopback port with
//! nothing kept on disk, and killed, frozen or restarted at will.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

const INSTALL: &str = "redis-server is not installed; the tests start their own. \
     Install it with `apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis`";

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A loopback port that is free, as is the one 10 000 above it (a cluster
/// node's bus port).
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
        let port = listener.local_addr().expect("bound").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// A standalone server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra arguments, such as `--cluster-enabled yes`.
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tower-stampede-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        // Ready when the server says so; the rest of its log is drained so a
        // full pipe never blocks it.
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut log = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let ready = line.contains("Ready to accept connections");
                    log.push(line);
                    if ready {
                        break;
                    }
                }
                _ => panic!("redis-server on port {port} did not start:\n{}", log.join("\n")),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends one command and returns its reply as `redis-cli` would print
    /// it raw (arrays one element a line, nil as nothing). Fails the test
    /// on an error reply, which `redis-cli` would print and exit 0 on.
    pub fn cli(&self, args: &[&str]) -> String {
        self.client().cli(args)
    }

    /// Sends one command; its reply, or the error reply it got.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        self.client().try_cli(args)
    }

    /// A connection subscribed to every channel.
    pub fn published(&self) -> Published {
        self.client().published()
    }

    /// A handle that sends commands to this server, for another thread.
    pub fn client(&self) -> Client {
        Client { port: self.port }
    }
}

/// Sends commands to a test's server, one connection each.
#[derive(Clone, Copy)]
pub struct Client {
    port: u16,
}

impl Client {
    /// As [`RedisServer::cli`].
    pub fn cli(&self, args: &[&str]) -> String {
        match self.try_cli(args) {
            Ok(reply) => reply,
            Err(error) => panic!("redis {args:?} answered an error: {error}"),
        }
    }

    /// Sends one command; its reply, or the error reply it got.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut connection = self.send(args, std::time::Duration::from_secs(10));
        read_reply(&mut connection)
    }

    /// A connection subscribed to every channel: [`Published::next`]
    /// returns each message as it is published.
    pub fn published(&self) -> Published {
        let mut connection = self.send(&["PSUBSCRIBE", "*"], std::time::Duration::from_secs(120));
        read_reply(&mut connection).expect("subscribed");
        Published(connection)
    }

    fn send(&self, args: &[&str], patience: std::time::Duration) -> BufReader<std::net::TcpStream> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server is up");
        stream
            .set_read_timeout(Some(patience))
            .expect("a timeout can be set");
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        (&stream).write_all(command.as_bytes()).expect("command sent");
        BufReader::new(stream)
    }
}

/// Messages published on a server, as they come.
pub struct Published(BufReader<std::net::TcpStream>);

impl Published {
    /// The next message: `pmessage`, the pattern, the channel, the payload,
    /// a line each.
    pub fn next(&mut self) -> String {
        read_reply(&mut self.0).expect("a message")
    }
}

/// One RESP2 reply: `Err` for an error reply.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let Ok(length) = rest.parse::<usize>() else {
                return Ok(String::new());
            };
            let mut data = vec![0; length + 2];
            reader.read_exact(&mut data).expect("a bulk reply");
            data.truncate(length);
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        "*" => {
            let count = rest.parse::<usize>().unwrap_or(0);
            let items = (0..count)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items.join("\n"))
        }
        other => panic!("not a RESP2 reply: {other}{rest}"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server does not die of SIGKILL's wait otherwise.
            let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
