// The C++ wrapper: RAII, exceptions with code and message, lambdas as callbacks, and an exception
// thrown in a callback caught at the C boundary and rethrown after the call, which changed nothing.
#include <cstdio>
#include <stdexcept>
#include <string>

#include "unigrpo.hpp"

static int passed, failed;
#define CHECK(c)                                                          \
  do {                                                                    \
    if (c) {                                                              \
      passed++;                                                           \
    } else {                                                              \
      failed++;                                                           \
      std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #c); \
    }                                                                     \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string dir = argv[1];
  {
    unigrpo::Model model(dir, "cpu", 1);
    CHECK(model.device() == "cpu");
    auto g = model.generate("a circle the colour of the sky");
    CHECK(!g.reasoning().empty() && g.image().width == 16);

    // errors carry code and message
    try {
      unigrpo::Model bad("/no/such/model");
      CHECK(false);
    } catch (const unigrpo::Error& e) {
      CHECK(e.code() == UNIGRPO_ERR_IO && std::string(e.what()).find("/no/such/model") != std::string::npos);
    }

    // a throwing progress lambda: the generation is cancelled and the exception comes back
    int calls = 0;
    try {
      model.generate("a red circle", model.default_params(), [&](unigrpo_stage, uint32_t, uint32_t) -> bool {
        if (++calls == 3) throw std::runtime_error("progress says stop");
        return true;
      });
      CHECK(false);
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "progress says stop");
    }

    auto params = unigrpo::Trainer::default_params(model);
    params.group_size = 4;
    params.num_steps = 4;
    unigrpo::Trainer trainer(model, params);
    auto constant = [](const std::vector<unigrpo::Sample>& s) {
      std::vector<float> r;
      for (size_t i = 0; i < s.size(); ++i) r.push_back(float(i % 3));
      return r;
    };
    // a throwing reward lambda: the step fails cleanly and the exception is rethrown
    try {
      trainer.step({"a red circle"}, [](const std::vector<unigrpo::Sample>&) -> std::vector<float> {
        throw std::logic_error("reward exploded");
      });
      CHECK(false);
    } catch (const std::logic_error& e) {
      CHECK(std::string(e.what()) == "reward exploded");
    }
    auto st = trainer.step({"a red circle", "two blue squares"}, constant);
    CHECK(st.step == 1);  // the failed step did not count
    CHECK(st.reward_mean > 0.0f);
    CHECK(trainer.step_count() == 1);

    // split phases: a rollout, rewards set later, an update
    auto r = trainer.rollout({"a red circle", "two blue squares"});
    CHECK(r.size() == 8 && r.sample(5).prompt == "two blue squares" && r.sample(5).image.width == 16);
    try {
      trainer.update(r);
      CHECK(false);
    } catch (const unigrpo::Error& e) {
      CHECK(e.code() == UNIGRPO_ERR_INVALID_ARGUMENT);  // no rewards yet
    }
    r.set_rewards(constant(r.samples()));
    auto su = trainer.update(r);
    CHECK(su.step == 2 && trainer.step_count() == 2);
    trainer.set_learning_rate(1e-4f, 0.0f);

    // a progress lambda on the trainer: sees the stages; a throw cancels the step and comes back
    bool saw_backward = false;
    trainer.set_progress([&](unigrpo_stage s, uint32_t, uint32_t) {
      saw_backward |= s == UNIGRPO_STAGE_BACKWARD;
      return true;
    });
    trainer.step({"a red circle"}, constant);
    CHECK(saw_backward && trainer.step_count() == 3);
    trainer.set_progress([](unigrpo_stage s, uint32_t, uint32_t) -> bool {
      if (s == UNIGRPO_STAGE_OPTIMIZER) throw std::runtime_error("stop at the optimizer");
      return true;
    });
    try {
      trainer.step({"a red circle"}, constant);
      CHECK(false);
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "stop at the optimizer");
    }
    CHECK(trainer.step_count() == 3);
  }
  CHECK(unigrpo_debug_live_objects() == 0);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
