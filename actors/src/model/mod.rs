//! The core model: paths, versions, the clock, events and the LWW rule.

pub mod cursor;
pub mod event;
pub mod layout;
pub mod limits;
pub mod moment;
pub mod path;
pub mod version;

pub use event::{decide, Applied, Digest, Event};
pub use layout::{Covering, Layout, LayoutError, MAX_PARTITIONS};
pub use limits::FieldError;
pub use moment::{format_moment, parse_moment, AsOf, MomentError};
pub use path::{Path, PathError, MAX_PATH_BYTES, MAX_PATH_SEGMENTS};
pub use version::{parse_time, Clock, NodeId, Version, VersionError, MAX_TIME_MICROS};
