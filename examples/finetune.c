/* Fine-tune with UniGRPO on a reward written in C: how red the image is.
 *   ./finetune models/tiny-shapes 10 out-model */
#include <stdio.h>
#include <stdlib.h>
#include "unigrpo.h"

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

static int fail(unigrpo_error *e) {
  fprintf(stderr, "error %u: %s\n", (unsigned)unigrpo_error_code(e), unigrpo_error_message(e));
  unigrpo_error_free(e);
  return 1;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "models/tiny-shapes";
  int steps = argc > 2 ? atoi(argv[2]) : 10;
  const char *out = argc > 3 ? argv[3] : NULL;
  unigrpo_model *model = NULL;
  unigrpo_error *e = unigrpo_model_load(dir, NULL, &model);
  if (e) return fail(e);
  unigrpo_train_params tp;
  unigrpo_train_params_init(model, &tp);
  tp.group_size = 8;
  tp.train_text = false;
  tp.learning_rate = 3e-4f;
  tp.image_clip_range = 1e-2f;
  unigrpo_trainer *t = NULL;
  e = unigrpo_trainer_new(model, &tp, &t);
  unigrpo_model_free(model); /* the trainer keeps the model alive */
  if (e) return fail(e);
  const char *prompts[] = {"a few warm-coloured shapes", "one or two red shapes"};
  for (int s = 0; s < steps; s++) {
    unigrpo_step_stats st = {.struct_size = sizeof st};
    if ((e = unigrpo_trainer_step(t, prompts, 2, redness, NULL, NULL, &st))) {
      unigrpo_trainer_free(t);
      return fail(e);
    }
    printf("step %3llu  reward %.3f  loss %+.5f  %.2f s\n", (unsigned long long)st.step, st.reward_mean, st.loss, st.seconds);
  }
  if (out && (e = unigrpo_trainer_export_model(t, out))) {
    unigrpo_trainer_free(t);
    return fail(e);
  }
  unigrpo_trainer_free(t);
  return 0;
}
