//! A TLS-terminating proxy of the local engine's socket: a `tcp://127.0.0.1:<port>` Docker engine
//! that demands a client certificate, as a `dockerd --tlsverify` does. Certificates come from a
//! throw-away CA made with the `openssl` CLI; the client's `ca.pem`, `cert.pem` and `key.pem` sit in
//! one directory, ready for `DOCKER_CERT_PATH`.
//!
//! The proxy runs its own tokio runtime on a thread, so that dropping it works from any test
//! (async or not, panicking or not).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, UnixStream};
use tokio_rustls::TlsAcceptor;

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct TlsEngineProxy {
    port: u16,
    dir: tempfile::TempDir,
    handshakes: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsEngineProxy {
    /// A proxy of `/var/run/docker.sock` (or the `unix://` `DOCKER_HOST`) on a free port.
    pub fn start() -> TlsEngineProxy {
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let dir = tempfile::Builder::new()
            .prefix("doco-tls-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        make_certificates(dir.path());
        let acceptor = TlsAcceptor::from(server_config(dir.path()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind the TLS proxy: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let port = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"))
            .port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counter = handshakes.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener)
                    .unwrap_or_else(|e| panic!("tokio listener: {e}"));
                tokio::select! {
                    () = serve(listener, acceptor, upstream, counter) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime aborts the connections' tasks.
        });
        TlsEngineProxy {
            port,
            dir,
            handshakes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn docker_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The client's `ca.pem`, `cert.pem` and `key.pem` (for `DOCKER_CERT_PATH`).
    pub fn client_cert_dir(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// How many clients completed the handshake (with a certificate of the CA).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsEngineProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: PathBuf,
    handshakes: Arc<AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, upstream, handshakes) =
            (acceptor.clone(), upstream.clone(), handshakes.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            handshakes.fetch_add(1, Ordering::SeqCst);
            let Ok(mut engine) = UnixStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
        });
    }
}

/// The server's configuration: its certificate, and client certificates of the CA required.
fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&dir.join("ca.pem")) {
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap_or_else(|e| panic!("client verifier: {e}"));
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem"))
        .unwrap_or_else(|e| panic!("server key: {e}"));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("protocol versions: {e}"))
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join("server-cert.pem")), key)
        .unwrap_or_else(|e| panic!("server certificate: {e}"));
    Arc::new(config)
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("certificates in {}: {e}", path.display()))
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, with `openssl`: the server's
/// in `dir`, the client's (with the CA) in `dir/client`.
fn make_certificates(dir: &Path) {
    let client = dir.join("client");
    std::fs::create_dir(&client).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let path = |name: &str| dir.join(name).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=doco-test CA",
        "-keyout",
        &path("ca-key.pem"),
        "-out",
        &path("ca.pem"),
    ]);
    leaf(
        dir,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    leaf(dir, "client", "extendedKeyUsage=clientAuth");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client-cert.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        std::fs::copy(dir.join(from), client.join(to))
            .unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
}

/// `<name>-key.pem` and `<name>-cert.pem`, signed by the CA, with the `extensions` lines.
fn leaf(dir: &Path, name: &str, extensions: &str) {
    let path = |file: String| dir.join(file).display().to_string();
    let ext = path(format!("{name}.ext"));
    std::fs::write(&ext, format!("basicConstraints=CA:FALSE\n{extensions}\n"))
        .unwrap_or_else(|e| panic!("write {ext}: {e}"));
    let (key, csr, cert) = (
        path(format!("{name}-key.pem")),
        path(format!("{name}.csr")),
        path(format!("{name}-cert.pem")),
    );
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN=doco-test {name}"),
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &path("ca.pem".into()),
        "-CAkey",
        &path("ca-key.pem".into()),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (install it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
