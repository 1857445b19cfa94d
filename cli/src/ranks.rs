//! How one `unigrpo train` process takes part in a run: alone (world 1), or as rank r of W when
//! the binary is built with the `mpi` feature and started by `mpirun` (Open MPI's or MPICH's
//! launcher environment). Rank 0 leads: it holds the run directory's lock and writes every file;
//! the other ranks follow its decisions, which reach them through the same all-reduce as the
//! trainer's (`lead_values`: a sum to which only rank 0 contributes).

use unigrpo::train::{Collective, Local};
use unigrpo::Error;

pub struct Ranks {
    pub rank: u32,
    pub world: u32,
    /// The CLI's own coordination (rank 0's decisions), apart from the trainer's collective.
    coord: Box<dyn Collective>,
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_world::World>,
}

impl Ranks {
    /// One process, or the MPI world when launched by mpirun with the `mpi` feature built in.
    pub fn detect() -> Result<Ranks, Error> {
        #[cfg(feature = "mpi")]
        if mpi_world::launched() {
            let w = mpi_world::World::init()?;
            return Ok(Ranks {
                rank: w.rank(),
                world: w.size(),
                coord: w.collective(),
                mpi: Some(w),
            });
        }
        Ok(Ranks {
            rank: 0,
            world: 1,
            coord: Box::new(Local),
            #[cfg(feature = "mpi")]
            mpi: None,
        })
    }

    pub fn lead(&self) -> bool {
        self.rank == 0
    }

    /// Seconds and calls spent in the MPI all-reduce so far (the trainer's and the CLI's).
    pub fn reduce_time(&self) -> (f64, u64) {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return w.reduce_time();
        }
        (0.0, 0)
    }

    /// The trainer's collective (None in one process).
    pub fn trainer_collective(&self) -> Option<Box<dyn Collective>> {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return Some(w.collective());
        }
        None
    }

    /// Rank 0's `values` on every rank (what the other ranks pass is ignored).
    pub fn lead_values(&mut self, values: &[f32]) -> Result<Vec<f32>, Error> {
        let mut buf = if self.lead() {
            values.to_vec()
        } else {
            vec![0.0; values.len()]
        };
        if self.world > 1 {
            unigrpo::train::collective::reduce(self.coord.as_mut(), &mut buf, "rank 0's decision")?;
        }
        Ok(buf)
    }

    /// Rank 0's yes/no on every rank.
    pub fn lead_says(&mut self, yes: bool) -> Result<bool, Error> {
        Ok(self.lead_values(&[yes as u8 as f32])?[0] != 0.0)
    }

    /// Whether every rank's `ok` is true.
    pub fn all_ok(&mut self, ok: bool) -> Result<bool, Error> {
        let mut buf = [(!ok) as u8 as f32];
        if self.world > 1 {
            unigrpo::train::collective::reduce(
                self.coord.as_mut(),
                &mut buf,
                "the ranks' outcome",
            )?;
        }
        Ok(buf[0] == 0.0)
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use unigrpo::train::Collective;
    use unigrpo::Error;

    /// Whether an MPI launcher started this process (Open MPI, MPICH/Hydra, PMIx).
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    /// MPI initialised for the process (finalised when dropped, after the trainer).
    pub struct World {
        universe: mpi::environment::Universe,
        /// Nanoseconds and calls in MPI_Allreduce, over every collective of this world.
        spent: Arc<(AtomicU64, AtomicU64)>,
    }

    impl World {
        pub fn init() -> Result<World, Error> {
            let universe = mpi::initialize()
                .ok_or_else(|| Error::runtime("MPI could not be initialised (or was already)"))?;
            Ok(World {
                universe,
                spent: Arc::default(),
            })
        }
        pub fn reduce_time(&self) -> (f64, u64) {
            (
                self.spent.0.load(Ordering::Relaxed) as f64 * 1e-9,
                self.spent.1.load(Ordering::Relaxed),
            )
        }
        pub fn rank(&self) -> u32 {
            self.universe.world().rank() as u32
        }
        pub fn size(&self) -> u32 {
            self.universe.world().size() as u32
        }
        pub fn collective(&self) -> Box<dyn Collective> {
            let world = self.universe.world();
            Box::new(Mpi {
                rank: world.rank() as u32,
                size: world.size() as u32,
                world,
                scratch: Vec::new(),
                spent: self.spent.clone(),
            })
        }
    }

    /// MPI_Allreduce(MPI_SUM) over MPI_COMM_WORLD.
    struct Mpi {
        world: SimpleCommunicator,
        rank: u32,
        size: u32,
        scratch: Vec<f32>,
        spent: Arc<(AtomicU64, AtomicU64)>,
    }

    // SAFETY: MPI is initialised with MPI_THREAD_SINGLE semantics and every call is made from the
    // thread that runs `train` (the trainer reduces on its caller's thread); the handle is only
    // moved into the trainer, never used from two threads.
    unsafe impl Send for Mpi {}

    impl Collective for Mpi {
        fn rank(&self) -> u32 {
            self.rank
        }
        fn world_size(&self) -> u32 {
            self.size
        }
        fn all_reduce_sum(&mut self, buf: &mut [f32]) -> unigrpo::Result<()> {
            // MPI's default error handler aborts the job on a communication failure
            let t = std::time::Instant::now();
            self.scratch.clear();
            self.scratch.extend_from_slice(buf);
            self.world
                .all_reduce_into(&self.scratch[..], buf, SystemOperation::sum());
            self.spent
                .0
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.spent.1.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}
