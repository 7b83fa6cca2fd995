//! The bytes of an upgraded connection (a WebSocket) as the socket's reader
//! takes them: the connection's end is the end of the stream, not an error.
//!
//! actix-http reports a connection that ends under an upgraded request as a
//! payload error, and actix-web-actors returns a payload error before it
//! decodes the bytes that came with it: frames a peer sent just before it
//! closed its side (a refusal, then the close) were lost, and the socket
//! was logged as broken instead of closed.

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::{future, Stream, StreamExt};

/// `payload`, ending where the connection ended; other errors pass.
pub fn ending_at_eof(
    payload: impl Stream<Item = Result<Bytes, PayloadError>>,
) -> impl Stream<Item = Result<Bytes, PayloadError>> {
    payload.take_while(|item| future::ready(!matches!(item, Err(PayloadError::Incomplete(None)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn the_end_of_the_connection_ends_the_stream_and_other_errors_pass() {
        let chunks = vec![
            Ok(Bytes::from_static(b"frame")),
            Err(PayloadError::Incomplete(None)),
            Ok(Bytes::from_static(b"never")),
        ];
        let read: Vec<_> = ending_at_eof(futures_util::stream::iter(chunks))
            .collect()
            .await;
        assert_eq!(read.len(), 1);
        assert!(matches!(&read[0], Ok(b) if &b[..] == b"frame"));
        let failed = vec![Err(PayloadError::Overflow), Ok(Bytes::from_static(b"x"))];
        let read: Vec<_> = ending_at_eof(futures_util::stream::iter(failed))
            .collect()
            .await;
        assert_eq!(read.len(), 2);
        assert!(matches!(read[0], Err(PayloadError::Overflow)));
    }
}
