/* Data-parallel fine-tuning under MPI with the host's own MPI_Allreduce: every rank loads the
 * model, makes a trainer, hands it a unigrpo_collective whose all_reduce_sum is MPI_Allreduce on
 * MPI_COMM_WORLD, and steps on its own prompts (rank r takes prompts r, r + W, ...). After every
 * step all ranks hold the same parameters; rank 0 prints the stats and exports the model.
 *   mpicc -Iinclude examples/finetune_mpi.c -Ltarget/release -lunigrpo -o finetune_mpi
 *   mpirun -n 2 --bind-to none ./finetune_mpi models/tiny-shapes 5 out-model
 * (as root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unigrpo.h"

/* The collective: an in-place MPI_SUM over the world; non-zero = failure. */
static int32_t mpi_all_reduce(void *user_data, float *buf, size_t n) {
  MPI_Comm comm = *(MPI_Comm *)user_data;
  if (n > (size_t)0x7fffffff) return 1; /* the library sends at most 2^28 floats per call */
  return MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, comm) == MPI_SUCCESS ? 0 : 2;
}

static int32_t redness(void *user_data, const unigrpo_sample *samples, size_t n, float *rewards) {
  (void)user_data;
  for (size_t i = 0; i < n; i++) {
    const unigrpo_image *im = &samples[i].image;
    double sum = 0;
    size_t px = (size_t)im->width * im->height;
    for (size_t k = 0; k < px; k++) {
      const uint8_t *p = im->data + 3 * k;
      sum += (p[0] - (p[1] + p[2]) / 2.0) / 255.0;
    }
    rewards[i] = (float)(sum / px);
  }
  return 0;
}

static int fail(int rank, unigrpo_error *e) {
  fprintf(stderr, "rank %d: error %u: %s\n", rank, (unsigned)unigrpo_error_code(e), unigrpo_error_message(e));
  unigrpo_error_free(e);
  return 1;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const char *dir = argc > 1 ? argv[1] : "models/tiny-shapes";
  int steps = argc > 2 ? atoi(argv[2]) : 5;
  const char *out = argc > 3 ? argv[3] : NULL;
  int rc = 0;

  unigrpo_model *model = NULL;
  unigrpo_trainer *t = NULL;
  unigrpo_error *e = unigrpo_model_load(dir, NULL, &model);
  if (e) {
    rc = fail(rank, e);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  unigrpo_train_params tp;
  unigrpo_train_params_init(model, &tp);
  tp.group_size = 4;
  tp.train_text = false;
  tp.learning_rate = 3e-4f;
  e = unigrpo_trainer_new(model, &tp, &t);
  unigrpo_model_free(model); /* the trainer keeps the model alive */
  if (e) {
    rc = fail(rank, e);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Comm comm = MPI_COMM_WORLD; /* lives until the trainer is freed */
  unigrpo_collective c;
  unigrpo_collective_init(&c);
  c.rank = (uint32_t)rank;
  c.world_size = (uint32_t)world;
  c.all_reduce_sum = mpi_all_reduce;
  c.user_data = &comm;
  if ((e = unigrpo_trainer_set_collective(t, &c))) {
    rc = fail(rank, e);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  /* every rank passes the same number of prompts; the global batch is the ranks' lists in rank
     order */
  static const char *all[] = {"a few warm-coloured shapes", "one or two red shapes", "a red circle",
                              "two red squares"};
  const size_t n_all = sizeof all / sizeof *all;
  const char *mine[4];
  size_t n = 0;
  for (size_t i = (size_t)rank; i < n_all; i += (size_t)world) mine[n++] = all[i];
  if (n * (size_t)world != n_all) {
    if (rank == 0) fprintf(stderr, "run with a world size that divides %zu\n", n_all);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }

  for (int s = 0; s < steps && rc == 0; s++) {
    unigrpo_step_stats st = {.struct_size = sizeof st};
    /* a failure on one rank (its reward, a cancellation) fails the step on every rank alike */
    if ((e = unigrpo_trainer_step(t, mine, n, redness, NULL, NULL, &st))) {
      rc = fail(rank, e);
      break;
    }
    if (rank == 0)
      printf("step %3llu  reward %.3f  loss %+.5f  grad norm %.4f  %.2f s  (%d ranks)\n",
             (unsigned long long)st.step, st.reward_mean, st.loss, st.grad_norm, st.seconds, world);
  }
  if (rc == 0 && rank == 0 && out && (e = unigrpo_trainer_export_model(t, out))) rc = fail(rank, e);
  unigrpo_trainer_free(t);
  MPI_Finalize();
  return rc;
}
