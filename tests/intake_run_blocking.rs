//! `run_blocking` serves until SIGTERM and then returns Ok(()). Kept in its
//! own test binary because the signal is sent to the whole test process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use edgestat::tools::intake::{run_blocking, IntakeConfig, TlsMode};

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn run_blocking_serves_until_sigterm() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let cfg = IntakeConfig {
        listen: addr,
        tls: TlsMode::SelfSigned { dir: cert_dir.clone() },
        data_dir: None,
        data_max_bytes: edgestat::tools::intake::store::DEFAULT_DATA_MAX_BYTES,
        max_stored_payloads: 10,
        throttle_bytes_per_sec: 0,
    };
    let t = std::thread::spawn(move || run_blocking(cfg));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "intake never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    // An OpenSSL-based client (curl) trusts the generated certificate too.
    let cert = cert_dir.join("cert.pem");
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .arg(format!("https://localhost:{}/intake/health", addr.port()))
        .output();
    match curl {
        Ok(out) => {
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
            assert!(body.contains("\"status\":\"ok\""), "{body}");
        }
        Err(e) => eprintln!("curl not available, skipping OpenSSL check: {e}"),
    }
    // Plain HTTP to a TLS port is not answered as HTTP.
    assert!(!http_get(addr, "/intake/health").unwrap_or_default().contains("\"ok\""));

    let pid = std::process::id().to_string();
    let st = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let res = t.join().unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert!(TcpStream::connect(addr).is_err(), "listener closed");
}

#[test]
fn run_blocking_refuses_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let r = rt.block_on(async { run_blocking(IntakeConfig::default()) });
    assert!(r.unwrap_err().to_string().contains("inside a tokio runtime"));
}
