// unigrpo.hpp: header-only C++17 RAII wrapper over the C API (include/unigrpo.h).
//
// - Owning handles (Model, Trainer, Rollout, Generation, CancelToken) free themselves; move-only
//   (Model is shared).
// - Errors become unigrpo::Error exceptions carrying the code and the message.
// - Reward and progress callbacks are lambdas. An exception thrown in one is caught at the C
//   boundary (it never crosses C frames), the C call fails cleanly, and the exception is rethrown
//   to the caller after it.
#ifndef UNIGRPO_HPP
#define UNIGRPO_HPP

#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "unigrpo.h"

namespace unigrpo {

class Error : public std::runtime_error {
 public:
  Error(unigrpo_code code, const std::string& message) : std::runtime_error(message), code_(code) {}
  unigrpo_code code() const noexcept { return code_; }

 private:
  unigrpo_code code_;
};

namespace detail {
// Takes ownership of `e`; throws if it is an error. A pending callback exception wins.
inline void check(unigrpo_error* e, std::exception_ptr* pending = nullptr) {
  if (pending && *pending) {
    unigrpo_error_free(e);
    std::exception_ptr p = *pending;
    *pending = nullptr;
    std::rethrow_exception(p);
  }
  if (e == nullptr) return;
  Error err(unigrpo_error_code(e), unigrpo_error_message(e));
  unigrpo_error_free(e);
  throw err;
}

struct ProgressCtx {
  std::function<bool(unigrpo_stage, uint32_t, uint32_t)> fn;
  std::exception_ptr error;
};

inline bool progress_trampoline(void* user, unigrpo_stage stage, uint32_t step, uint32_t total) {
  auto* ctx = static_cast<ProgressCtx*>(user);
  try {
    return ctx->fn(stage, step, total);
  } catch (...) {
    ctx->error = std::current_exception();
    return false;  // cancels the call; the exception is rethrown after it
  }
}
}  // namespace detail

using Progress = std::function<bool(unigrpo_stage stage, uint32_t step, uint32_t total)>;

class CancelToken {
 public:
  CancelToken() {
    unigrpo_cancel_token* t = nullptr;
    detail::check(unigrpo_cancel_token_new(&t));
    p_.reset(t);
  }
  void cancel() const noexcept { unigrpo_cancel_token_cancel(p_.get()); }
  void reset() const noexcept { unigrpo_cancel_token_reset(p_.get()); }
  const unigrpo_cancel_token* get() const noexcept { return p_.get(); }

 private:
  struct Del {
    void operator()(unigrpo_cancel_token* t) const noexcept { unigrpo_cancel_token_free(t); }
  };
  std::unique_ptr<unigrpo_cancel_token, Del> p_;
};

struct Image {
  uint32_t width = 0, height = 0, channels = 0;
  const uint8_t* data = nullptr;  // owned by the Generation it came from
  void save_png(const std::string& path) const {
    unigrpo_image img{width, height, channels, data};
    detail::check(unigrpo_image_save_png(&img, path.c_str()));
  }
};

class Generation {
 public:
  explicit Generation(unigrpo_generation* g) : p_(g) {}
  std::string reasoning() const { return unigrpo_generation_reasoning(p_.get()); }
  Image image() const {
    unigrpo_image i = unigrpo_generation_image(p_.get());
    return Image{i.width, i.height, i.channels, i.data};
  }

