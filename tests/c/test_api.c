/* The C API from a real C program: NULLs, UTF-8, struct sizes, generation, batches, cancellation
 * (callback, before the call, from another thread), training with a C reward, failures that must
 * change nothing, re-entrant callbacks, concurrent generation, checkpoints, export, lifetimes, and
 * the live-object count. Usage: test_api MODEL_DIR TMP_DIR. Prints "N passed, M failed". */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unigrpo.h"

static int passed, failed;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) {                                                            \
      passed++;                                                            \
    } else {                                                               \
      failed++;                                                            \
      fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
    }                                                                      \
  } while (0)

/* Expect `e` to carry `code`; frees it. */
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

static const char *MODEL;
static char TMP[512];

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
static int32_t reward_fails(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)u; (void)s; (void)n; (void)r;
  return 3;
}
static int32_t reward_all_nan(void *u, const unigrpo_sample *s, size_t n, float *r) {
  (void)u; (void)s;
  for (size_t i = 0; i < n; i++) r[i] = NAN;
  return 0;
}
static int32_t reward_infinite(void *u, const unigrpo_sample *s, size_t n, float *r) {
  redness(u, s, n, r);
  r[0] = INFINITY;
  return 0;
}
/* re-enters its own trainer: must get INVALID_ARGUMENT */
static unigrpo_code reentry_code;
static int32_t reward_reenters(void *u, const unigrpo_sample *s, size_t n, float *r) {
  char path[600];
  snprintf(path, sizeof path, "%s/reentry.ckpt", TMP);
  unigrpo_error *e = unigrpo_trainer_save((const unigrpo_trainer *)u, path);
  reentry_code = unigrpo_error_code(e);
  unigrpo_error_free(e);
  return redness(NULL, s, n, r);
}
static bool stop_at_denoise_2(void *u, unigrpo_stage stage, uint32_t step, uint32_t total) {
  (void)u; (void)total;
  return !(stage == UNIGRPO_STAGE_DENOISING && step == 2);
}
static unigrpo_code progress_reentry_code;
static bool progress_reenters(void *u, unigrpo_stage stage, uint32_t step, uint32_t total) {
  (void)stage; (void)step; (void)total;
  unigrpo_generation *g = NULL;
  unigrpo_error *e = unigrpo_generate((unigrpo_model *)u, "a red circle", NULL, NULL, &g);
  progress_reentry_code = unigrpo_error_code(e);
  unigrpo_error_free(e);
  unigrpo_generation_free(g);
  return true;
}

struct gen_job {
  unigrpo_model *m;
  uint64_t seed;
  char reasoning[256];
  uint8_t pixels[16 * 16 * 3];
  unigrpo_code code;
};
static void *gen_thread(void *arg) {
  struct gen_job *j = arg;
  unigrpo_generate_params p;
  unigrpo_generate_params_init(j->m, &p);
  p.seed = j->seed;
  p.noise_level = 0.5f;
  unigrpo_generation *g = NULL;
  unigrpo_error *e = unigrpo_generate(j->m, "a few warm-coloured shapes", &p, NULL, &g);
  j->code = unigrpo_error_code(e);
  unigrpo_error_free(e);
  if (g) {
    snprintf(j->reasoning, sizeof j->reasoning, "%s", unigrpo_generation_reasoning(g));
    memcpy(j->pixels, unigrpo_generation_image(g).data, sizeof j->pixels);
    unigrpo_generation_free(g);
  }
  return NULL;
}

struct canceller {
  const unigrpo_cancel_token *t;
  unsigned usec;
};
static void *cancel_later(void *arg) {
  struct canceller *c = arg;
  usleep(c->usec);
  unigrpo_cancel_token_cancel(c->t);
  return NULL;
}

