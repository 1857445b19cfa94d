/* The version 2 additions of the C API from a real C program: version 1 hosts (exported _init
 * symbols, version-1-sized structs placed right before an inaccessible page, so any read or
 * write past struct_size faults), _sized initialisers, bools read as bytes, the split phases
 * (rollout, rewards later, update) bit-identical to a step, the rollout binding rules, a
 * progress callback cancelling at every stage, learning rates, step count, the collective, the
 * log callback, the process-wide thread pool. Usage: test_api_v2 MODEL_DIR TMP_DIR. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unigrpo.h"

static int passed, failed;
#define CHECK(cond)                                                       \
  do {                                                                    \
    if (cond) {                                                           \
      passed++;                                                           \
    } else {                                                              \
      failed++;                                                           \
      fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                     \
  } while (0)

static void expect(unigrpo_error *e, unigrpo_code code, const char *what) {
  unigrpo_code got = unigrpo_error_code(e);
  if (got != code) {
    failed++;
    fprintf(stderr, "FAILED %s: code %u, expected %u (%s)\n", what, (unsigned)got, (unsigned)code, unigrpo_error_message(e));
  } else {
    passed++;
  }
  unigrpo_error_free(e);
}

/* Version 1 sizes (x86-64): what a host compiled against the version 1 header allocates. */
#define V1_MODEL_OPTIONS 32
#define V1_TRAIN_PARAMS 104
#define V1_STEP_STATS 80

/* `size` bytes that end exactly at an inaccessible page. */
static void *before_guard(size_t size) {
  long page = sysconf(_SC_PAGESIZE);
  char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) abort();
  if (mprotect(p + page, page, PROT_NONE) != 0) abort();
  return p + page - size;
}

static int32_t redness(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)u;
  for (size_t i = 0; i < n; i++) {
    double sum = 0;
    size_t px = (size_t)s[i].image.width * s[i].image.height;
    for (size_t k = 0; k < px; k++) sum += s[i].image.data[3 * k] - (s[i].image.data[3 * k + 1] + s[i].image.data[3 * k + 2]) / 2.0;
    r[i] = (float)(sum / px / 255.0);
  }
  return 0;
}

/* Writes fixed rewards (the ones a remote judge returned) from user_data. */
static int32_t fixed_rewards(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)s;
  memcpy(r, u, n * sizeof *r);
  return 0;
}

/* Returns false at the first report of the stage in *user_data. */
static bool stop_at_stage(void *u, unigrpo_stage stage, uint32_t step, uint32_t total) {
  (void)step; (void)total;
  return stage != *(unigrpo_stage *)u;
}

static int reductions;
static int32_t count_reduce(void *u, float *buf, size_t n) {
  (void)u; (void)buf; (void)n;
  reductions++;
  return 0;
}

static int log_info_seen;
static void on_log(void *u, unigrpo_log_level level, const char *msg) {
  (void)u;
  if (level == UNIGRPO_LOG_INFO && strstr(msg, "loaded tiny-shapes") != NULL) log_info_seen = 1;
}

/* a reward that frees its own trainer (the handle is in user data) */
static int32_t free_own_trainer(void *u, const unigrpo_sample *s, size_t n, float *r) {
  unigrpo_trainer_free((unigrpo_trainer *)u);
  for (size_t i = 0; i < n; i++) r[i] = (float)i;
  (void)s;
  return 0;
}
/* a progress callback that frees the model it reports for, once */
static bool free_own_model(void *u, unigrpo_stage stage, uint32_t step, uint32_t total) {
  unigrpo_model **m = u;
  if (*m != NULL && stage == UNIGRPO_STAGE_DENOISING) {
    unigrpo_model_free(*m);
    *m = NULL;
  }
  (void)step; (void)total;
  return true;
}

static const char *PROMPTS[] = {"two red circles", "a circle the colour of the sky"};

