//! The TCP socket under a request: the connection callback records its file
//! descriptor, and a stream (SSE, WebSocket) bounds the socket's kernel send
//! buffer, so that a client that stops reading is noticed after a bounded
//! amount of data instead of after the kernel's autotuned buffers (up to
//! 4 MiB per socket by default) have filled.
//!
//! What a stalled stream may hold, end to end: its outbox
//! (`--subscriber-queue-items` / `-bytes`), actix's write buffer (32 KiB),
//! this send buffer (the kernel doubles the value set) and the client's
//! receive buffer, which only grows while the client reads. Past that the
//! outbox fills and the session is cut as lagging (counted in
//! `spread_subscribers_lagged_total`).

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;

/// The descriptor of a connection's TCP socket, kept in its connection data.
#[derive(Clone, Copy, Debug)]
struct ConnectionFd(RawFd);

/// Records the TCP socket of a new connection, plain or TLS (the connection
/// callback's argument).
pub fn record(connection: &dyn Any, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;
    let fd = if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        tcp.as_raw_fd()
    } else if let Some(tls) = connection.downcast_ref::<Tls>() {
        tls.get_ref().0.as_raw_fd()
    } else {
        return;
    };
    data.insert(ConnectionFd(fd));
}

/// Sets the send buffer of the socket `req` came on to `bytes` (0: leave
/// the kernel's autotuning). True if it was set.
pub fn bound_send_buffer(req: &HttpRequest, bytes: usize) -> bool {
    if bytes == 0 {
        return false;
    }
    let Some(ConnectionFd(fd)) = req.conn_data::<ConnectionFd>().copied() else {
        return false;
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is the socket of the connection this request is being
    // served on; the connection (and so the descriptor) stays open at least
    // as long as its request's handler runs, which is where this is called.
    // setsockopt reads `value` only, for the length given.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        log::debug!(
            "setting SO_SNDBUF on a stream failed: {}",
            std::io::Error::last_os_error()
        );
    }
    done == 0
}
