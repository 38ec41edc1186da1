//! The tonic services: thin. Each handler hands the request to the [`Controller`] on a
//! blocking thread (the controller talks to the engine thread synchronously) and maps
//! its error to a status code; no business logic lives here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::grpc::caller;
use crate::control::{ControlError, Controller, sees_event};
use nfhost_api::proto;
use nfhost_api::proto::{
    chain_service_server::ChainService, nf_service_server::NfService, pf_service_server::PfService,
    telemetry_service_server::TelemetryService, vf_service_server::VfService,
};

/// The API over one controller.
#[derive(Debug, Clone)]
pub struct Api {
    controller: Arc<Controller>,
}

impl Api {
    /// Serves `controller`.
    pub fn new(controller: Arc<Controller>) -> Self {
        Api { controller }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Controller) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let controller = self.controller.clone();
        tokio::task::spawn_blocking(move || f(&controller))
            .await
            .map_err(|e| Status::internal(format!("request handler failed: {e}")))?
            .map(Response::new)
            .map_err(status)
    }
}

/// The status code and message for a refusal.
pub fn status(err: ControlError) -> Status {
    let message = crate::error_chain(&err);
    match err {
        ControlError::Invalid(violations) => {
            let mut details = ErrorDetails::new();
            for v in violations.0 {
                details.add_bad_request_violation(v.field, v.description);
            }
            Status::with_error_details(tonic::Code::InvalidArgument, message, details)
        }
        ControlError::NotFound(_) => Status::not_found(message),
        ControlError::PermissionDenied(_) => Status::permission_denied(message),
        ControlError::AlreadyExists(_) => Status::already_exists(message),
        ControlError::FailedPrecondition(_) | ControlError::Nic(_) => {
            Status::failed_precondition(message)
        }
        ControlError::Exhausted(_) => Status::resource_exhausted(message),
        ControlError::Store(_) | ControlError::Engine(_) => Status::internal(message),
    }
}

/// One page of a list, AIP-158 style: the token is the offset, opaque to clients.
/// A page ends early when its items would encode to more than
/// [`crate::api::limits::MAX_PAGE`] bytes (NF configs can be large), with at
/// least one item in it; `next_page_token` then continues from there.
fn page<T: Clone + prost::Message>(
    items: &[T],
    page_size: i32,
    token: &str,
    max: usize,
) -> Result<(Vec<T>, String), Status> {
    let size = match page_size {
        n if n < 0 => return Err(Status::invalid_argument("page_size must not be negative")),
        0 => max.min(64),
        n => (n as usize).min(max),
    };
    let start = if token.is_empty() {
        0
    } else {
        token.parse::<usize>().map_err(|_| {
            Status::invalid_argument(format!(
                "page_token {token:?} was not issued by this server"
            ))
        })?
    };
    let wanted = items
        .get(start..(start + size).min(items.len()))
        .unwrap_or_default();
    let mut bytes = 0;
    let fit = wanted
        .iter()
        .take_while(|item| {
            bytes += item.encoded_len() + 8;
            bytes <= crate::api::limits::MAX_PAGE
        })
        .count()
        .max(1)
        .min(wanted.len());
    let end = start + fit;
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((
        items.get(start..end).map(<[T]>::to_vec).unwrap_or_default(),
        next,
    ))
}

#[tonic::async_trait]
impl PfService for Api {
    async fn get_pf(
        &self,
        request: Request<proto::GetPfRequest>,
    ) -> Result<Response<proto::Pf>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| {
            if name != "pfs/0" && !name.is_empty() {
                return Err(ControlError::NotFound(format!(
                    "{name:?} not found: this host has one PF, pfs/0"
                )));
            }
            let _ = &who; // every principal may read the PF
            c.get_pf()
        })
        .await
    }

    async fn set_vf_count(
        &self,
        request: Request<proto::SetVfCountRequest>,
    ) -> Result<Response<proto::Pf>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        self.run(move |c| c.set_vf_count(&who, &r.name, r.num_vfs, r.validate_only))
            .await
    }
}

