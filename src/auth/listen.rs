//! Without authentication, nfhost serves only whom the host already trusts: its
//! own loopback.

use std::net::SocketAddr;

/// Whether `addr` is reachable only from this host.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The refusal for listening on `addr` (named by `flag`) without authentication,
/// or `None` if it may.
pub fn refusal(
    flag: &str,
    addr: &SocketAddr,
    authenticated: bool,
    insecure: bool,
) -> Option<String> {
    if authenticated || insecure || is_loopback(addr) {
        return None;
    }
    Some(format!(
        "refusing to serve {flag} {addr} without authentication: anyone who can reach it could \
         change any VF and NF. Give --auth FILE (bearer tokens; with --tls-cert/--tls-key so they \
         do not cross the network in cleartext) or --client-ca FILE (mutual TLS), listen on \
         loopback (127.0.0.1), or pass --insecure to accept the risk"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_without_authentication() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let lo6: SocketAddr = "[::1]:50051".parse().unwrap();
        assert!(refusal("--grpc", &lo, false, false).is_none());
        assert!(refusal("--grpc", &lo6, false, false).is_none());
        let why = refusal("--grpc", &any, false, false).unwrap();
        assert!(
            why.contains("--grpc 0.0.0.0:50051") && why.contains("--auth"),
            "{why}"
        );
        assert!(refusal("--grpc", &any, true, false).is_none());
        assert!(refusal("--grpc", &any, false, true).is_none());
    }
}
