/* Data-parallel training through the C collective: two trainers in two threads of one process,
 * rank 0 and rank 1 of 2, whose all_reduce_sum is a pthread-barrier sum over shared memory (what
 * a host's MPI_Allreduce does across processes). Checks the contract of c-api.md: after every
 * step both ranks hold bit-identical parameters (same generations) and identical stats (but
 * `seconds`); a reward that fails on one rank fails the step on both and changes nothing; a
 * cancelled step on one rank is cancelled on both; a failing all_reduce_sum is CALLBACK.
 * Usage: test_collective MODEL_DIR TMP_DIR. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unigrpo.h"

static int passed, failed;
static pthread_mutex_t check_mu = PTHREAD_MUTEX_INITIALIZER;
/* the condition is evaluated before the lock: it may be a whole step, which waits for the
   other rank inside its reductions */
#define CHECK(cond)                                                         \
  do {                                                                      \
    int ok_ = (cond);                                                       \
    pthread_mutex_lock(&check_mu);                                          \
    if (ok_) {                                                              \
      passed++;                                                             \
    } else {                                                                \
      failed++;                                                             \
      fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                       \
    pthread_mutex_unlock(&check_mu);                                        \
  } while (0)

static unigrpo_code code_of(unigrpo_error *e, const char *what, int rank) {
  unigrpo_code c = unigrpo_error_code(e);
  if (c != UNIGRPO_OK) fprintf(stderr, "rank %d, %s: %s\n", rank, what, unigrpo_error_message(e));
  unigrpo_error_free(e);
  return c;
}

/* ---- a two-rank all-reduce over shared memory (a barrier sum) */
typedef struct {
  pthread_barrier_t bar;
  pthread_mutex_t mu;
  float *sum;
  size_t n;
} world_t;

typedef struct {
  world_t *w;
  int rank;
  int fail; /* makes the next all_reduce_sum return an error */
} rank_ctx;

static int32_t barrier_all_reduce(void *user_data, float *buf, size_t n) {
  rank_ctx *c = user_data;
  world_t *w = c->w;
  pthread_barrier_wait(&w->bar); /* everyone is done with the previous sum */
  if (c->rank == 0) {
    free(w->sum);
    w->sum = calloc(n ? n : 1, sizeof(float));
    w->n = n;
  }
  pthread_barrier_wait(&w->bar);
  pthread_mutex_lock(&w->mu);
  int same = (w->n == n);
  if (same)
    for (size_t i = 0; i < n; i++) w->sum[i] += buf[i];
  pthread_mutex_unlock(&w->mu);
  pthread_barrier_wait(&w->bar);
  if (!same) return 2;
  memcpy(buf, w->sum, n * sizeof(float));
  if (c->fail) {
    c->fail = 0;
    return 7;
  }
  return 0;
}

/* ---- rewards */
static int32_t redness(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)u;
  for (size_t i = 0; i < n; i++) {
    double sum = 0;
    size_t px = (size_t)s[i].image.width * s[i].image.height;
    for (size_t k = 0; k < px; k++)
      sum += s[i].image.data[3 * k] - (s[i].image.data[3 * k + 1] + s[i].image.data[3 * k + 2]) / 2.0;
    r[i] = (float)(sum / px / 255.0);
  }
  return 0;
}
static int32_t failing_reward(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)u; (void)s; (void)n; (void)r;
  return 3;
}

static const char *PROMPTS[] = {"two red circles", "a circle the colour of the sky"};
static unigrpo_model *M;

typedef struct {
  rank_ctx ctx;
  unigrpo_step_stats stats[3];
  char reasoning[256];
  unsigned char pixels[16 * 16 * 3];
  unigrpo_code failed_reward, cancelled, failed_reduce;
  uint64_t steps_after_failures;
} rank_out;