#[tonic::async_trait]
impl VfService for Api {
    async fn list_vfs(
        &self,
        request: Request<proto::ListVfsRequest>,
    ) -> Result<Response<proto::ListVfsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        if !r.parent.is_empty() && r.parent != "pfs/0" {
            return Err(Status::not_found(format!(
                "{:?} not found: this host has one PF, pfs/0",
                r.parent
            )));
        }
        let all = self.run(move |c| c.list_vfs(&who)).await?.into_inner();
        let (vfs, next_page_token) = page(&all, r.page_size, &r.page_token, 256)?;
        Ok(Response::new(proto::ListVfsResponse {
            vfs,
            next_page_token,
        }))
    }

    async fn get_vf(
        &self,
        request: Request<proto::GetVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| c.get_vf(&who, &name)).await
    }

    async fn update_vf(
        &self,
        request: Request<proto::UpdateVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let vf =
            r.vf.ok_or_else(|| Status::invalid_argument("vf is required"))?;
        self.run(move |c| c.update_vf(&who, &vf, &r.update_mask, r.validate_only))
            .await
    }

    async fn reset_vf(
        &self,
        request: Request<proto::ResetVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| c.reset_vf(&who, &name)).await
    }
}

#[tonic::async_trait]
impl NfService for Api {
    async fn create_nf(
        &self,
        request: Request<proto::CreateNfRequest>,
    ) -> Result<Response<proto::Nf>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let nf =
            r.nf.ok_or_else(|| Status::invalid_argument("nf is required"))?;
        self.run(move |c| c.create_nf(&who, &nf, r.validate_only))
            .await
    }

    async fn get_nf(
        &self,
        request: Request<proto::GetNfRequest>,
    ) -> Result<Response<proto::Nf>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| c.get_nf(&who, &name)).await
    }

    async fn list_nfs(
        &self,
        request: Request<proto::ListNfsRequest>,
    ) -> Result<Response<proto::ListNfsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let all = self.run(move |c| Ok(c.list_nfs(&who))).await?.into_inner();
        let (nfs, next_page_token) = page(&all, r.page_size, &r.page_token, 1000)?;
        Ok(Response::new(proto::ListNfsResponse {
            nfs,
            next_page_token,
        }))
    }

    async fn delete_nf(
        &self,
        request: Request<proto::DeleteNfRequest>,
    ) -> Result<Response<proto::DeleteNfResponse>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| {
            c.delete_nf(&who, &name)
                .map(|()| proto::DeleteNfResponse {})
        })
        .await
    }
}

