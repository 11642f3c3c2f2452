//! A server that does no work on the stack accessgate is built on (axum 0.8 + tokio, one
//! worker, TCP_NODELAY): the route `/auth/{namespace}/{name}` answered with 200 and the same
//! response headers as accessgate's cached allow. What the framework itself costs, so the
//! report can say how much of a request accessgate's own work is.
//!
//! It runs in a child process (the bench binary started again with [`FLAG`]), so it has its
//! own core's worth of runtime as every other subject does.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use axum::Router;
use axum::http::header;
use axum::routing::any;

pub const FLAG: &str = "--zero-work-server";

/// The one mapped identity header both subjects answer with.
pub const EMAIL_HEADER: &str = "x-auth-request-email";
pub const EMAIL: &str = "alice@example.com";

/// When the bench binary was started as the zero-work server, serves forever.
pub fn serve_if_asked() {
    if std::env::args().any(|a| a == FLAG) {
        serve();
    }
}

fn serve() -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let app = Router::new().route(
            "/auth/{namespace}/{name}",
            any(|| async {
                (
                    [
                        (header::CACHE_CONTROL.as_str(), "no-store"),
                        (EMAIL_HEADER, EMAIL),
                    ],
                    (), // an empty body without a content type, as accessgate's allow
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening {}", listener.local_addr().expect("address"));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
    std::process::exit(0)
}

/// The zero-work server as a child process; stopped on drop.
pub struct ZeroWork {
    child: Child,
    pub url: String,
}

impl ZeroWork {
    pub fn start() -> ZeroWork {
        let mut child = Command::new(std::env::current_exe().expect("bench binary"))
            .arg(FLAG)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the zero-work server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("zero-work server's address");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening line");
        ZeroWork {
            url: format!("http://{addr}"),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ZeroWork {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
