//! Spread as a library: embed a node ([`Node`]) with no HTTP in between, or
//! serve one ([`web::server`]). See the README for the tour.
//!
//! ```
//! # actix::System::new().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let node = spread::Node::open(spread::Config::new(dir.path())).unwrap();
//! node.set("greeting", "hello").await.unwrap();
//! let value = node.get("greeting").unwrap().unwrap().event.value.unwrap();
//! assert_eq!(&value[..], b"hello");
//! # });
//! ```

pub use spread_actors::*;
/// The HTTP surface.
pub use spread_web as web;