 private:
  struct Del {
    void operator()(unigrpo_generation* g) const noexcept { unigrpo_generation_free(g); }
  };
  std::unique_ptr<unigrpo_generation, Del> p_;
};

struct GenerateOptions {
  unigrpo_generate_params params;
  Progress progress;  // optional
};

class Model {
 public:
  explicit Model(const std::string& dir, const std::string& device = "cpu", uint32_t threads = 0) {
    unigrpo_model_options o;
    unigrpo_model_options_init(&o);
    o.device = device.c_str();
    o.intra_op_threads = threads;
    unigrpo_model* m = nullptr;
    detail::check(unigrpo_model_load(dir.c_str(), &o, &m));
    p_.reset(m, [](unigrpo_model* x) { unigrpo_model_free(x); });
  }
  std::string device() const { return unigrpo_model_device(p_.get()); }
  std::string info() const { return unigrpo_model_info(p_.get()); }
  unigrpo_generate_params default_params() const {
    unigrpo_generate_params p;
    unigrpo_generate_params_init(p_.get(), &p);
    return p;
  }
  Generation generate(const std::string& prompt, unigrpo_generate_params params, const Progress& progress = {},
                      const CancelToken* cancel = nullptr) const {
    detail::ProgressCtx ctx{progress, nullptr};
    if (progress) {
      params.progress = &detail::progress_trampoline;
      params.progress_user_data = &ctx;
    }
    unigrpo_generation* g = nullptr;
    unigrpo_error* e = unigrpo_generate(p_.get(), prompt.c_str(), &params, cancel ? cancel->get() : nullptr, &g);
    detail::check(e, &ctx.error);
    return Generation(g);
  }
  Generation generate(const std::string& prompt) const { return generate(prompt, default_params()); }
  unigrpo_model* get() const noexcept { return p_.get(); }

 private:
  std::shared_ptr<unigrpo_model> p_;
};

struct Sample {
  uint32_t prompt_index, sample_index;
  std::string prompt, reasoning;
  Image image;
};

using Reward = std::function<std::vector<float>(const std::vector<Sample>&)>;

inline Sample sample_of(const unigrpo_sample& s) {
  return Sample{s.prompt_index, s.sample_index, s.prompt ? s.prompt : "", s.reasoning ? s.reasoning : "",
                Image{s.image.width, s.image.height, s.image.channels, s.image.data}};
}

// The samples of one trainer step (Trainer::rollout); rewards may come later, from anywhere.
// Owns what it shows and outlives its trainer and model.
class Rollout {
 public:
  explicit Rollout(unigrpo_rollout* r) : p_(r) {}
  size_t size() const noexcept { return unigrpo_rollout_size(p_.get()); }
  // Sample i; its image data stays valid while this rollout lives.
  Sample sample(size_t i) const {
    if (i >= size()) throw std::out_of_range("rollout sample " + std::to_string(i) + " of " + std::to_string(size()));
    return sample_of(unigrpo_rollout_sample(p_.get(), i));
  }
  std::vector<Sample> samples() const {
    std::vector<Sample> v;
    for (size_t i = 0; i < size(); ++i) v.push_back(sample(i));
    return v;
  }
  // NaN = no reward; may be called again before the update.
  void set_rewards(const std::vector<float>& r) {
    detail::check(unigrpo_rollout_set_rewards(p_.get(), r.data(), r.size()));
  }
  unigrpo_rollout* get() const noexcept { return p_.get(); }

 private:
  struct Del {
    void operator()(unigrpo_rollout* r) const noexcept { unigrpo_rollout_free(r); }
  };
  std::unique_ptr<unigrpo_rollout, Del> p_;
};

class Trainer {
 public:
  // `progress` (optional) sees every stage of steps, rollouts and updates; returning false (or
  // throwing, rethrown after the call) cancels the call, which then changes nothing.
  Trainer(const Model& model, unigrpo_train_params params, Progress progress = {})
      : progress_(new detail::ProgressCtx{std::move(progress), nullptr}) {
    params.progress = &trainer_progress;
    params.progress_user_data = progress_.get();
    unigrpo_trainer* t = nullptr;
    detail::check(unigrpo_trainer_new(model.get(), &params, &t));
    p_.reset(t);
  }
  explicit Trainer(const Model& model) : Trainer(model, default_params(model)) {}
  void set_progress(Progress progress) { progress_->fn = std::move(progress); }
  uint64_t step_count() const noexcept { return unigrpo_trainer_step_count(p_.get()); }
  // From the next optimiser step; 0 keeps a rate.
  void set_learning_rate(float text_lr, float image_lr) {
    detail::check(unigrpo_trainer_set_learning_rate(p_.get(), text_lr, image_lr));
  }
  // Phase 1 of a step: the samples, drawn exactly as step() would; changes nothing.
  Rollout rollout(const std::vector<std::string>& prompts, const CancelToken* cancel = nullptr) {
    std::vector<const char*> ps;
    for (const auto& s : prompts) ps.push_back(s.c_str());
    unigrpo_rollout* r = nullptr;
    unigrpo_error* e = unigrpo_trainer_rollout(p_.get(), ps.data(), ps.size(), cancel ? cancel->get() : nullptr, &r);
    detail::check(e, &progress_->error);
    return Rollout(r);
  }
  // Phase 2: the optimiser steps on the rollout's rewards (bit-identical to step() with them).
  unigrpo_step_stats update(Rollout& r, const CancelToken* cancel = nullptr) {
    unigrpo_step_stats stats{};
    stats.struct_size = sizeof stats;
    unigrpo_error* e = unigrpo_trainer_update(p_.get(), r.get(), cancel ? cancel->get() : nullptr, &stats);
    detail::check(e, &progress_->error);
    return stats;
  }
  static unigrpo_train_params default_params(const Model& model) {
    unigrpo_train_params p;
    unigrpo_train_params_init(model.get(), &p);
    return p;
  }