static void *run_rank(void *arg) {
  rank_out *o = arg;
  int rank = o->ctx.rank;
  unigrpo_train_params tp;
  unigrpo_train_params_init(M, &tp);
  tp.group_size = 2;
  tp.num_steps = 2;
  tp.max_reasoning_tokens = 6;
  tp.seed = 5;
  unigrpo_trainer *t = NULL;
  if (code_of(unigrpo_trainer_new(M, &tp, &t), "trainer_new", rank) != UNIGRPO_OK) return NULL;
  unigrpo_collective c;
  unigrpo_collective_init(&c);
  c.rank = (uint32_t)rank;
  c.world_size = 2;
  c.all_reduce_sum = barrier_all_reduce;
  c.user_data = &o->ctx;
  CHECK(code_of(unigrpo_trainer_set_collective(t, &c), "set_collective", rank) == UNIGRPO_OK);
  const char *mine[] = {PROMPTS[rank]};
  for (int s = 0; s < 2; s++) {
    o->stats[s].struct_size = sizeof o->stats[s];
    CHECK(code_of(unigrpo_trainer_step(t, mine, 1, redness, NULL, NULL, &o->stats[s]), "step", rank) == UNIGRPO_OK);
  }
  /* rank 1's reward fails: both ranks fail the step */
  o->failed_reward = unigrpo_error_code(NULL);
  {
    unigrpo_error *e = unigrpo_trainer_step(t, mine, 1, rank == 1 ? failing_reward : redness, NULL, NULL, NULL);
    o->failed_reward = unigrpo_error_code(e);
    unigrpo_error_free(e);
  }
  /* rank 0 is cancelled: both ranks are */
  {
    unigrpo_cancel_token *tok = NULL;
    CHECK(code_of(unigrpo_cancel_token_new(&tok), "cancel_token_new", rank) == UNIGRPO_OK);
    if (rank == 0) unigrpo_cancel_token_cancel(tok);
    unigrpo_error *e = unigrpo_trainer_step(t, mine, 1, redness, NULL, tok, NULL);
    o->cancelled = unigrpo_error_code(e);
    unigrpo_error_free(e);
    unigrpo_cancel_token_free(tok);
  }
  o->steps_after_failures = unigrpo_trainer_step_count(t);
  /* the next step works on both */
  o->stats[2].struct_size = sizeof o->stats[2];
  CHECK(code_of(unigrpo_trainer_step(t, mine, 1, redness, NULL, NULL, &o->stats[2]), "step 3", rank) == UNIGRPO_OK);
  /* what the parameters draw */
  unigrpo_generate_params gp;
  unigrpo_generate_params_init(M, &gp);
  gp.seed = 42;
  unigrpo_generation *g = NULL;
  CHECK(code_of(unigrpo_trainer_generate(t, "a few warm-coloured shapes", &gp, NULL, &g), "generate", rank) == UNIGRPO_OK);
  if (g) {
    snprintf(o->reasoning, sizeof o->reasoning, "%s", unigrpo_generation_reasoning(g));
    memcpy(o->pixels, unigrpo_generation_image(g).data, sizeof o->pixels);
    unigrpo_generation_free(g);
  }
  /* a failing all_reduce_sum (the host's collective) is CALLBACK */
  o->ctx.fail = 1;
  {
    unigrpo_error *e = unigrpo_trainer_step(t, mine, 1, redness, NULL, NULL, NULL);
    o->failed_reduce = unigrpo_error_code(e);
    unigrpo_error_free(e);
  }
  unigrpo_trainer_free(t);
  return NULL;
}

/* Every field but the wall time, one by one: memcmp over the struct would also compare its
   padding, whose bytes are indeterminate (it failed for equal fields). */
static int same_stats(const unigrpo_step_stats *a, const unigrpo_step_stats *b) {
#define SAME(f)                                                                            \
  if (a->f != b->f) {                                                                    \
    fprintf(stderr, "step %llu: %s differs: %.9g vs %.9g\n", (unsigned long long)a->step, #f, \
            (double)a->f, (double)b->f);                                                 \
    return 0;                                                                            \
  }
  SAME(struct_size) SAME(step) SAME(reward_mean) SAME(reward_std) SAME(frac_zero_std)
  SAME(loss) SAME(text_loss) SAME(image_loss) SAME(velocity_mse) SAME(text_kl) SAME(image_kl)
  SAME(text_clip_frac) SAME(image_clip_frac) SAME(approx_kl) SAME(grad_norm)
  SAME(text_grad_norm) SAME(image_grad_norm) SAME(text_consistency) SAME(image_consistency)
  SAME(shared_grad_norm) SAME(velocity_mse_weight) SAME(resampled_groups)
#undef SAME
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_collective MODEL_DIR TMP_DIR\n");
    return 2;
  }
  unigrpo_error *e = unigrpo_model_load(argv[1], NULL, &M);
  if (unigrpo_error_code(e) != UNIGRPO_OK) {
    fprintf(stderr, "load: %s\n", unigrpo_error_message(e));
    return 1;
  }
  world_t w = {.sum = NULL, .n = 0};
  pthread_barrier_init(&w.bar, NULL, 2);
  pthread_mutex_init(&w.mu, NULL);
  rank_out out[2];
  memset(out, 0, sizeof out);
  pthread_t th[2];
  for (int r = 0; r < 2; r++) {
    out[r].ctx.w = &w;
    out[r].ctx.rank = r;
    pthread_create(&th[r], NULL, run_rank, &out[r]);
  }
  for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);

  for (int s = 0; s < 3; s++) CHECK(same_stats(&out[0].stats[s], &out[1].stats[s]));
  CHECK(out[0].stats[1].step == 2 && out[0].stats[2].step == 3);
  CHECK(out[0].stats[0].loss != 0 || out[0].stats[0].grad_norm > 0);
  CHECK(strcmp(out[0].reasoning, out[1].reasoning) == 0 && out[0].reasoning[0] != 0);
  CHECK(memcmp(out[0].pixels, out[1].pixels, sizeof out[0].pixels) == 0);
  for (int r = 0; r < 2; r++) {
    CHECK(out[r].failed_reward == UNIGRPO_ERR_CALLBACK);
    CHECK(out[r].cancelled == UNIGRPO_ERR_CANCELLED);
    CHECK(out[r].steps_after_failures == 2);
    CHECK(out[r].failed_reduce == UNIGRPO_ERR_CALLBACK);
  }
  free(w.sum);
  pthread_barrier_destroy(&w.bar);
  pthread_mutex_destroy(&w.mu);
  unigrpo_model_free(M);
  CHECK(unigrpo_debug_live_objects() == 0);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
