//! The seam for data-parallel training: a collective that sums buffers over processes. A
//! trainer with the local collective (world size 1) never reduces anything. Data-parallel
//! semantics (world size > 1) are not implemented in this release: a trainer refuses such a
//! collective with a clear error.

use crate::error::Result;

/// An all-reduce over the processes of a data-parallel run.
pub trait Collective: Send {
    fn rank(&self) -> u32;
    fn world_size(&self) -> u32;
    /// In place: `buf` becomes the element-wise sum over all ranks, the same on every rank.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
}

/// One process: rank 0 of 1; a reduction is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> u32 {
        0
    }
    fn world_size(&self) -> u32 {
        1
    }
    fn all_reduce_sum(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
}
