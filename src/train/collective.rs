//! The seam for data-parallel training: a collective that sums buffers over ranks. A trainer
//! with the local collective (world size 1) never reduces anything; with W > 1 ranks every
//! trainer step makes the same sequence of reductions on every rank (docs/training.md,
//! "Data-parallel training"). `InProcess` is a collective over threads of one process (ranks as
//! threads, and the tests' reference for what a host's MPI or NCCL collective must do).

use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};

/// An all-reduce over the ranks of a data-parallel run.
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

/// The most floats one `all_reduce_sum` call is given (the C contract's bound).
pub const MAX_REDUCE_LEN: usize = 1 << 28;

/// Sum `buf` over the ranks in calls of at most MAX_REDUCE_LEN floats; a failure of the
/// collective is a callback error naming what was being reduced.
pub fn reduce(c: &mut dyn Collective, buf: &mut [f32], what: &str) -> Result<()> {
    for chunk in buf.chunks_mut(MAX_REDUCE_LEN) {
        c.all_reduce_sum(chunk).map_err(|e| {
            Error::new(
                ErrorKind::Callback,
                format!("the collective's all-reduce of {what} failed: {e}"),
            )
        })?;
    }
    Ok(())
}

/// A collective over the threads of one process: `InProcess::world(W)` gives one handle per
/// rank, each to be moved to its own thread. A reduction waits until every rank has added its
/// buffer, then every rank reads the same sum (added in rank order, so bit-identical on all).
pub struct InProcess {
    rank: u32,
    shared: Arc<Shared>,
}

struct Shared {
    world: u32,
    state: Mutex<Round>,
    cv: Condvar,
}

#[derive(Default)]
struct Round {
    /// Counts completed reductions, so a rank that races ahead waits for the next one.
    generation: u64,
    /// The buffers of the current reduction by rank, then their sum.
    parts: Vec<Option<Vec<f32>>>,
    sum: Option<Arc<Vec<f32>>>,
    /// Ranks that have read the current sum.
    read: u32,
}

impl InProcess {
    pub fn world(world: u32) -> Vec<InProcess> {
        let shared = Arc::new(Shared {
            world,
            state: Mutex::new(Round {
                parts: vec![None; world as usize],
                ..Round::default()
            }),
            cv: Condvar::new(),
        });
        (0..world)
            .map(|rank| InProcess {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Collective for InProcess {
    fn rank(&self) -> u32 {
        self.rank
    }
    fn world_size(&self) -> u32 {
        self.shared.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let s = &self.shared;
        let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
        // wait until the previous reduction's sum has been read by every rank
        while st.sum.is_some() {
            st = s.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let gen = st.generation;
        st.parts[self.rank as usize] = Some(buf.to_vec());
        if st.parts.iter().all(Option::is_some) {
            let parts: Vec<Vec<f32>> = st.parts.iter_mut().map(|p| p.take().unwrap()).collect();
            if parts.iter().any(|p| p.len() != buf.len()) {
                st.sum = Some(Arc::new(Vec::new()));
            } else {
                let mut sum = vec![0f32; buf.len()];
                for p in &parts {
                    for (a, b) in sum.iter_mut().zip(p) {
                        *a += b;
                    }
                }
                st.sum = Some(Arc::new(sum));
            }
            s.cv.notify_all();
        }
        while st.generation == gen && st.sum.is_none() {
            st = s.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let sum = st.sum.clone().expect("the sum of this generation");
        st.read += 1;
        if st.read == s.world {
            st.read = 0;
            st.sum = None;
            st.generation += 1;
            s.cv.notify_all();
        }
        drop(st);
        if sum.len() != buf.len() {
            return Err(Error::invalid(format!(
                "the ranks reduced buffers of different lengths (this rank {})",
                buf.len()
            )));
        }
        buf.copy_from_slice(&sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_sums_over_threads_in_rank_order() {
        let handles: Vec<_> = InProcess::world(3)
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut out = vec![];
                    for round in 0..50u32 {
                        let mut b = vec![c.rank() as f32 + round as f32, 1.0];
                        c.all_reduce_sum(&mut b).unwrap();
                        out.push(b);
                    }
                    out
                })
            })
            .collect();
        let results: Vec<Vec<Vec<f32>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (round, want) in (0..50u32).map(|r| (r, vec![3.0 + 3.0 * r as f32, 3.0])) {
            for rank in &results {
                assert_eq!(rank[round as usize], want);
            }
        }
    }

    #[test]
    fn reduce_names_what_failed() {
        struct Failing;
        impl Collective for Failing {
            fn rank(&self) -> u32 {
                0
            }
            fn world_size(&self) -> u32 {
                2
            }
            fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
                Err(Error::runtime("link down"))
            }
        }
        let e = reduce(&mut Failing, &mut [1.0], "the gradient").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Callback);
        assert!(
            e.to_string().contains("the gradient failed: link down"),
            "{e}"
        );
    }
}