/* trainer-generated image and reasoning for a fixed seed: a fingerprint of its parameters */
static void fingerprint(unigrpo_trainer *t, unigrpo_model *m, char *reasoning, uint8_t *pixels) {
  unigrpo_generate_params p;
  unigrpo_generate_params_init(m, &p);
  p.seed = 42;
  unigrpo_generation *g = NULL;
  expect(unigrpo_trainer_generate(t, "a few warm-coloured shapes", &p, NULL, &g), UNIGRPO_OK, "trainer_generate");
  snprintf(reasoning, 256, "%s", unigrpo_generation_reasoning(g));
  memcpy(pixels, unigrpo_generation_image(g).data, 16 * 16 * 3);
  unigrpo_generation_free(g);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_api MODEL_DIR TMP_DIR\n");
    return 2;
  }
  MODEL = argv[1];
  snprintf(TMP, sizeof TMP, "%s", argv[2]);
  const char bad_utf8[] = {'a', ' ', (char)0xff, (char)0xfe, 0};

  /* ---- functions without an error object are NULL-safe */
  CHECK(unigrpo_abi_version() == UNIGRPO_ABI_VERSION);
  CHECK(strncmp(unigrpo_version(), "unigrpo ", 8) == 0);
  CHECK(unigrpo_error_code(NULL) == UNIGRPO_OK);
  CHECK(strcmp(unigrpo_error_message(NULL), "") == 0);
  unigrpo_error_free(NULL);
  unigrpo_model_free(NULL);
  unigrpo_generation_free(NULL);
  unigrpo_trainer_free(NULL);
  unigrpo_cancel_token_free(NULL);
  unigrpo_cancel_token_cancel(NULL);
  unigrpo_cancel_token_reset(NULL);
  unigrpo_model_options_init(NULL);
  unigrpo_generate_params_init(NULL, NULL);
  unigrpo_train_params_init(NULL, NULL);
  CHECK(strcmp(unigrpo_model_device(NULL), "") == 0);
  CHECK(strcmp(unigrpo_model_info(NULL), "") == 0);
  CHECK(strcmp(unigrpo_generation_reasoning(NULL), "") == 0);
  unigrpo_image zero = unigrpo_generation_image(NULL);
  CHECK(zero.width == 0 && zero.height == 0 && zero.channels == 0 && zero.data == NULL);

  /* ---- model loading: NULLs, UTF-8, missing dir, struct sizes */
  unigrpo_model *m = (unigrpo_model *)1;
  expect(unigrpo_model_load(NULL, NULL, &m), UNIGRPO_ERR_NULL_ARGUMENT, "load(NULL dir)");
  CHECK(m == NULL); /* out set to NULL first */
  expect(unigrpo_model_load(MODEL, NULL, NULL), UNIGRPO_ERR_NULL_ARGUMENT, "load(NULL out)");
  expect(unigrpo_model_load(bad_utf8, NULL, &m), UNIGRPO_ERR_INVALID_ARGUMENT, "load(bad UTF-8)");
  unigrpo_error *e = unigrpo_model_load("/no/such/model", NULL, &m);
  CHECK(unigrpo_error_code(e) == UNIGRPO_ERR_IO && strstr(unigrpo_error_message(e), "/no/such/model") != NULL);
  unigrpo_error_free(e);
  unigrpo_model_options o;
  unigrpo_model_options_init(&o);
  CHECK(o.struct_size == sizeof o && o.device == NULL && o.intra_op_threads == 0);
  o.struct_size = 0;
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_ERR_INVALID_ARGUMENT, "options.struct_size 0");
  o.struct_size = offsetof(unigrpo_model_options, device) + 3;
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_ERR_INVALID_ARGUMENT, "options.struct_size cutting a field");
  o.struct_size = sizeof o + 8;
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_ERR_INVALID_ARGUMENT, "options.struct_size too large");
  o.struct_size = offsetof(unigrpo_model_options, onnxruntime_path); /* an older header: the path is ignored */
  o.intra_op_threads = 1;
  o.onnxruntime_path = "/bogus/libonnxruntime.so";
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_OK, "options from an older header");
  unigrpo_model_free(m);
  unigrpo_model_options_init(&o);
  o.onnxruntime_path = "/bogus/libonnxruntime.so"; /* read now: ONNX Runtime is already loaded from elsewhere */
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_ERR_INVALID_ARGUMENT, "a different ONNX Runtime library");
  unigrpo_model_options_init(&o);
  o.device = "tpu:0";
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_ERR_DEVICE_UNAVAILABLE, "unknown device");
  o.device = NULL;
  o.intra_op_threads = 1;
  expect(unigrpo_model_load(MODEL, &o, &m), UNIGRPO_OK, "load");
  CHECK(m != NULL);
  CHECK(strcmp(unigrpo_model_device(m), "cpu") == 0);
  CHECK(unigrpo_model_info(m)[0] == '{');

  /* ---- generation */
  unigrpo_generate_params gp;
  unigrpo_generate_params_init(m, &gp);
  CHECK(gp.struct_size == sizeof gp && gp.num_steps > 0 && gp.reasoning);
  unigrpo_generation *g = (unigrpo_generation *)1;
  expect(unigrpo_generate(NULL, "a red circle", &gp, NULL, &g), UNIGRPO_ERR_NULL_ARGUMENT, "generate(NULL model)");
  CHECK(g == NULL);
  expect(unigrpo_generate(m, NULL, &gp, NULL, &g), UNIGRPO_ERR_NULL_ARGUMENT, "generate(NULL prompt)");
  expect(unigrpo_generate(m, "a red circle", &gp, NULL, NULL), UNIGRPO_ERR_NULL_ARGUMENT, "generate(NULL out)");
  expect(unigrpo_generate(m, bad_utf8, &gp, NULL, &g), UNIGRPO_ERR_INVALID_ARGUMENT, "generate(bad UTF-8)");
  expect(unigrpo_generate(m, "", &gp, NULL, &g), UNIGRPO_ERR_INVALID_ARGUMENT, "generate(empty prompt)");
  expect(unigrpo_generate(m, "a circle the colour of the sky", NULL, NULL, &g), UNIGRPO_OK, "generate(NULL params)");
  unigrpo_generation_free(g);
  expect(unigrpo_generate(m, "a circle the colour of the sky", &gp, NULL, &g), UNIGRPO_OK, "generate");
  unigrpo_image img = unigrpo_generation_image(g);
  CHECK(img.width == 16 && img.height == 16 && img.channels == 3 && img.data != NULL);
  CHECK(strlen(unigrpo_generation_reasoning(g)) > 0);
  char png[600];
  snprintf(png, sizeof png, "%s/c.png", TMP);
  expect(unigrpo_image_save_png(&img, png), UNIGRPO_OK, "save png");
  CHECK(access(png, F_OK) == 0);
  expect(unigrpo_image_save_png(NULL, png), UNIGRPO_ERR_NULL_ARGUMENT, "save png(NULL)");
  unigrpo_generation_free(g);
  /* an older generate_params (up to num_steps): noise_level and the callbacks take defaults */
  unigrpo_generate_params old = gp;
  old.struct_size = offsetof(unigrpo_generate_params, noise_level);
  old.progress = stop_at_denoise_2; /* past struct_size: ignored */
  expect(unigrpo_generate(m, "a red circle", &old, NULL, &g), UNIGRPO_OK, "generate_params from an older header");
  unigrpo_generation_free(g);

  /* ---- batch */
  const char *prompts[] = {"a red circle", "two blue squares", "a few warm-coloured shapes"};
  unigrpo_generation *gs[3] = {0};
  expect(unigrpo_generate_batch(m, prompts, 3, &gp, NULL, gs), UNIGRPO_OK, "batch");
  CHECK(gs[0] && gs[1] && gs[2]);
  /* prompt i uses seed + i: gs[1] equals a single call with seed + 1 */
  unigrpo_generate_params gp1 = gp;
  gp1.seed = gp.seed + 1;
  expect(unigrpo_generate(m, prompts[1], &gp1, NULL, &g), UNIGRPO_OK, "single for batch comparison");
  CHECK(strcmp(unigrpo_generation_reasoning(g), unigrpo_generation_reasoning(gs[1])) == 0);
  int maxdiff = 0;
  for (int k = 0; k < 16 * 16 * 3; k++) {
    int d = abs((int)unigrpo_generation_image(g).data[k] - (int)unigrpo_generation_image(gs[1]).data[k]);
    if (d > maxdiff) maxdiff = d;
  }
  CHECK(maxdiff <= 2);
  unigrpo_generation_free(g);
  for (int i = 0; i < 3; i++) unigrpo_generation_free(gs[i]);

  /* ---- cancellation */
  unigrpo_generate_params cp = gp;
  cp.progress = stop_at_denoise_2;
  expect(unigrpo_generate(m, "a red circle", &cp, NULL, &g), UNIGRPO_ERR_CANCELLED, "progress returns false");
  CHECK(g == NULL);
  unigrpo_cancel_token *tok = NULL;
  expect(unigrpo_cancel_token_new(&tok), UNIGRPO_OK, "token");
  expect(unigrpo_cancel_token_new(NULL), UNIGRPO_ERR_NULL_ARGUMENT, "token(NULL)");
  unigrpo_cancel_token_cancel(tok);
  unigrpo_cancel_token_cancel(tok); /* idempotent */
  expect(unigrpo_generate(m, "a red circle", &gp, tok, &g), UNIGRPO_ERR_CANCELLED, "cancelled before the call");
  unigrpo_cancel_token_reset(tok);
  expect(unigrpo_generate(m, "a red circle", &gp, tok, &g), UNIGRPO_OK, "token reset and reused");
  unigrpo_generation_free(g);
  unigrpo_generate_params longp = gp;
  longp.num_steps = 1000;
  struct canceller c = {tok, 50000};
  pthread_t th;
  pthread_create(&th, NULL, cancel_later, &c);
  expect(unigrpo_generate(m, "a red circle", &longp, tok, &g), UNIGRPO_ERR_CANCELLED, "cancelled from another thread");
  pthread_join(th, NULL);
  CHECK(g == NULL);
  unigrpo_cancel_token_reset(tok);

  /* ---- re-entrant progress callback */
  unigrpo_generate_params rp = gp;
  rp.progress = progress_reenters;
  rp.progress_user_data = m;
  progress_reentry_code = UNIGRPO_OK;
  expect(unigrpo_generate(m, "a red circle", &rp, NULL, &g), UNIGRPO_OK, "generate with a re-entrant callback");
  CHECK(progress_reentry_code == UNIGRPO_ERR_INVALID_ARGUMENT);
  unigrpo_generation_free(g);

  /* ---- concurrent generation: 4 threads = sequential */
  struct gen_job jobs[4], seq[4];
  pthread_t ths[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (struct gen_job){.m = m, .seed = 100 + i};
    seq[i] = jobs[i];
    gen_thread(&seq[i]);
  }
  for (int i = 0; i < 4; i++) pthread_create(&ths[i], NULL, gen_thread, &jobs[i]);
  for (int i = 0; i < 4; i++) pthread_join(ths[i], NULL);
  for (int i = 0; i < 4; i++) {
    CHECK(jobs[i].code == UNIGRPO_OK);
    CHECK(strcmp(jobs[i].reasoning, seq[i].reasoning) == 0);
    CHECK(memcmp(jobs[i].pixels, seq[i].pixels, sizeof jobs[i].pixels) == 0);
  }

  /* ---- training */
  unigrpo_train_params tp;
  unigrpo_train_params_init(m, &tp);
  CHECK(tp.struct_size == sizeof tp && tp.group_size >= 2);
  tp.group_size = 4;
  tp.num_steps = 4;
  tp.seed = 3;
  unigrpo_trainer *t = NULL;
  expect(unigrpo_trainer_new(NULL, &tp, &t), UNIGRPO_ERR_NULL_ARGUMENT, "trainer_new(NULL model)");
  unigrpo_train_params badp = tp;
  badp.group_size = 1;
  expect(unigrpo_trainer_new(m, &badp, &t), UNIGRPO_ERR_INVALID_ARGUMENT, "group_size 1");
  expect(unigrpo_trainer_new(m, &tp, &t), UNIGRPO_OK, "trainer_new");
  const char *tprompts[] = {"a few warm-coloured shapes", "one or two red shapes"};
  unigrpo_step_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  expect(unigrpo_trainer_step(t, tprompts, 2, NULL, NULL, NULL, &st), UNIGRPO_ERR_NULL_ARGUMENT, "step(NULL reward)");
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, NULL, &st), UNIGRPO_OK, "step");
  CHECK(st.step == 1 && isfinite(st.loss) && st.grad_norm > 0 && st.seconds > 0);
  /* a stats struct from an older header (up to `loss`) is written only that far */
  unsigned char buf[sizeof(unigrpo_step_stats) + 16];
  memset(buf, 0xAB, sizeof buf);
  unigrpo_step_stats *small = (unigrpo_step_stats *)buf;
  small->struct_size = offsetof(unigrpo_step_stats, text_loss);
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, NULL, small), UNIGRPO_OK, "step with small stats");
  CHECK(small->step == 2);
  CHECK(buf[offsetof(unigrpo_step_stats, text_loss)] == 0xAB && buf[sizeof(unigrpo_step_stats) - 1] == 0xAB);
  small->struct_size = 5;
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, NULL, small), UNIGRPO_ERR_INVALID_ARGUMENT, "stats size cuts a field");

  /* failures change nothing: same fingerprint, and the step counter goes on from 2 */
  char r0[256], r1[256];
  uint8_t p0[768], p1[768];
  fingerprint(t, m, r0, p0);
  expect(unigrpo_trainer_step(t, tprompts, 2, reward_fails, NULL, NULL, &st), UNIGRPO_ERR_CALLBACK, "reward returns non-zero");
  expect(unigrpo_trainer_step(t, tprompts, 2, reward_all_nan, NULL, NULL, &st), UNIGRPO_ERR_CALLBACK, "reward all NaN");
  expect(unigrpo_trainer_step(t, tprompts, 2, reward_infinite, NULL, NULL, &st), UNIGRPO_ERR_CALLBACK, "reward infinite");
  unigrpo_cancel_token_cancel(tok);
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, tok, &st), UNIGRPO_ERR_CANCELLED, "step cancelled");
  unigrpo_cancel_token_reset(tok);
  fingerprint(t, m, r1, p1);
  CHECK(strcmp(r0, r1) == 0 && memcmp(p0, p1, sizeof p0) == 0);

  /* a reward that re-enters its trainer gets INVALID_ARGUMENT, and nothing deadlocks */
  reentry_code = UNIGRPO_OK;
  expect(unigrpo_trainer_step(t, tprompts, 2, reward_reenters, t, NULL, &st), UNIGRPO_OK, "step with re-entrant reward");
  CHECK(reentry_code == UNIGRPO_ERR_INVALID_ARGUMENT);
  CHECK(st.step == 3);

  /* save, load into a fresh trainer: identical; export, reload */
  char ckpt[600], exp[600];
  snprintf(ckpt, sizeof ckpt, "%s/t.ckpt", TMP);
  snprintf(exp, sizeof exp, "%s/exported", TMP);
  expect(unigrpo_trainer_save(t, ckpt), UNIGRPO_OK, "save");
  expect(unigrpo_trainer_save(t, NULL), UNIGRPO_ERR_NULL_ARGUMENT, "save(NULL path)");
  unigrpo_trainer *t2 = NULL;
  expect(unigrpo_trainer_new(m, &tp, &t2), UNIGRPO_OK, "second trainer");
  expect(unigrpo_trainer_load(t2, "/no/such/ckpt"), UNIGRPO_ERR_IO, "load missing checkpoint");
  expect(unigrpo_trainer_load(t2, ckpt), UNIGRPO_OK, "load");
  fingerprint(t, m, r0, p0);
  fingerprint(t2, m, r1, p1);
  CHECK(strcmp(r0, r1) == 0 && memcmp(p0, p1, sizeof p0) == 0);
  unigrpo_step_stats s1 = {.struct_size = sizeof s1}, s2 = {.struct_size = sizeof s2};
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, NULL, &s1), UNIGRPO_OK, "step after save");
  expect(unigrpo_trainer_step(t2, tprompts, 2, redness, NULL, NULL, &s2), UNIGRPO_OK, "step after load");
  CHECK(s1.step == 4 && s2.step == 4 && s1.loss == s2.loss && s1.reward_mean == s2.reward_mean);
  expect(unigrpo_trainer_export_model(t, exp), UNIGRPO_OK, "export");
  unigrpo_model *m2 = NULL;
  expect(unigrpo_model_load(exp, NULL, &m2), UNIGRPO_OK, "reload exported");
  expect(unigrpo_generate(m2, "a red circle", NULL, NULL, &g), UNIGRPO_OK, "generate with exported");
  unigrpo_generation_free(g);

  /* an export over an existing package swaps the new one in whole: the model loaded from the
     old one keeps working, the new one loads and draws what the trainer draws, nothing
     temporary is left beside it; an export under a regular file fails with IO, leaving nothing */
  expect(unigrpo_trainer_step(t, tprompts, 2, redness, NULL, NULL, NULL), UNIGRPO_OK, "step before re-export");
  expect(unigrpo_trainer_export_model(t, exp), UNIGRPO_OK, "re-export over the package");
  expect(unigrpo_generate(m2, "a red circle", NULL, NULL, &g), UNIGRPO_OK, "old model after re-export");
  unigrpo_generation_free(g);
  unigrpo_model *m3 = NULL;
  expect(unigrpo_model_load(exp, NULL, &m3), UNIGRPO_OK, "reload re-exported");
  {
    unigrpo_generate_params gp;
    unigrpo_generate_params_init(m3, &gp);
    gp.seed = 42;
    expect(unigrpo_generate(m3, "a few warm-coloured shapes", &gp, NULL, &g), UNIGRPO_OK, "generate re-exported");
    fingerprint(t, m, r0, p0);
    CHECK(strcmp(r0, unigrpo_generation_reasoning(g)) == 0);
    CHECK(memcmp(p0, unigrpo_generation_image(g).data, sizeof p0) == 0);
    unigrpo_generation_free(g);
  }
  unigrpo_model_free(m3);
  unigrpo_model_free(m2);
  char under_file[700];
  snprintf(under_file, sizeof under_file, "%s/sub", ckpt);
  expect(unigrpo_trainer_export_model(t, under_file), UNIGRPO_ERR_IO, "export under a regular file");
  {
    int stray = 0;
    DIR *d = opendir(TMP);
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));)
      if (strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-")) {
        fprintf(stderr, "left in %s: %s\n", TMP, e->d_name);
        stray++;
      }
    if (d) closedir(d);
    CHECK(stray == 0);
  }

  /* freeing the model before its trainers is safe */
  unigrpo_model_free(m);
  expect(unigrpo_trainer_step(t2, tprompts, 2, redness, NULL, NULL, NULL), UNIGRPO_OK, "step after model_free");
  unigrpo_trainer_free(t);
  unigrpo_trainer_free(t2);
  unigrpo_cancel_token_free(tok);

  CHECK(unigrpo_debug_live_objects() == 0);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
