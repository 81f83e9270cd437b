//! The future type of a layer's entry points.
//!
//! Why boxed: an `async fn`'s body is compiled (monomorphized and handed to LLVM) in the crate
//! that first polls it, not the crate that defines it. Without a box at the crate boundary
//! every caller (the binary, and each integration-test binary) compiled the whole async call
//! tree below it again — the sync, the HL7 listener, the server, the simulator — alone, at
//! the end of the build. An entry point that returns [`BoxFuture`] is compiled once, in its
//! own crate, in parallel with the others; callers see only `dyn Future` and still `.await`
//! it. The cost is one allocation and one indirect poll per call of an entry point, which
//! runs for milliseconds to hours.

use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future borrowing for `'a`: what an entry point of a layer returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
