//! Data-parallel training through the host's own collective (MPI_Allreduce, NCCL, a thread
//! barrier, ...). This release runs world size 1 only: a larger world is refused with a clear
//! error; with world size 1 the library never calls `all_reduce_sum`.

use std::ffi::c_void;

use super::layout::{fields, Field};
use super::trainer::trainer_mut;
use super::{guard, init_sized, quiet, read_struct, unigrpo_error, unigrpo_trainer};
use unigrpo::error::{Error, ErrorKind, Result};

/// In place: `buf` becomes the element-wise sum over all ranks, the same on every rank;
/// non-zero = failure. `buf` is the library's host memory, valid during the call.
pub type unigrpo_all_reduce_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, buf: *mut f32, n: usize) -> i32>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_collective {
    pub struct_size: u32,
    /// 0 <= rank < world_size.
    pub rank: u32,
    pub world_size: u32,
    pub all_reduce_sum: unigrpo_all_reduce_fn,
    pub user_data: *mut c_void,
}

fn collective_fields() -> Vec<Field> {
    fields!(unigrpo_collective: struct_size, rank, world_size, all_reduce_sum, user_data)
}

fn default_collective() -> unigrpo_collective {
    unigrpo_collective {
        struct_size: std::mem::size_of::<unigrpo_collective>() as u32,
        rank: 0,
        world_size: 1,
        all_reduce_sum: None,
        user_data: std::ptr::null_mut(),
    }
}

/// Rank 0, world 1, no function: write `min(size, sizeof(unigrpo_collective))` bytes and set
/// `struct_size` to that. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_collective_init_sized(c: *mut unigrpo_collective, size: usize) {
    // SAFETY: the host owns `size` writable bytes at `c` (or NULL, ignored).
    quiet((), || unsafe { init_sized(c, default_collective(), size) })
}

/// The host's collective as the core's.
struct CCollective {
    c: unigrpo_collective,
}

// SAFETY: the contract makes the host's user_data and function usable from the trainer's thread
// (a trainer is used by one thread at a time).
unsafe impl Send for CCollective {}

impl unigrpo::train::Collective for CCollective {
    fn rank(&self) -> u32 {
        self.c.rank
    }
    fn world_size(&self) -> u32 {
        self.c.world_size
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let f = self
            .c
            .all_reduce_sum
            .ok_or_else(|| Error::invalid("the collective has no all_reduce_sum function"))?;
        // SAFETY: the host's function with its user_data; `buf` is valid for the call.
        let rc = unsafe { f(self.c.user_data, buf.as_mut_ptr(), buf.len()) };
        if rc != 0 {
            return Err(Error::new(
                ErrorKind::Callback,
                format!("all_reduce_sum returned {rc}"),
            ));
        }
        Ok(())
    }
}

/// Use the host's collective (copied; `user_data` must live until the trainer is freed); set
/// before the trainer's first rollout or step. NULL or world_size 1 = single process; with
/// world_size > 1 every step reduces through `all_reduce_sum` (the data-parallel rules of the
/// header and docs/training.md).
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_set_collective(
    t: *mut unigrpo_trainer,
    c: *const unigrpo_collective,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument.
        let t = unsafe { trainer_mut(t, "unigrpo_trainer_set_collective") }?;
        let c = if c.is_null() {
            default_collective()
        } else {
            // SAFETY: a non-NULL versioned struct; read_struct reads only its struct_size bytes.
            unsafe {
                read_struct(
                    c,
                    default_collective(),
                    &collective_fields(),
                    "unigrpo_collective",
                )
            }?
        };
        if c.world_size == 0 {
            return Err(Error::invalid("unigrpo_collective.world_size is 0"));
        }
        if c.world_size > 1 && c.all_reduce_sum.is_none() {
            return Err(Error::invalid(
                "unigrpo_collective.all_reduce_sum is NULL with world_size > 1",
            ));
        }
        t.inner.set_collective(Box::new(CCollective { c }))
    })
}
