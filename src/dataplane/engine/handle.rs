//! The engine's thread: starting it, stopping it, and what it publishes for other
//! threads to read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{Notify, mpsc, oneshot};

use super::{Engine, EngineConfig, EngineError, EngineEvent, GenWire, WireConfig};
use crate::dataplane::counters::Counters;
use crate::dataplane::r#gen::SinkStats;
use crate::dataplane::host_wire::HostWire;
use crate::nic::{Nic, VfId};

type Call = Box<dyn FnOnce(&mut Engine) + Send>;

pub(super) enum Msg {
    Call(Call),
    Shutdown,
}

/// The control side of a running engine. Dropping it shuts the engine down.
#[derive(Debug)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    shared: Arc<SharedView>,
}

/// State the engine publishes for readers on other threads (not hot-path).
#[derive(Debug, Default)]
pub struct SharedView {
    pub(super) sink: Mutex<SinkStats>,
    events: Mutex<Vec<EngineEvent>>,
    pub(super) reports: Mutex<HashMap<u16, String>>,
    pub(super) config_results: Mutex<HashMap<u16, (u32, String)>>,
}

impl SharedView {
    /// What the wire sink counted so far.
    pub fn sink(&self) -> SinkStats {
        self.sink.lock().map(|s| *s).unwrap_or_default()
    }

    /// Takes the events recorded since the last call.
    pub fn take_events(&self) -> Vec<EngineEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// The latest report of the NF on `vf`.
    pub fn report(&self, vf: VfId) -> Option<String> {
        self.reports.lock().ok()?.get(&vf.0).cloned()
    }

    /// How the NF on `vf` took the configuration of `generation` posted with
    /// [`Engine::post_config`]: `Some(Ok)` applied in place, `Some(Err(why))` not,
    /// `None` no answer yet.
    pub fn config_result(&self, vf: VfId, generation: u32) -> Option<Result<(), String>> {
        let results = self.config_results.lock().ok()?;
        match results.get(&vf.0) {
            Some((g, error)) if *g == generation => Some(if error.is_empty() {
                Ok(())
            } else {
                Err(error.clone())
            }),
            _ => None,
        }
    }

    pub(super) fn push_event(&self, event: EngineEvent) {
        if let Ok(mut events) = self.events.lock() {
            // Bounded: a fault storm must not grow memory without limit.
            if events.len() >= 4096 {
                events.remove(0);
            }
            events.push(event);
        }
    }
}

impl EngineHandle {
    /// Builds the NIC and starts the engine thread.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let mut nic = Nic::new(&config.pf)?;
        nic.set_num_vfs(config.num_vfs)?;
        let (wire, host_links) = match &config.wire {
            WireConfig::None => (None, None),
            WireConfig::Gen(config) => (Some(GenWire::new(config)?), None),
            WireConfig::Host(host) => (
                None,
                Some((host.clone(), crate::dataplane::host_wire::open_links(host)?)),
            ),
        };
        // The wire's ring lives on the engine thread; it reports whether it started.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let counters = Arc::new(Counters::new(config.pf.total_vfs));
        let shared = Arc::new(SharedView::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let engine_counters = counters.clone();
        let engine_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nic-engine-pf{}", config.pf.id.0))
            .spawn(move || {
                tokio_uring::start(async move {
                    let host = match host_links {
                        None => None,
                        Some((config, links)) => match HostWire::new(&config, links) {
                            Ok(host) => Some(host),
                            Err(e) => {
                                let _ = started_tx.send(Err(EngineError::Wire(e)));
                                return;
                            }
                        },
                    };
                    let host_wake = match host.as_ref().map(|h| h.wakeup()).transpose() {
                        Ok(wake) => wake,
                        Err(e) => {
                            let _ = started_tx.send(Err(EngineError::Wire(e)));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
                    let engine = Engine {
                        nic,
                        ports: (0..config.pf.total_vfs).map(|_| None).collect(),
                        regions: Vec::new(),
                        counters: engine_counters,
                        shared: engine_shared,
                        wire,
                        host,
                        host_wake,
                        events: ev_tx,
                        wake: std::rc::Rc::new(Notify::new()),
                        started: Instant::now(),
                        umems: HashMap::new(),
                        scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
                        epoch: 0,
                        active: Vec::new(),
                    };
                    engine.run(rx, ev_rx).await;
                });
            })
            .map_err(EngineError::Spawn)?;
        started_rx.recv().map_err(|_| EngineError::Gone)??;
        Ok(EngineHandle {
            tx,
            thread: Some(thread),
            counters,
            shared,
        })
    }

    /// Runs `f` on the engine thread, between two polls, and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let call: Call = Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        });
        self.tx
            .send(Msg::Call(call))
            .map_err(|_| EngineError::Gone)?;
        reply_rx.blocking_recv().map_err(|_| EngineError::Gone)
    }

    /// Like [`EngineHandle::call`], for async callers.
    pub async fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let call: Call = Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        });
        self.tx
            .send(Msg::Call(call))
            .map_err(|_| EngineError::Gone)?;
        reply_rx.await.map_err(|_| EngineError::Gone)
    }

    /// The hot-path counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Sink stats, events and NF reports.
    pub fn view(&self) -> &Arc<SharedView> {
        &self.shared
    }

    /// Stops the engine and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