  unigrpo_step_stats step(const std::vector<std::string>& prompts, const Reward& reward, const CancelToken* cancel = nullptr) {
    std::vector<const char*> ps;
    for (const auto& s : prompts) ps.push_back(s.c_str());
    RewardCtx ctx{reward, nullptr};
    unigrpo_step_stats stats{};
    stats.struct_size = sizeof stats;
    unigrpo_error* e = unigrpo_trainer_step(p_.get(), ps.data(), ps.size(), &reward_trampoline, &ctx,
                                            cancel ? cancel->get() : nullptr, &stats);
    detail::check(e, ctx.error ? &ctx.error : &progress_->error);
    return stats;
  }
  Generation generate(const std::string& prompt, unigrpo_generate_params params) const {
    unigrpo_generation* g = nullptr;
    detail::check(unigrpo_trainer_generate(p_.get(), prompt.c_str(), &params, nullptr, &g));
    return Generation(g);
  }
  void save(const std::string& path) const { detail::check(unigrpo_trainer_save(p_.get(), path.c_str())); }
  void load(const std::string& path) { detail::check(unigrpo_trainer_load(p_.get(), path.c_str())); }
  void export_model(const std::string& dir) const { detail::check(unigrpo_trainer_export_model(p_.get(), dir.c_str())); }

 private:
  struct RewardCtx {
    const Reward& fn;
    std::exception_ptr error;
  };
  static bool trainer_progress(void* user, unigrpo_stage stage, uint32_t step, uint32_t total) {
    auto* ctx = static_cast<detail::ProgressCtx*>(user);
    if (!ctx->fn) return true;
    return detail::progress_trampoline(user, stage, step, total);
  }
  static int32_t reward_trampoline(void* user, const unigrpo_sample* samples, size_t n, float* rewards) {
    auto* ctx = static_cast<RewardCtx*>(user);
    try {
      std::vector<Sample> v;
      v.reserve(n);
      for (size_t i = 0; i < n; ++i) v.push_back(sample_of(samples[i]));
      std::vector<float> r = ctx->fn(v);
      if (r.size() != n) throw std::length_error("the reward returned " + std::to_string(r.size()) + " values for " + std::to_string(n) + " samples");
      for (size_t i = 0; i < n; ++i) rewards[i] = r[i];
      return 0;
    } catch (...) {
      ctx->error = std::current_exception();
      return 1;  // aborts the step cleanly; rethrown after the C call
    }
  }
  struct Del {
    void operator()(unigrpo_trainer* t) const noexcept { unigrpo_trainer_free(t); }
  };
  // declared before p_: the trainer (which calls into it) is freed first
  std::unique_ptr<detail::ProgressCtx> progress_;
  std::unique_ptr<unigrpo_trainer, Del> p_;
};

}  // namespace unigrpo

#endif  // UNIGRPO_HPP
