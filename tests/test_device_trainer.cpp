// The device-resident trainer (model/device_trainer.h) against PEFT and against the host trainer: on the
// host devices (cpu-ref, cpu) here, on the GPU (CudaTrainer.*, skipped without one) on the device machine.
//   - loss and every LoRA and VeRA gradient of the oracle's padded and packed batches (PyTorch autograd +
//     PEFT on tiny-f32) within the fine-tuning tests' tolerances, and the host trainer's (bit for bit on
//     cpu-ref);
//   - ten steps of clipping + AdamW with warm-up and decay give the oracle's losses and parameters;
//   - the training loop on a device equals the host loop (LoRA and VeRA with dropout, padded and packed,
//     stopped and resumed, the non-finite stop);
//   - what it does not take (a micro-batch beyond its limit, memory, bad ids) is an Error.
#include <gtest/gtest.h>

#include <cmath>

#include "lab/train/train_loop.h"
#include "model/backward.h"
#include "model/device_trainer.h"
#include "model/loader.h"
#include "model/optimizer.h"
#include "model/peft_io.h"
#include "test_numeric.h"
#include "test_util.h"
#include "train_test_data.h"

#ifdef GLMLAB_HAVE_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

namespace glmlab {
namespace {

using test::nerr;

using test::error_of;
using test::golden_floats;
using test::train_golden_path;

int64_t rows_of(const TrainBatch& b) { return int64_t(b.in.B) * b.in.T; }

// Loss and gradients of the oracle's `kind` batch on `device`, against PEFT and against the host
// trainer on the reference back end; `host_tol` bounds the gradients' distance to the host trainer.
void check_gradients(Backend backend, bool bf16, const std::string& method, const std::string& kind,
                     double host_tol) {
  SCOPED_TRACE(method + " " + kind);
  SafetensorsFile g(train_golden_path(method + "/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter host = load_adapter(train_golden_path(method), model.config());
  model.set_adapter(&host);
  TrainBatch batch = test::golden_train_batch(g, kind);
  const double scale = 1.0 / double(batch.label_count());
  auto ref = make_ref_ops();
  host.zero_grad();
  const LossResult want = loss_and_backward(*ref, model, host, batch, scale);

  Adapter dev_copy = load_adapter(train_golden_path(method), model.config());
  DeviceTrainer tr(make_device(backend, bf16), model, dev_copy, TrainerLimits{rows_of(batch) + 5});
  const LossResult got = tr.loss_and_backward(batch, scale);
  EXPECT_EQ(got.tokens, want.tokens);
  const double oracle_loss = golden_floats(g, kind + ".loss")[0];
  EXPECT_NEAR(got.mean(), oracle_loss, 1e-5 * oracle_loss);
  EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-6 * want.loss_sum);
  tr.download(dev_copy);
  double worst_oracle = 0, worst_host = 0;
  for (size_t i = 0; i < host.params().size(); ++i) {
    const auto& p = dev_copy.params()[i];
    if (!p.trainable) continue;
    const double eo = nerr(p.grad, golden_floats(g, kind + ".grad." + p.name));
    const double eh = nerr(p.grad, host.params()[i].grad);
    EXPECT_LT(eo, 1e-4) << p.name << " against PEFT";
    EXPECT_LT(eh, host_tol) << p.name << " against the host trainer";
    worst_oracle = std::max(worst_oracle, eo);
    worst_host = std::max(worst_host, eh);
    // The values did not move (no optimizer step yet) and the download is the upload.
    EXPECT_EQ(p.value, host.params()[i].value) << p.name;
  }
  std::printf("[ device trainer %s %s %s ] loss %.7f (oracle %.7f), grad nerr vs PEFT %.2e, vs host %.2e\n",
              std::string(tr.device().name()).c_str(), method.c_str(), kind.c_str(), got.mean(), oracle_loss, worst_oracle, worst_host);
}

TEST(DeviceTrainer, GradientsOfPaddedAndPackedBatchesOnTheReferenceDevice) {
  for (const char* method : {"lora", "vera"})
    for (const char* kind : {"pad", "pack"}) check_gradients(Backend::CpuRef, false, method, kind, 1e-6);
}

TEST(DeviceTrainer, GradientsOfPaddedAndPackedBatchesOnTheFastCpu) {
  for (const char* method : {"lora", "vera"})
    for (const char* kind : {"pad", "pack"}) check_gradients(Backend::Cpu, false, method, kind, 1e-4);
}

// test_train.cpp's oracle run (train_golden.py: torch.optim.AdamW + LambdaLR, clipping at 1.0): ten
// steps on the padded batch, each step's loss and the final parameters.
void check_ten_steps(Backend backend, const std::string& method) {
  SCOPED_TRACE(method);
  SafetensorsFile g(train_golden_path(method + "/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter a = load_adapter(train_golden_path(method), model.config());
  TrainBatch batch = test::golden_train_batch(g, "pad");
  DeviceTrainer tr(make_device(backend, false), model, a, TrainerLimits{rows_of(batch)});
  AdamWConfig oc;
  oc.lr = 1e-2;
  oc.weight_decay = 0.01;
  const auto want = golden_floats(g, "adamw.losses");
  ASSERT_EQ(want.size(), 10u);
  for (int s = 0; s < 10; ++s) {
    tr.zero_grad();
    const LossResult r = tr.loss_and_backward(batch, 1.0 / double(batch.label_count()));
    tr.clip_grad_norm(1.0);
    tr.adamw_step(oc, oc.lr * linear_schedule(s, 2, 10));
    EXPECT_NEAR(r.mean(), want[size_t(s)], 1e-4 * want[size_t(s)]) << "step " << s;
  }
  EXPECT_EQ(tr.steps(), 10);
  tr.download(a);
  for (auto& p : a.params()) {
    if (!p.trainable) continue;
    EXPECT_LT(nerr(p.value, golden_floats(g, "adamw.final." + p.name)), 1e-4) << p.name;
  }
}

TEST(DeviceTrainer, TenAdamWStepsGiveTheOraclesLosses) {
  for (const char* method : {"lora", "vera"}) check_ten_steps(Backend::CpuRef, method);
}

TEST(DeviceTrainer, StateRoundTripsThroughTheHost) {
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter a = load_adapter(train_golden_path("lora"), model.config());
  TrainBatch batch = test::golden_train_batch(g, "pad");
  DeviceTrainer tr(make_device(Backend::CpuRef), model, a, TrainerLimits{rows_of(batch)});
  tr.loss_and_backward(batch, 1e-2);
  tr.adamw_step(AdamWConfig{}, 1e-2);
  std::vector<std::vector<float>> m, v;
  tr.download(a, &m, &v);
  ASSERT_EQ(m.size(), size_t(std::count_if(a.params().begin(), a.params().end(), [](auto& p) { return p.trainable; })));
  // A second trainer resumed from the host state takes the same next step as the first.
  DeviceTrainer tr2(make_device(Backend::CpuRef), model, a, TrainerLimits{rows_of(batch)});
  tr2.upload(a, &m, &v, tr.steps());
  for (DeviceTrainer* t : {&tr, &tr2}) {
    t->zero_grad();
    t->loss_and_backward(batch, 1e-2);
    t->adamw_step(AdamWConfig{}, 1e-2);
  }
  Adapter b = a;
  tr.download(a);
  tr2.download(b);
  for (size_t i = 0; i < a.params().size(); ++i) EXPECT_EQ(a.params()[i].value, b.params()[i].value) << i;
  EXPECT_EQ(tr2.steps(), 2);
}

TEST(DeviceTrainer, RefusesWhatItCannotTrainWithAClearError) {
  Model model = load_model("random:tiny", "fp32", 3);
  Adapter lora = Adapter::create(model.config(), AdapterConfig{});
  const std::string mem =
      error_of([&] { DeviceTrainer(make_device(Backend::CpuRef), model, lora, TrainerLimits{int64_t(1) << 40}); });
  EXPECT_CONTAINS(mem, "GiB of device memory");
  EXPECT_CONTAINS(mem, "activation tape");
  EXPECT_CONTAINS(mem, "are free");
  DeviceTrainer tr(make_device(Backend::CpuRef), model, lora, TrainerLimits{8});
  TrainBatch b;
  b.in.B = 2;
  b.in.T = 5;
  b.in.ids.assign(10, 7);
  b.in.pos = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4};
  b.in.valid.assign(10, 1);
  b.labels.assign(10, 7);
  EXPECT_CONTAINS(error_of([&] { tr.loss_and_backward(b, 1.0); }), "at most 8");
  b.in.T = 4;
  b.in.ids.resize(8);
  b.in.pos.resize(8);
  b.in.valid.resize(8);
  b.labels.assign(8, 7);
  b.in.ids[5] = model.config().vocab_size;
  EXPECT_CONTAINS(error_of([&] { tr.loss_and_backward(b, 1.0); }), "outside the vocabulary");
}

// ---- the training loop (lab::train) on a device

struct LoopRun {
  lab::TrainReport rep;
  std::vector<std::vector<float>> params;
};

// `backend` on the device trainer when on_device, else the host trainer with that back end's ops.
LoopRun run_loop(const lab::TrainOptions& o, const std::vector<lab::TrainSample>& samples, Backend backend,
                 bool on_device, const std::string& dtype = "") {
  Model model = load_model(train_golden_path("tiny-f32"), dtype);
  Adapter a = Adapter::create(model.config(), o.adapter);
  model.set_adapter(&a);
  auto ops = make_ops(backend, false);
  LoopRun r;
  r.rep = lab::train(*ops, model, a, samples, o, {}, on_device ? make_device(backend, false) : nullptr);
  for (auto& p : a.params()) r.params.push_back(p.value);
  return r;
}

// The loop tests' options (train_test_data.h) with adapters on all four linears.
lab::TrainOptions loop_options(AdapterMethod m = AdapterMethod::Lora) {
  lab::TrainOptions o = test::train_options(m);
  o.adapter.targets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  return o;
}

// The loop on the reference device equals the host loop step for step (losses and final adapter; LoRA
// and VeRA with dropout 0.1, padded and packed), saves the same PEFT adapter, and a run stopped and
// resumed on the device equals the whole.
TEST(DeviceTrainer, TrainingLoopOnADeviceEqualsTheHostLoopAndResumes) {
  auto samples = test::synthetic_samples(10, 1);
  for (AdapterMethod m : {AdapterMethod::Lora, AdapterMethod::Vera})
  for (bool pack : {false, true}) {
    SCOPED_TRACE(testing::Message() << method_name(m) << (pack ? " packed" : " padded"));
    auto o = loop_options(m);  // dropout 0.1: the device's masks are the host's
    o.pack = pack;
    const LoopRun host = run_loop(o, samples, Backend::CpuRef, false);
    o.out = test::temp_dir("dev-loop-whole").string();
    const LoopRun dev = run_loop(o, samples, Backend::CpuRef, true);
    ASSERT_EQ(dev.rep.losses.size(), 6u);
    for (size_t s = 0; s < 6; ++s) EXPECT_EQ(dev.rep.losses[s], host.rep.losses[s]) << s;
    for (size_t i = 0; i < host.params.size(); ++i) EXPECT_EQ(dev.params[i], host.params[i]) << i;
    Model model = load_model(train_golden_path("tiny-f32"));
    Adapter saved = load_adapter(o.out, model.config());
    for (size_t i = 0; i < saved.params().size(); ++i) EXPECT_EQ(saved.params()[i].value, dev.params[i]);
    o.out = test::temp_dir("dev-loop-parts").string();
    o.stop_after = 2;
    EXPECT_EQ(run_loop(o, samples, Backend::CpuRef, true).rep.steps_done, 2);
    o.stop_after = -1;
    o.resume = true;
    const LoopRun rest = run_loop(o, samples, Backend::CpuRef, true);
    EXPECT_EQ(rest.rep.first_step, 2);
    EXPECT_EQ(rest.rep.losses, dev.rep.losses);
    EXPECT_EQ(rest.params, dev.params);
  }
}

// QAT: training on an int4 (and int8) base on the device equals the host, the forward through the
// quantized weights and the input gradients through their dequantized values.
TEST(DeviceTrainer, QatOnQuantizedBasesEqualsTheHostLoop) {
  auto samples = test::synthetic_samples(8, 7);
  auto o = loop_options();
  o.steps = 3;
  for (const char* dt : {"int4", "int8"}) {
    SCOPED_TRACE(dt);
    const LoopRun host = run_loop(o, samples, Backend::CpuRef, false, dt);
    const LoopRun dev = run_loop(o, samples, Backend::CpuRef, true, dt);
    EXPECT_EQ(dev.rep.losses, host.rep.losses);
    EXPECT_EQ(dev.params, host.params);
  }
}

// An update that overflows stops the run on the device as on the host: the saved adapter is the last
// good one, finite.
TEST(DeviceTrainer, NonFiniteUpdateStopsAndKeepsTheLastGoodAdapter) {
  auto samples = test::synthetic_samples(8, 4);
  auto o = loop_options();
  o.warmup = 3;
  o.max_grad_norm = 0;
  o.steps = 8;
  o.grad_accum = 1;
  o.adam.lr = 1e36;
  o.out = test::temp_dir("dev-nan").string();
  const LoopRun bad = run_loop(o, samples, Backend::CpuRef, true);
  ASSERT_TRUE(bad.rep.nan_stop) << ::testing::PrintToString(bad.rep.losses);
  EXPECT_CONTAINS(bad.rep.message, "stopping");
  for (auto& p : bad.params)
    for (float v : p) ASSERT_TRUE(std::isfinite(v));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter saved = load_adapter(o.out, model.config());
  for (size_t i = 0; i < saved.params().size(); ++i) EXPECT_EQ(saved.params()[i].value, bad.params[i]);
}

#ifdef GLMLAB_HAVE_CUDA
#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    std::string why_;                                                               \
    if (!cuda::device_available(&why_)) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)

TEST(CudaTrainer, GradientsOfPaddedAndPackedBatchesMatchPeftAndTheHost) {
  SKIP_WITHOUT_GPU();
  for (const char* method : {"lora", "vera"})
    for (const char* kind : {"pad", "pack"}) check_gradients(Backend::Cuda, false, method, kind, 1e-4);
}

TEST(CudaTrainer, TenAdamWStepsGiveTheOraclesLosses) {
  SKIP_WITHOUT_GPU();
  for (const char* method : {"lora", "vera"}) check_ten_steps(Backend::Cuda, method);
}

TEST(CudaTrainer, TrainingLoopEqualsTheHostLoop) {
  SKIP_WITHOUT_GPU();
  auto samples = test::synthetic_samples(10, 1);
  auto o = loop_options();
  const LoopRun host = run_loop(o, samples, Backend::CpuRef, false);
  const LoopRun dev = run_loop(o, samples, Backend::Cuda, true);
  ASSERT_EQ(dev.rep.losses.size(), host.rep.losses.size());
  for (size_t s = 0; s < host.rep.losses.size(); ++s)
    EXPECT_NEAR(dev.rep.losses[s], host.rep.losses[s], 1e-4 * host.rep.losses[s]) << s;
  for (size_t i = 0; i < host.params.size(); ++i) EXPECT_LT(nerr(dev.params[i], host.params[i]), 1e-3) << i;
}
#endif

}  // namespace
}  // namespace glmlab
