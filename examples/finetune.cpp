// Fine-tune with a lambda reward through the C++ wrapper.
//   c++ -std=c++17 -Iinclude -Ibindings/cpp examples/finetune.cpp -Ltarget/release -lunigrpo -Wl,-rpath,$PWD/target/release
#include <cstdio>
#include <string>

#include "unigrpo.hpp"

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "models/tiny-shapes";
  int steps = argc > 2 ? std::stoi(argv[2]) : 5;
  try {
    unigrpo::Model model(dir);
    auto params = unigrpo::Trainer::default_params(model);
    params.group_size = 4;
    params.num_steps = 6;
    unigrpo::Trainer trainer(model, params);
    // reward: fraction of non-background pixels that are blue-ish
    auto blue = [](const std::vector<unigrpo::Sample>& samples) {
      std::vector<float> r;
      for (const auto& s : samples) {
        size_t n = size_t(s.image.width) * s.image.height, hits = 0;
        for (size_t k = 0; k < n; ++k) {
          const uint8_t* p = s.image.data + 3 * k;
          hits += p[2] > 150 && p[0] < 100;
        }
        r.push_back(float(hits) / float(n));
      }
      return r;
    };
    for (int i = 0; i < steps; ++i) {
      auto st = trainer.step({"a circle the colour of the sky", "something round in a cold colour"}, blue);
      std::printf("step %llu reward %.3f loss %+.5f\n", (unsigned long long)st.step, st.reward_mean, st.loss);
    }
    auto g = trainer.generate("a circle the colour of the sky", model.default_params());
    std::printf("reasoning: %s\n", g.reasoning().c_str());
  } catch (const unigrpo::Error& e) {
    std::fprintf(stderr, "unigrpo error %u: %s\n", unsigned(e.code()), e.what());
    return 1;
  }
  return 0;
}
