//! Talking to the kubelet over its Unix sockets: serving the plugin on
//! `DIR/nfhost.sock`, registering on `DIR/kubelet.sock`, and noticing a kubelet
//! restart (it deletes every plugin socket in `DIR` and makes `kubelet.sock`
//! anew), after which the plugin serves and registers again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubelet_api::deviceplugin as dp;
use tonic::transport::{Channel, Endpoint, Uri};

use super::plugin::Plugin;

/// The plugin's socket name in the kubelet's directory.
pub const PLUGIN_SOCKET: &str = "nfhost.sock";
/// How often the sockets are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The longest wait between two registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// A gRPC channel to the server on the Unix socket `path`.
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    // The URI is required by the API and unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// The identity of a file, to tell a re-created one from the old.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Serves `plugin` in `dir` and registers it as `resource`, again whenever the
/// kubelet restarts, until `stop` fires.
pub async fn run(
    dir: PathBuf,
    resource: String,
    plugin: Plugin,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let socket = dir.join(PLUGIN_SOCKET);
    let kubelet = dir.join(kubelet_api::KUBELET_SOCKET);
    loop {
        let (done, served) = match serve(&socket, plugin.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(socket = %socket.display(), error = %e, "k8s: cannot serve the device plugin; retrying");
                if sleep_or_stop(&mut stop, MAX_BACKOFF).await {
                    return;
                }
                continue;
            }
        };
        let mut backoff = Duration::from_millis(250);
        let registered = loop {
            match register(&kubelet, &resource).await {
                Ok(()) => {
                    tracing::info!(kubelet = %kubelet.display(), %resource, endpoint = PLUGIN_SOCKET, "k8s: registered with the kubelet");
                    break identity(&kubelet);
                }
                Err(e) => {
                    tracing::warn!(kubelet = %kubelet.display(), error = %e, retry_in_ms = backoff.as_millis() as u64, "k8s: the kubelet is not there yet (or refused); retrying");
                }
            }
            if sleep_or_stop(&mut stop, backoff).await {
                let _ = done.send(());
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        // Serving until the kubelet restarts: our socket gone, or its own new.
        loop {
            if sleep_or_stop(&mut stop, LOOK_EVERY).await {
                let _ = done.send(());
                let _ = served.await;
                let _ = std::fs::remove_file(&socket);
                return;
            }
            let ours = identity(&socket).is_some();
            let theirs = identity(&kubelet);
            if !ours || (theirs.is_some() && theirs != registered) {
                tracing::info!(
                    socket_gone = !ours,
                    "k8s: the kubelet restarted; serving and registering again"
                );
                break;
            }
        }
        let _ = done.send(());
        let _ = served.await;
    }
}

/// Starts serving `plugin` on `socket` (a stale file is replaced). Returns the
/// trigger that stops it and the task.
fn serve(
    socket: &Path,
    plugin: Plugin,
) -> std::io::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(dp::device_plugin_server::DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "k8s: the device plugin server failed");
        }
    });
    Ok((done, task))
}

/// One `Register` call.
async fn register(kubelet: &Path, resource: &str) -> Result<(), String> {
    let channel = unix_channel(kubelet).await.map_err(|e| e.to_string())?;
    let mut client = dp::registration_client::RegistrationClient::new(channel);
    client
        .register(dp::RegisterRequest {
            version: kubelet_api::VERSION.into(),
            endpoint: PLUGIN_SOCKET.into(),
            resource_name: resource.into(),
            options: Some(super::options()),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{}: {}", s.code(), s.message()))
}

/// Sleeps `d`; true if `stop` fired meanwhile.
async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
