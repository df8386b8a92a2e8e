//! systemd's readiness protocol (`Type=notify`): one datagram such as
//! `READY=1` to the Unix socket named by `$NOTIFY_SOCKET`. A dozen lines do
//! not justify a dependency on libsystemd.

use std::os::unix::net::UnixDatagram;

/// Why a notification was not delivered (never fatal: logged once).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names something other than a path or an abstract socket.
    #[error("NOTIFY_SOCKET={0:?} is not a socket path or an abstract socket name")]
    Unsupported(String),
    /// The send failed.
    #[error("cannot notify systemd at {path}: {source}")]
    Send {
        /// `$NOTIFY_SOCKET`.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`; `Ok(false)` when
/// the variable is unset (not started by systemd with `Type=notify`).
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(path) if !path.is_empty() => send_to(&path, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `path` (`/run/...` or
/// `@abstract`).
pub fn send_to(path: &str, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError::Send { path: path.to_string(), source };
    let sock = UnixDatagram::unbound().map_err(err)?;
    if let Some(name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?;
            sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(NotifyError::Unsupported(path.to_string()));
        }
    }
    if !path.starts_with('/') {
        return Err(NotifyError::Unsupported(path.to_string()));
    }
    sock.send_to(state.as_bytes(), path).map_err(err)?;
    Ok(())
}

/// [`notify`], logging a failure instead of returning it.
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("edgestat-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_name_or_a_missing_socket_is_an_error() {
        assert!(matches!(send_to("vsock:2:1234", "READY=1"), Err(NotifyError::Unsupported(_))));
        assert!(matches!(send_to("/nonexistent/notify", "READY=1"), Err(NotifyError::Send { .. })));
    }
}
