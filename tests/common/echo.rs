//! An upstream that answers every request with what it received (method, URI, headers) as
//! JSON, and records each request, so tests can see exactly what passed the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::response::Json;
use serde_json::{Map, Value, json};

#[derive(Clone, Default)]
pub struct Echo {
    pub addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Echo {
    /// Serves on a free loopback port from a background thread for the life of the process.
    pub fn start() -> Echo {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let echo = Echo {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let state = echo.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(record).with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        echo
    }

    pub fn port(&self) -> u16 {
        self.addr.unwrap().port()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Value> {
        self.seen.lock().unwrap().last().cloned()
    }
}

async fn record(State(echo): State<Echo>, req: Request) -> Json<Value> {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(json!(v)),
            _ => {
                headers.insert(name.as_str().to_owned(), json!([v]));
            }
        }
    }
    let seen =
        json!({"method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers});
    echo.seen.lock().unwrap().push(seen.clone());
    Json(seen)
}

/// The values of `name` (lowercase) the upstream received.
pub fn received(seen: &Value, name: &str) -> Vec<String> {
    seen["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
