/* Split-phase fine-tuning: the trainer rolls out, a "remote judge" scores the samples later (here
 * two judge threads reading the rollout at once, as a reward server or another process would),
 * then the trainer updates on the rewards. Same result as unigrpo_trainer_step with a callback
 * that returns those rewards.
 *   cc -Iinclude examples/finetune_remote.c -Ltarget/release -lunigrpo -lpthread -Wl,-rpath,$PWD/target/release
 *   ./a.out models/tiny-shapes 3 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "unigrpo.h"

struct judge_job {
  const unigrpo_rollout *rollout;
  size_t begin, end;
  float *rewards;
};

/* The judge: how blue is each image (fraction of blue-ish pixels). */
static void *judge(void *arg) {
  struct judge_job *j = arg;
  for (size_t i = j->begin; i < j->end; i++) {
    unigrpo_sample s = unigrpo_rollout_sample(j->rollout, i);
    size_t n = (size_t)s.image.width * s.image.height, hits = 0;
    for (size_t k = 0; k < n; k++) hits += s.image.data[3 * k + 2] > 150 && s.image.data[3 * k] < 100;
    j->rewards[i] = (float)hits / (float)n;
  }
  return NULL;
}

static int fail(unigrpo_error *e) {
  fprintf(stderr, "unigrpo error %u: %s\n", (unsigned)unigrpo_error_code(e), unigrpo_error_message(e));
  unigrpo_error_free(e);
  return 1;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "models/tiny-shapes";
  int steps = argc > 2 ? atoi(argv[2]) : 3;
  unigrpo_model *m = NULL;
  unigrpo_error *e = unigrpo_model_load(dir, NULL, &m);
  if (e) return fail(e);
  unigrpo_train_params p;
  unigrpo_train_params_init(m, &p);
  p.group_size = 4;
  p.num_steps = 6;
  unigrpo_trainer *t = NULL;
  if ((e = unigrpo_trainer_new(m, &p, &t))) return fail(e);
  const char *prompts[] = {"a circle the colour of the sky", "something round in a cold colour"};
  for (int step = 0; step < steps; step++) {
    unigrpo_rollout *r = NULL;
    if ((e = unigrpo_trainer_rollout(t, prompts, 2, NULL, &r))) return fail(e);
    size_t n = unigrpo_rollout_size(r);
    float *rewards = calloc(n, sizeof *rewards);
    struct judge_job jobs[2] = {{r, 0, n / 2, rewards}, {r, n / 2, n, rewards}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, judge, &jobs[k]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    if ((e = unigrpo_rollout_set_rewards(r, rewards, n))) return fail(e);
    unigrpo_step_stats st;
    st.struct_size = sizeof st;
    if ((e = unigrpo_trainer_update(t, r, NULL, &st))) return fail(e);
    printf("step %llu: %zu samples judged, reward %.3f, loss %+.5f, drift %.1e / %.1e\n", (unsigned long long)st.step, n,
           st.reward_mean, st.loss, st.text_consistency, st.image_consistency);
    unigrpo_rollout_free(r);
    free(rewards);
  }
  unigrpo_trainer_free(t);
  unigrpo_model_free(m);
  return 0;
}