#[tonic::async_trait]
impl ChainService for Api {
    async fn create_chain(
        &self,
        request: Request<proto::CreateChainRequest>,
    ) -> Result<Response<proto::Chain>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let chain = r
            .chain
            .ok_or_else(|| Status::invalid_argument("chain is required"))?;
        self.run(move |c| c.create_chain(&who, &chain, r.validate_only))
            .await
    }

    async fn update_chain(
        &self,
        request: Request<proto::UpdateChainRequest>,
    ) -> Result<Response<proto::UpdateChainResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let chain = r
            .chain
            .ok_or_else(|| Status::invalid_argument("chain is required"))?;
        self.run(move |c| {
            c.update_chain(
                &who,
                &chain,
                &r.update_mask,
                r.validate_only,
                r.allow_missing,
            )
        })
        .await
    }

    async fn get_chain(
        &self,
        request: Request<proto::GetChainRequest>,
    ) -> Result<Response<proto::Chain>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| c.get_chain(&who, &name)).await
    }

    async fn list_chains(
        &self,
        request: Request<proto::ListChainsRequest>,
    ) -> Result<Response<proto::ListChainsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let all = self
            .run(move |c| Ok(c.list_chains(&who)))
            .await?
            .into_inner();
        let (chains, next_page_token) = page(&all, r.page_size, &r.page_token, 1000)?;
        Ok(Response::new(proto::ListChainsResponse {
            chains,
            next_page_token,
        }))
    }

    async fn delete_chain(
        &self,
        request: Request<proto::DeleteChainRequest>,
    ) -> Result<Response<proto::DeleteChainResponse>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        self.run(move |c| {
            c.delete_chain(&who, &name)
                .map(|()| proto::DeleteChainResponse {})
        })
        .await
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<proto::Stats, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl TelemetryService for Api {
    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        let who = caller(&request)?;
        let active_only = request.into_inner().active_only;
        self.run(move |c| c.stats(&who, active_only)).await
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(
        &self,
        request: Request<proto::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let interval = match r.interval_ms {
            0 => 1000,
            n @ 100..=60_000 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "interval_ms {n} is out of range 100-60000"
                )));
            }
        };
        let controller = self.controller.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(interval)));
            loop {
                ticker.tick().await;
                let c = controller.clone();
                let who = who.clone();
                let stats = tokio::task::spawn_blocking(move || c.stats(&who, r.active_only)).await;
                let item = match stats {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(status(e)),
                    Err(e) => Err(Status::internal(e.to_string())),
                };
                if tx.send(item).await.is_err() {
                    break; // The client went away.
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let who = caller(&request)?;
        let replay = request.into_inner().replay;
        let mut live = self.controller.subscribe();
        let past = if replay {
            let who = who.clone();
            self.run(move |c| c.events(&who, 1000)).await?.into_inner()
        } else {
            Vec::new()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = 0;
            for e in past {
                last = e.seq;
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(e) if e.seq > last && sees_event(&who, &e) => {
                        last = e.seq;
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let msg =
                            format!("{n} events were dropped because this client reads too slowly");
                        if tx.send(Err(Status::data_loss(msg))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let who = caller(&request)?;
        let limit = match request.into_inner().limit {
            n if n < 0 => return Err(Status::invalid_argument("limit must not be negative")),
            0 => 100,
            n => (n as usize).min(1000),
        };
        self.run(move |c| {
            c.events(&who, limit)
                .map(|events| proto::ListEventsResponse { events })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nfs(configs: &[usize]) -> Vec<proto::Nf> {
        configs
            .iter()
            .enumerate()
            .map(|(i, len)| proto::Nf {
                name: format!("nfs/n{i}"),
                config: "x".repeat(*len),
                ..Default::default()
            })
            .collect()
    }

    /// Every page, following the tokens from the start.
    fn walk(items: &[proto::Nf], size: i32) -> Vec<Vec<proto::Nf>> {
        let mut token = String::new();
        let mut pages = Vec::new();
        loop {
            let (page, next) = page(items, size, &token, 256).unwrap();
            pages.push(page);
            if next.is_empty() {
                return pages;
            }
            token = next;
        }
    }

    #[test]
    fn paging_walks_every_item_once() {
        let items = nfs(&[0; 10]);
        let pages = walk(&items, 3);
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(pages.concat(), items);
        assert!(page(&items, 3, "x", 256).is_err());
        assert!(page(&items, 3, "99", 256).unwrap().0.is_empty());
        assert!(page(&items, -1, "", 256).is_err());
    }

    #[test]
    fn a_page_of_large_configs_ends_at_the_byte_limit() {
        // Ten 900 KB configs: two fit in a 2 MiB page; every NF still comes, once.
        let items = nfs(&[900_000; 10]);
        let pages = walk(&items, 100);
        assert!(
            pages.iter().all(|p| p.len() == 2),
            "{:?}",
            pages.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(pages.concat(), items);
        let bytes = |p: &[proto::Nf]| p.iter().map(prost::Message::encoded_len).sum::<usize>();
        assert!(
            pages
                .iter()
                .all(|p| bytes(p) <= crate::api::limits::MAX_PAGE)
        );
        // One item larger than a page still comes alone.
        let huge = nfs(&[3_000_000, 10]);
        assert_eq!(
            walk(&huge, 100).iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1]
        );
    }
}
