//! The reservation API simulator behind TLS, as an `https://` API is deployed: a certificate
//! authority made for this run signs a certificate for `127.0.0.1`, and the server offers
//! HTTP/2 and HTTP/1.1 by ALPN. A worker trusts the authority through `SSL_CERT_FILE` (read by
//! its TLS stack's system trust store), so the test needs nothing installed and changes no
//! trust store but the worker process's.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reservation_sim::ReservationSim;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A reservation API on `https://127.0.0.1:port`, serving the given simulator's routes.
#[derive(Debug)]
pub struct HttpsReservationApi {
    /// `https://127.0.0.1:port`.
    pub base: String,
    /// The PEM file of the authority that signed the server's certificate: `SSL_CERT_FILE`.
    pub ca_file: tempfile::NamedTempFile,
}

/// Serves `sim` over TLS until `stop` is cancelled.
pub async fn serve_reservation_https(
    sim: ReservationSim,
    stop: CancellationToken,
) -> HttpsReservationApi {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "reservation-testkit CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server parameters")
        .signed_by(&server_key, &ca)
        .expect("server certificate");

    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server TLS configuration");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let mut ca_file = tempfile::NamedTempFile::new().expect("CA file");
    ca_file
        .write_all(ca.pem().as_bytes())
        .expect("write CA file");

    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let base = format!("https://{}", tcp.local_addr().expect("addr"));
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move {
        axum::serve(listener, reservation_sim::router(sim))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    HttpsReservationApi { base, ca_file }
}

/// Accepts TCP connections and completes their TLS handshakes; a failed handshake drops that
/// connection only, and a failed accept (out of descriptors) waits a moment, as axum's own
/// listener does, instead of spinning.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            if let Ok(tls) = self.tls.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
