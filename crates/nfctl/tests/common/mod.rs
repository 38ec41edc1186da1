// Shared by the nfctl test binaries; each uses part of it.
#![allow(dead_code)]
//! What nfctl's test binaries share: a gRPC double's thread, and nfctl's output.

use std::future::Future;
use std::net::SocketAddr;
use std::process::Output;

use tonic::transport::server::TcpIncoming;

/// Binds `127.0.0.1:0` and runs `serve` on it, from a thread of its own for the
/// rest of the test. The listener is bound before this returns its address.
pub fn serve_on_a_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(TcpIncoming) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind");
            tx.send(incoming.local_addr().expect("address"))
                .expect("send address");
            serve(incoming).await;
        });
    });
    rx.recv().expect("server address")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