static void small(unigrpo_train_params *p) {
  p->group_size = 2;
  p->num_steps = 2;
  p->max_reasoning_tokens = 6;
  p->seed = 5;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *MODEL = argv[1];
  CHECK(unigrpo_abi_version() >= UNIGRPO_ABI_VERSION && UNIGRPO_ABI_VERSION == 2);

  /* the log callback receives the core's messages */
  unigrpo_set_log_callback(on_log, NULL, UNIGRPO_LOG_INFO);

  /* a version 1 host: exported v1 _init writes exactly the v1 layout, at a guard page */
  unigrpo_model_options *o1 = before_guard(V1_MODEL_OPTIONS);
  (unigrpo_model_options_init)(o1);
  CHECK(o1->struct_size == V1_MODEL_OPTIONS && o1->device == NULL);
  unigrpo_model *m = NULL;
  expect(unigrpo_model_load(MODEL, o1, &m), UNIGRPO_OK, "load with v1 options");
  CHECK(m != NULL && log_info_seen);
  unigrpo_set_log_callback(NULL, NULL, UNIGRPO_LOG_WARN);

  /* the thread pool is the first load's: asking for another fails and names it */
  unigrpo_model_options o;
  unigrpo_model_options_init(&o);
  CHECK(o.struct_size == sizeof o && !o.allow_spinning && o.inter_op_threads == 0);
  o.intra_op_threads = 3;
  unigrpo_model *m2 = NULL;
  unigrpo_error *e = unigrpo_model_load(MODEL, &o, &m2);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_INVALID_ARGUMENT && strstr(unigrpo_error_message(e), "thread pool") != NULL);
  unigrpo_error_free(e);
  o.intra_op_threads = 0;
  o.allow_spinning = true;
  expect(unigrpo_model_load(MODEL, &o, &m2), UNIGRPO_ERR_INVALID_ARGUMENT, "spinning differs from the pool");
  /* a bool byte other than 0 or 1 */
  memset(&o.allow_spinning, 2, 1);
  e = unigrpo_model_load(MODEL, &o, &m2);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_INVALID_ARGUMENT && strstr(unigrpo_error_message(e), "allow_spinning") != NULL);
  unigrpo_error_free(e);

  /* _sized: min(size, own) bytes and struct_size set to that */
  unsigned char raw[512];
  memset(raw, 0xCD, sizeof raw);
  unigrpo_train_params_init_sized(m, (unigrpo_train_params *)raw, 8);
  CHECK(((unigrpo_train_params *)raw)->struct_size == 8 && raw[8] == 0xCD);
  memset(raw, 0xCD, sizeof raw);
  unigrpo_train_params_init_sized(m, (unigrpo_train_params *)raw, sizeof raw);
  CHECK(((unigrpo_train_params *)raw)->struct_size == sizeof(unigrpo_train_params) && raw[sizeof(unigrpo_train_params)] == 0xCD);

  /* a version 1 train params struct and stats at guard pages: trainer, step */
  unigrpo_train_params *tp1 = before_guard(V1_TRAIN_PARAMS);
  (unigrpo_train_params_init)(m, tp1);
  CHECK(tp1->struct_size == V1_TRAIN_PARAMS && tp1->group_size >= 2);
  small(tp1);
  unigrpo_trainer *t1 = NULL;
  expect(unigrpo_trainer_new(m, tp1, &t1), UNIGRPO_OK, "trainer with v1 params");
  unigrpo_step_stats *st1 = before_guard(V1_STEP_STATS);
  memset(st1, 0, V1_STEP_STATS);
  st1->struct_size = V1_STEP_STATS;
  expect(unigrpo_trainer_step(t1, PROMPTS, 2, redness, NULL, NULL, st1), UNIGRPO_OK, "step with v1 stats");
  CHECK(st1->step == 1 && isfinite(st1->loss));
  CHECK(unigrpo_trainer_step_count(t1) == 1 && unigrpo_trainer_step_count(NULL) == 0);
  unigrpo_trainer_free(t1);

  /* version 2 params: invalid text_aggregation, invalid bool */
  unigrpo_train_params tp;
  unigrpo_train_params_init(m, &tp);
  CHECK(tp.struct_size == sizeof tp && tp.text_aggregation == 0 && tp.max_text_drift > 0);
  small(&tp);
  unigrpo_trainer *t = NULL;
  tp.text_aggregation = 7;
  expect(unigrpo_trainer_new(m, &tp, &t), UNIGRPO_ERR_INVALID_ARGUMENT, "text_aggregation 7");
  tp.text_aggregation = 1;
  memset(&tp.train_text, 5, 1);
  e = unigrpo_trainer_new(m, &tp, &t);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_INVALID_ARGUMENT && strstr(unigrpo_error_message(e), "train_text") != NULL);
  unigrpo_error_free(e);
  tp.train_text = true;
  tp.text_aggregation = 0;

  /* split phases against a step with the same rewards */
  unigrpo_trainer *a = NULL, *b = NULL;
  expect(unigrpo_trainer_new(m, &tp, &a), UNIGRPO_OK, "trainer a");
  expect(unigrpo_trainer_new(m, &tp, &b), UNIGRPO_OK, "trainer b");
  unigrpo_rollout *r = NULL;
  expect(unigrpo_trainer_rollout(b, PROMPTS, 2, NULL, &r), UNIGRPO_OK, "rollout");
  size_t n = unigrpo_rollout_size(r);
  CHECK(n == 4 && unigrpo_rollout_size(NULL) == 0);
  unigrpo_sample s3 = unigrpo_rollout_sample(r, 3);
  CHECK(s3.prompt_index == 1 && s3.sample_index == 1 && strcmp(s3.prompt, PROMPTS[1]) == 0 && s3.image.width == 16);
  unigrpo_sample none = unigrpo_rollout_sample(r, 4);
  CHECK(none.prompt == NULL && none.image.data == NULL);
  unigrpo_step_stats sb;
  sb.struct_size = sizeof sb;
  expect(unigrpo_trainer_update(b, r, NULL, &sb), UNIGRPO_ERR_INVALID_ARGUMENT, "update without rewards");
  float judged[4], bad[4];
  unigrpo_sample all[4];
  for (size_t i = 0; i < n; i++) all[i] = unigrpo_rollout_sample(r, i);
  redness(NULL, all, n, judged); /* the "remote judge" */
  expect(unigrpo_rollout_set_rewards(r, judged, 3), UNIGRPO_ERR_INVALID_ARGUMENT, "n mismatch");
  memcpy(bad, judged, sizeof bad);
  bad[2] = INFINITY;
  expect(unigrpo_rollout_set_rewards(r, bad, 4), UNIGRPO_ERR_INVALID_ARGUMENT, "infinite reward");
  for (int i = 0; i < 4; i++) bad[i] = NAN;
  expect(unigrpo_rollout_set_rewards(r, bad, 4), UNIGRPO_ERR_INVALID_ARGUMENT, "no finite reward");
  expect(unigrpo_rollout_set_rewards(r, judged, 4), UNIGRPO_OK, "set rewards");
  /* a cancelled update changes nothing and the rollout can be used again */
  unigrpo_cancel_token *tok = NULL;
  expect(unigrpo_cancel_token_new(&tok), UNIGRPO_OK, "token");
  unigrpo_cancel_token_cancel(tok);
  expect(unigrpo_trainer_update(b, r, tok, &sb), UNIGRPO_ERR_CANCELLED, "cancelled update");
  CHECK(unigrpo_trainer_step_count(b) == 0);
  expect(unigrpo_trainer_update(b, r, NULL, &sb), UNIGRPO_OK, "update");
  unigrpo_step_stats sa;
  sa.struct_size = sizeof sa;
  expect(unigrpo_trainer_step(a, PROMPTS, 2, fixed_rewards, judged, NULL, &sa), UNIGRPO_OK, "step a");
  CHECK(sa.step == 1 && sb.step == 1);
  CHECK(sa.loss == sb.loss && sa.grad_norm == sb.grad_norm && sa.reward_mean == sb.reward_mean &&
        sa.text_grad_norm == sb.text_grad_norm && sa.image_consistency == sb.image_consistency);
  CHECK(sb.image_consistency < 1e-5f && sb.text_consistency < 1e-4f);
  expect(unigrpo_trainer_update(b, r, NULL, &sb), UNIGRPO_ERR_INVALID_ARGUMENT, "update twice");
  expect(unigrpo_rollout_set_rewards(r, judged, 4), UNIGRPO_ERR_INVALID_ARGUMENT, "rewards after use");
  /* next steps agree too (generation fingerprints) */
  unigrpo_generate_params gp;
  unigrpo_generate_params_init(m, &gp);
  unigrpo_generation *ga = NULL, *gb = NULL;
  expect(unigrpo_trainer_generate(a, PROMPTS[0], &gp, NULL, &ga), UNIGRPO_OK, "gen a");
  expect(unigrpo_trainer_generate(b, PROMPTS[0], &gp, NULL, &gb), UNIGRPO_OK, "gen b");
  unigrpo_image ia = unigrpo_generation_image(ga), ib = unigrpo_generation_image(gb);
  CHECK(memcmp(ia.data, ib.data, 16 * 16 * 3) == 0);
  unigrpo_generation_free(ga);
  unigrpo_generation_free(gb);
  /* a stale rollout, another trainer's rollout, a rollout from before a load */
  unigrpo_rollout *ra = NULL, *rb = NULL;
  expect(unigrpo_trainer_rollout(a, PROMPTS, 2, NULL, &ra), UNIGRPO_OK, "rollout a");
  expect(unigrpo_rollout_set_rewards(ra, judged, 4), UNIGRPO_OK, "rewards a");
  e = unigrpo_trainer_update(b, ra, NULL, NULL);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_INVALID_ARGUMENT && strstr(unigrpo_error_message(e), "another trainer") != NULL);
  unigrpo_error_free(e);
  expect(unigrpo_trainer_rollout(b, PROMPTS, 2, NULL, &rb), UNIGRPO_OK, "rollout b");
  expect(unigrpo_rollout_set_rewards(rb, judged, 4), UNIGRPO_OK, "rewards b");
  expect(unigrpo_trainer_step(b, PROMPTS, 2, redness, NULL, NULL, NULL), UNIGRPO_OK, "step b");
  e = unigrpo_trainer_update(b, rb, NULL, NULL);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_INVALID_ARGUMENT && strstr(unigrpo_error_message(e), "step 1") != NULL &&
        strstr(unigrpo_error_message(e), "step 2") != NULL);
  unigrpo_error_free(e);
  char ck[600];
  snprintf(ck, sizeof ck, "%s/v2.ckpt", argv[2]);
  expect(unigrpo_trainer_save(b, ck), UNIGRPO_OK, "save");
  unigrpo_rollout_free(rb);
  expect(unigrpo_trainer_rollout(b, PROMPTS, 2, NULL, &rb), UNIGRPO_OK, "rollout b again");
  expect(unigrpo_rollout_set_rewards(rb, judged, 4), UNIGRPO_OK, "rewards b again");
  expect(unigrpo_trainer_load(b, ck), UNIGRPO_OK, "load");
  expect(unigrpo_trainer_update(b, rb, NULL, NULL), UNIGRPO_ERR_INVALID_ARGUMENT, "rollout from before a load");
  unigrpo_rollout_free(rb);

  /* learning rates */
  expect(unigrpo_trainer_set_learning_rate(b, -1.0f, 0.0f), UNIGRPO_ERR_INVALID_ARGUMENT, "negative rate");
  expect(unigrpo_trainer_set_learning_rate(b, NAN, 0.0f), UNIGRPO_ERR_INVALID_ARGUMENT, "NaN rate");
  expect(unigrpo_trainer_set_learning_rate(b, 0.0f, 2e-4f), UNIGRPO_OK, "set rate");
  expect(unigrpo_trainer_set_learning_rate(NULL, 0.0f, 0.0f), UNIGRPO_ERR_NULL_ARGUMENT, "NULL trainer");

  /* the collective: world 1 never reduces (data-parallel worlds: tests/c/test_collective.c);
     set it before the first rollout only */
  unigrpo_collective c;
  unigrpo_collective_init(&c);
  CHECK(c.struct_size == sizeof c && c.rank == 0 && c.world_size == 1 && c.all_reduce_sum == NULL);
  unigrpo_trainer *tc = NULL;
  expect(unigrpo_trainer_new(m, &tp, &tc), UNIGRPO_OK, "trainer c");
  c.all_reduce_sum = count_reduce;
  c.world_size = 2;
  c.all_reduce_sum = NULL;
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_ERR_INVALID_ARGUMENT, "world 2 without a function");
  c.all_reduce_sum = count_reduce;
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_OK, "world 2");
  c.world_size = 1;
  c.rank = 1;
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_ERR_INVALID_ARGUMENT, "rank 1 of 1");
  c.rank = 0;
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_OK, "world 1");
  expect(unigrpo_trainer_set_collective(tc, NULL), UNIGRPO_OK, "NULL collective");
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_OK, "world 1 again");

  /* a progress callback returning false at each stage cancels the step, which changes nothing */
  unigrpo_stage stages[] = {UNIGRPO_STAGE_REASONING, UNIGRPO_STAGE_DENOISING, UNIGRPO_STAGE_DECODING,
                            UNIGRPO_STAGE_REWARD, UNIGRPO_STAGE_BACKWARD, UNIGRPO_STAGE_OPTIMIZER};
  for (size_t k = 0; k < sizeof stages / sizeof *stages; k++) {
    unigrpo_stage stop = stages[k];
    unigrpo_train_params q = tp;
    q.progress = stop_at_stage;
    q.progress_user_data = &stop;
    unigrpo_trainer *tq = NULL;
    expect(unigrpo_trainer_new(m, &q, &tq), UNIGRPO_OK, "trainer q");
    expect(unigrpo_trainer_step(tq, PROMPTS, 2, redness, NULL, NULL, NULL), UNIGRPO_ERR_CANCELLED, "cancel at a stage");
    CHECK(unigrpo_trainer_step_count(tq) == 0);
    unigrpo_trainer_free(tq);
    if (stop <= UNIGRPO_STAGE_DECODING) {
      unigrpo_generate_params g2 = gp;
      g2.progress = stop_at_stage;
      g2.progress_user_data = &stop;
      unigrpo_generation *gg = NULL;
      expect(unigrpo_generate(m, PROMPTS[0], &g2, NULL, &gg), UNIGRPO_ERR_CANCELLED, "generation cancelled at a stage");
      CHECK(gg == NULL);
    }
  }
  expect(unigrpo_trainer_step(tc, PROMPTS, 2, redness, NULL, NULL, NULL), UNIGRPO_OK, "step with world 1");
  CHECK(reductions == 0);
  expect(unigrpo_trainer_set_collective(tc, &c), UNIGRPO_ERR_INVALID_ARGUMENT, "collective after a step");

  /* freeing an object from its own callback: deferred, the call is cancelled and changes
     nothing, the object is freed when the call returns (no use after free under ASan) */
  {
    size_t live = unigrpo_debug_live_objects();
    unigrpo_train_params fp;
    unigrpo_train_params_init(m, &fp);
    small(&fp);
    unigrpo_trainer *tf = NULL;
    expect(unigrpo_trainer_new(m, &fp, &tf), UNIGRPO_OK, "trainer to free from its reward");
    expect(unigrpo_trainer_step(tf, PROMPTS, 2, free_own_trainer, tf, NULL, NULL), UNIGRPO_ERR_CANCELLED,
           "a reward that frees its own trainer");
    CHECK(unigrpo_debug_live_objects() == live);
    unigrpo_model *m2 = NULL;
    expect(unigrpo_model_load(MODEL, NULL, &m2), UNIGRPO_OK, "second model handle");
    unigrpo_generate_params g3;
    unigrpo_generate_params_init(m2, &g3);
    g3.progress = free_own_model;
    g3.progress_user_data = &m2;
    unigrpo_generation *gf = NULL;
    expect(unigrpo_generate(m2, PROMPTS[0], &g3, NULL, &gf), UNIGRPO_ERR_CANCELLED,
           "a progress callback that frees its own model");
    CHECK(gf == NULL && m2 == NULL && unigrpo_debug_live_objects() == live);
  }

  /* a rollout outlives its trainer and model */
  unigrpo_trainer_free(a);
  unigrpo_trainer_free(b);
  unigrpo_trainer_free(tc);
  unigrpo_model_free(m);
  unigrpo_sample late = unigrpo_rollout_sample(ra, 2);
  CHECK(late.prompt != NULL && strcmp(late.prompt, PROMPTS[1]) == 0 && late.image.width == 16 && late.image.data != NULL);
  unigrpo_rollout_free(ra);
  unigrpo_rollout_free(r);
  unigrpo_rollout_free(NULL);
  unigrpo_cancel_token_free(tok);
  CHECK(unigrpo_debug_live_objects() == 0);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
